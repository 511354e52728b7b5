/* me.c - /me/: the caller's own account. */
#include "../common/validate.h"
#include "auth.h"
#include "fields.h"
#include "routes.h"
#include "rows.h"

#include <string.h>

#define PASSWORD_MAX 1024

static void h_me_get(req_t *r)
{
    err_t e = {0};
    db_res_t *me = db_query(r->db, &e,
                            "SELECT company, vat, email, uuid FROM customers WHERE id = $1",
                            DB_ARGS(DB_INT(r->me.id)));
    json_t *containers =
        me ? rows_uid_list(r->db, &e,
                           "SELECT id FROM containers WHERE customer_id = $1 ORDER BY id",
                           r->me.id)
           : NULL;
    json_t *servers =
        containers ? rows_str_list(r->db, &e,
                                   "SELECT address FROM servers WHERE owner_id = $1 ORDER BY id",
                                   r->me.id)
                   : NULL;
    if (!servers || me->nrows != 1) {
        db_res_free(me);
        json_decref(containers);
        json_decref(servers);
        return reply_internal(r, &e);
    }
    reply(r, 200,
          json_pack("{s:s,s:s,s:s,s:s,s:o,s:o}", "company", db_get(me, 0, 0), "vat",
                    db_get(me, 0, 1), "email", db_get(me, 0, 2), "uuid", db_get(me, 0, 3),
                    "containers", containers, "servers", servers));
    db_res_free(me);
}

static void h_me_post(req_t *r)
{
    static const field_spec spec[] = {{"company", FT_STRING}, {"vat", FT_STRING},
                                      {"email", FT_STRING},   {"password", FT_STRING},
                                      {NULL, 0}};
    if (fields_check(r, spec) < 0)
        return;
    const char *password = field_str(r, "password");
    char hash[128];
    err_t e = {0};
    if (password) {
        size_t len = strlen(password);
        if (len == 0 || len > PASSWORD_MAX)
            return reply_bad_request(r, "'password' must be 1 to %d characters",
                                     PASSWORD_MAX);
        /* Hash before the transaction: argon2id is slow on purpose. */
        if (password_hash(password, hash, &e) < 0)
            return reply_internal(r, &e);
    }
    static const char *const cols[] = {"company", "vat", "email"};
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    for (int i = 0; i < 3; i++) {
        const char *v = field_str(r, cols[i]);
        char sql[96];
        snprintf(sql, sizeof sql, "UPDATE customers SET %s = $1 WHERE id = $2", cols[i]);
        if (v && db_exec(r->db, &e, sql, DB_ARGS(DB_TEXT(v), DB_INT(r->me.id))) < 0)
            goto fail;
    }
    if (password && db_exec(r->db, &e, "UPDATE customers SET password_hash = $1 WHERE id = $2",
                            DB_ARGS(DB_TEXT(hash), DB_INT(r->me.id))) < 0)
        goto fail;
    if (db_commit(r->db, &e) < 0)
        goto fail;
    h_me_get(r);
    return;
fail:
    db_rollback(r->db);
    reply_internal(r, &e);
}

const route_t me_routes[] = {
    {"GET", "me", h_me_get, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "me", h_me_post, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
