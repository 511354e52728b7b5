/* admin_customers.c - /admin/customers: the supplier manages accounts. */
#include "../common/rsa_keys.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "admin.h"
#include "auth.h"
#include "fields.h"
#include "routes.h"
#include "rows.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

long long admin_customer_id(db_t *db, err_t *e, const char *username)
{
    return db_scalar_int(db, e, 0, "SELECT id FROM customers WHERE username = $1",
                         DB_ARGS(DB_TEXT(username)));
}

static json_t *customer_json(db_t *db, err_t *e, long long id)
{
    db_res_t *res = db_query(db, e,
                             "SELECT id, username, uuid, company, vat, email, rsa_pubkey "
                             "FROM customers WHERE id = $1",
                             DB_ARGS(DB_INT(id)));
    if (!res)
        return NULL;
    if (res->nrows == 0) {
        db_res_free(res);
        err_set(e, ERR_NOTFOUND, "no such customer");
        return NULL;
    }
    json_t *containers = rows_uid_list(db, e,
                                       "SELECT id FROM containers WHERE customer_id = $1 "
                                       "ORDER BY id",
                                       id);
    json_t *servers = containers ? rows_str_list(db, e,
                                                 "SELECT name FROM servers WHERE owner_id = $1 "
                                                 "ORDER BY id",
                                                 id)
                                 : NULL;
    json_t *o = NULL;
    if (servers)
        o = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:o}", "id",
                      (json_int_t)db_get_int(res, 0, 0), "username", db_get(res, 0, 1), "uuid",
                      db_get(res, 0, 2), "company", db_get(res, 0, 3), "vat", db_get(res, 0, 4),
                      "email", db_get(res, 0, 5), "rsa_pubkey", db_get(res, 0, 6),
                      "containers", containers, "servers", servers);
    else
        json_decref(containers);
    db_res_free(res);
    if (!o && e->kind == ERR_NONE)
        err_set(e, ERR_INTERNAL, "out of memory");
    return o;
}

static json_t *customer_row(db_t *db, err_t *e, db_res_t *res, int row, void *ctx)
{
    (void)ctx;
    return customer_json(db, e, db_get_int(res, row, 0));
}

static void h_admin_customers_list(req_t *r)
{
    err_t e = {0};
    reply_list(r,
               rows_query_json(r->db, &e, customer_row, NULL,
                               "SELECT id FROM customers ORDER BY id", DB_NOARGS),
               &e);
}

static const field_spec customer_spec[] = {
    {"username", FT_STRING}, {"password", FT_STRING}, {"company", FT_STRING},
    {"vat", FT_STRING},      {"email", FT_STRING},    {NULL, 0},
};

static bool username_ok(const char *u)
{
    size_t n = strlen(u);
    if (n == 0 || n > 64)
        return false;
    for (const char *p = u; *p; p++)
        if (!(isascii((unsigned char)*p) &&
              (isalnum((unsigned char)*p) || strchr("._@-", *p))))
            return false;
    return true;
}

static void h_admin_customer_create(req_t *r)
{
    static const char *const required[] = {"username", "password", NULL};
    if (fields_check(r, customer_spec) < 0 || fields_require(r, required) < 0)
        return;
    const char *username = field_str(r, "username"), *password = field_str(r, "password");
    if (!username_ok(username))
        return reply_bad_request(r, "'username' must be 1 to 64 letters, digits or ._@-");
    if (!*password)
        return reply_bad_request(r, "'password' must not be empty");
    err_t e = {0};
    char hash[128], uuid[37], *priv = NULL, *pub = NULL;
    if (password_hash(password, hash, &e) < 0 || rsa_keypair_pem(&priv, &pub, &e) < 0)
        return reply_internal(r, &e);
    uuid_v4(uuid);
    const char *company = field_str(r, "company"), *vat = field_str(r, "vat"),
               *email = field_str(r, "email");
    db_res_t *res = db_query(
        r->db, &e,
        "INSERT INTO customers (username, password_hash, uuid, company, vat, email, rsa_key, "
        "rsa_pubkey, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        DB_ARGS(DB_TEXT(username), DB_TEXT(hash), DB_TEXT(uuid),
                DB_TEXT(company ? company : ""), DB_TEXT(vat ? vat : ""),
                DB_TEXT(email ? email : ""), DB_TEXT(priv), DB_TEXT(pub),
                DB_INT(time(NULL))));
    free(priv);
    free(pub);
    if (!res) {
        if (e.kind == ERR_CONSTRAINT)
            return reply_conflict(r, "customer '%s' already exists", username);
        return reply_internal(r, &e);
    }
    json_t *o = customer_json(r->db, &e, db_get_int(res, 0, 0));
    db_res_free(res);
    if (!o)
        return reply_err(r, &e);
    reply(r, 201, o);
}

static long long path_customer(req_t *r)
{
    err_t e = {0};
    long long id = admin_customer_id(r->db, &e, r->segs[1]);
    if (id < 0)
        reply_internal(r, &e);
    else if (id == 0)
        reply_error(r, 404, "no such customer");
    return id > 0 ? id : -1;
}

static void h_admin_customer_get(req_t *r)
{
    long long id = path_customer(r);
    if (id < 0)
        return;
    err_t e = {0};
    json_t *o = customer_json(r->db, &e, id);
    if (!o)
        return reply_err(r, &e);
    reply(r, 200, o);
}

static void h_admin_customer_modify(req_t *r)
{
    long long id = path_customer(r);
    if (id < 0 || fields_check(r, customer_spec) < 0)
        return;
    err_t e = {0};
    const char *password = field_str(r, "password");
    char hash[128];
    if (password && !*password)
        return reply_bad_request(r, "'password' must not be empty");
    if (password && password_hash(password, hash, &e) < 0)
        return reply_internal(r, &e);
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    static const char *const cols[] = {"company", "vat", "email"};
    for (int i = 0; i < 3; i++) {
        const char *v = field_str(r, cols[i]);
        char sql[96];
        snprintf(sql, sizeof sql, "UPDATE customers SET %s = $1 WHERE id = $2", cols[i]);
        if (v && db_exec(r->db, &e, sql, DB_ARGS(DB_TEXT(v), DB_INT(id))) < 0)
            goto fail;
    }
    if (password && db_exec(r->db, &e, "UPDATE customers SET password_hash = $1 WHERE id = $2",
                            DB_ARGS(DB_TEXT(hash), DB_INT(id))) < 0)
        goto fail;
    if (db_commit(r->db, &e) < 0)
        goto fail;
    h_admin_customer_get(r);
    return;
fail:
    db_rollback(r->db);
    reply_internal(r, &e);
}

static void h_admin_customer_delete(req_t *r)
{
    long long id = path_customer(r);
    if (id < 0)
        return;
    err_t e = {0};
    long long n = db_scalar_int(r->db, &e, 0,
                                "SELECT COUNT(*) FROM containers WHERE customer_id = $1",
                                DB_ARGS(DB_INT(id)));
    if (n < 0)
        return reply_internal(r, &e);
    if (n > 0)
        return reply_conflict(r, "the customer still has %lld container(s): delete them first",
                              n);
    if (db_exec(r->db, &e, "DELETE FROM customers WHERE id = $1", DB_ARGS(DB_INT(id))) < 0)
        return reply_err(r, &e);
    reply_ok(r);
}

const route_t admin_customer_routes[] = {
    {"GET", "customers", h_admin_customers_list, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {"POST", "customers", h_admin_customer_create, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"GET", "customers/*", h_admin_customer_get, AUTH_ADMIN, CACHE_NONE, WAKE_NONE},
    {"POST", "customers/*", h_admin_customer_modify, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {"DELETE", "customers/*", h_admin_customer_delete, AUTH_ADMIN, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
