/* containers.c - /containers/, /me/containers/, /regenerate_secret_uuid/. */
#include "containers.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "fields.h"
#include "routes.h"
#include "rows.h"
#include "tags.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_SSH_KEYS 256

/* Columns of CONTAINER_SELECT, in order. */
enum {
    C_ID, C_NAME, C_MEMORY, C_STORAGE, C_UUID, C_DISTRO, C_DISTRO_NAME, C_CDISTRO,
    C_CDISTRO_NAME, C_SERVER, C_SERVER_ADDR, C_NOTE, C_QUOTA, C_JID, C_JID_DEST,
    C_PO_USER, C_PO_TOKEN, C_PO_SOUND, C_PB_TOKEN, C_SLACK, C_ALARM_FREQ, C_NOFOLLOW,
    C_CDS, C_SECRET_UUID, C_SERVER_ID, C_CUSTOMER,
    C_ST_STATE, C_ST_SINCE, C_ST_RESTARTS, C_ST_ERROR, C_ST_GEN, C_GEN, C_STARTABLE,
    C_STOPPED_REASON,
};

/* C_STARTABLE is a CASE giving 1 or 0: a bare condition would be a boolean
 * column, which PostgreSQL answers as "t"/"f". */
#define CONTAINER_SELECT                                                                   \
    "SELECT c.id, c.name, c.memory, c.storage, c.uuid, c.distro_id, d.name, "             \
    "c.custom_distro_id, cd.name, s.name, s.address, c.note, c.quota_threshold, c.jid, "  \
    "c.jid_destinations, c.pushover_user, c.pushover_token, c.pushover_sound, "           \
    "c.pushbullet_token, c.slack_webhook, c.alarm_freq, c.nofollow, "                     \
    "c.custom_distros_storage, c.secret_uuid, c.server_id, c.customer_id, "               \
    "st.state, st.since, st.restarts, st.last_error, st.generation, c.generation, "      \
    "CASE WHEN (c.distro_id IS NOT NULL OR c.custom_distro_id IS NOT NULL) AND "           \
    "EXISTS (SELECT 1 FROM ssh_keys k WHERE k.container_id = c.id) THEN 1 ELSE 0 END, "   \
    "c.stopped_reason "                                                                   \
    "FROM containers c JOIN servers s ON s.id = c.server_id "                             \
    "LEFT JOIN distros d ON d.id = c.distro_id "                                          \
    "LEFT JOIN custom_distros cd ON cd.id = c.custom_distro_id "                          \
    "LEFT JOIN container_status st ON st.container_id = c.id "

static json_t *nullable_int(db_res_t *res, int row, int col)
{
    return db_is_null(res, row, col) ? json_null() : json_integer(db_get_int(res, row, col));
}

static json_t *nullable_str(db_res_t *res, int row, int col)
{
    return db_is_null(res, row, col) ? json_null() : json_string(db_get(res, row, col));
}

/* The fields every container object has (list and full forms).  `tags`
 * (taken) when the caller has them already, else NULL to look them up. */
static json_t *container_short(db_t *db, err_t *e, db_res_t *res, int row, json_t *tags)
{
    long long id = db_get_int(res, row, C_ID);
    char ip[32] = "", hostname[HOSTNAME_MAX + 1];
    container_ip(id, ip, sizeof ip);
    container_hostname(db_get(res, row, C_NAME), hostname, sizeof hostname);
    if (!tags && !(tags = tags_of(db, e, TAGGED_CONTAINER, id)))
        return NULL;
    json_t *o = json_pack(
        "{s:I,s:s,s:s,s:s,s:I,s:I,s:s,s:o,s:o,s:o,s:o,s:s,s:s,s:o}", "uid",
        (json_int_t)container_uid(id), "name", db_get(res, row, C_NAME), "hostname", hostname,
        "ip", ip, "memory", (json_int_t)db_get_int(res, row, C_MEMORY), "storage",
        (json_int_t)db_get_int(res, row, C_STORAGE), "uuid", db_get(res, row, C_UUID),
        "distro", nullable_int(res, row, C_DISTRO), "distro_name",
        nullable_str(res, row, C_DISTRO_NAME), "custom_distro",
        nullable_int(res, row, C_CDISTRO), "custom_distro_name",
        nullable_str(res, row, C_CDISTRO_NAME), "server", db_get(res, row, C_SERVER),
        "server_address", db_get(res, row, C_SERVER_ADDR), "tags", tags);
    if (!o)
        err_set(e, ERR_INTERNAL, "out of memory");
    return o;
}

/* What the node reports it runs.  Before any report: "starting" when the
 * container is startable (a root filesystem and a key), else "stopped".  A
 * report about an older generation than the current one means the change
 * is being applied: "starting".  From CONTAINER_SELECT's status columns. */
static json_t *container_status(db_res_t *res, int row)
{
    bool startable = db_get_int(res, row, C_STARTABLE) != 0;
    /* The API stopped it (its custom distro was deleted): the node, which
     * reports only "stopped", cannot say why; the reason stays until a
     * distro is set again. */
    if (!startable && !db_is_null(res, row, C_STOPPED_REASON))
        return json_pack("{s:s,s:o,s:I,s:s}", "state", "stopped", "since",
                         nullable_int(res, row, C_ST_SINCE), "restarts",
                         (json_int_t)db_get_int(res, row, C_ST_RESTARTS), "last_error",
                         db_get(res, row, C_STOPPED_REASON));
    if (db_is_null(res, row, C_ST_STATE))
        return json_pack("{s:s,s:n,s:i,s:n}", "state", startable ? "starting" : "stopped",
                         "since", "restarts", 0, "last_error");
    const char *state = db_get(res, row, C_ST_STATE);
    if (strcmp(state, "running") == 0 &&
        db_get_int(res, row, C_ST_GEN) < db_get_int(res, row, C_GEN))
        state = "starting";
    return json_pack("{s:s,s:I,s:I,s:o}", "state", state, "since",
                     (json_int_t)db_get_int(res, row, C_ST_SINCE), "restarts",
                     (json_int_t)db_get_int(res, row, C_ST_RESTARTS), "last_error",
                     db_is_null(res, row, C_ST_ERROR) ? json_null()
                                                      : json_string(db_get(res, row, C_ST_ERROR)));
}

/* The lists of a full container object: ssh keys, links, legion
 * addresses and tags, in one query (a GET of a container is the API's
 * hottest read: docs/PERFORMANCE.md). */
enum { L_KEYS, L_LINKS, L_LEGIONS, L_TAGS, L_COUNT };

static int container_lists(db_t *db, err_t *e, long long id, long long server_id,
                           json_t *lists[L_COUNT])
{
    db_res_t *res = db_query(
        db, e,
        "SELECT 0, key, pos, '' FROM ssh_keys WHERE container_id = $1 "
        "UNION ALL SELECT 1, CAST(to_id AS TEXT), to_id, '' FROM links WHERE container_id = $1 "
        "UNION ALL SELECT 2, l.address, l.id, '' FROM legions l JOIN legion_nodes n "
        "ON n.legion_id = l.id WHERE n.server_id = $2 "
        "UNION ALL SELECT 3, t.name, 0, t.name FROM container_tags x "
        "JOIN tags t ON t.id = x.tag_id WHERE x.container_id = $1 "
        "ORDER BY 1, 3, 4",
        DB_ARGS(DB_INT(id), DB_INT(server_id)));
    if (!res)
        return -1;
    int rc = 0;
    for (int i = 0; i < res->nrows && rc == 0; i++) {
        long long kind = db_get_int(res, i, 0);
        if (db_is_null(res, i, 1) || kind < 0 || kind >= L_COUNT)
            continue;
        if (kind == L_LINKS)
            rc = json_array_append_new(lists[kind],
                                       json_integer(container_uid(db_get_int(res, i, 1))));
        else
            rc = json_array_append_new(lists[kind], json_string(db_get(res, i, 1)));
    }
    db_res_free(res);
    if (rc < 0)
        err_set(e, ERR_INTERNAL, "out of memory");
    return rc;
}

/* The full object: the short one plus what only a single container shows. */
static json_t *container_full(db_t *db, err_t *e, db_res_t *res, int row)
{
    json_t *lists[L_COUNT] = {json_array(), json_array(), json_array(), json_array()};
    json_t *o = NULL, *status = NULL;
    if (!lists[0] || !lists[1] || !lists[2] || !lists[3] || !(status = container_status(res, row))) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    if (container_lists(db, e, db_get_int(res, row, C_ID), db_get_int(res, row, C_SERVER_ID),
                        lists) < 0)
        goto fail;
    o = container_short(db, e, res, row, lists[L_TAGS]);
    lists[L_TAGS] = NULL; /* taken */
    if (!o)
        goto fail;
    static const struct {
        const char *key;
        int col;
    } strs[] = {
        {"note", C_NOTE}, {"jid", C_JID}, {"jid_destinations", C_JID_DEST},
        {"pushover_user", C_PO_USER}, {"pushover_token", C_PO_TOKEN},
        {"pushover_sound", C_PO_SOUND}, {"pushbullet_token", C_PB_TOKEN},
        {"slack_webhook", C_SLACK}, {"secret_uuid", C_SECRET_UUID},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        json_object_set_new(o, strs[i].key, json_string(db_get(res, row, strs[i].col)));
    json_object_set_new(o, "quota_threshold", json_integer(db_get_int(res, row, C_QUOTA)));
    json_object_set_new(o, "alarm_freq", json_integer(db_get_int(res, row, C_ALARM_FREQ)));
    json_object_set_new(o, "nofollow", json_boolean(db_get_int(res, row, C_NOFOLLOW)));
    json_object_set_new(o, "custom_distros_storage",
                        json_boolean(db_get_int(res, row, C_CDS)));
    json_object_set_new(o, "status", status);
    json_object_set_new(o, "ssh_keys", lists[L_KEYS]);
    json_object_set_new(o, "linked_to", lists[L_LINKS]);
    json_object_set_new(o, "legion_address", lists[L_LEGIONS]);
    return o;
fail:
    json_decref(status);
    for (int i = 0; i < L_COUNT; i++)
        json_decref(lists[i]);
    return NULL;
}

/* One container, of `owner` unless owner < 0. */
static json_t *container_json_of(db_t *db, err_t *e, long long id, long long owner, bool full)
{
    db_res_t *res = db_query(db, e, CONTAINER_SELECT "WHERE c.id = $1", DB_ARGS(DB_INT(id)));
    if (!res)
        return NULL;
    json_t *o = NULL;
    if (res->nrows == 0 || (owner >= 0 && db_get_int(res, 0, C_CUSTOMER) != owner))
        err_set(e, ERR_NOTFOUND, "no container %lld", container_uid(id));
    else
        o = full ? container_full(db, e, res, 0) : container_short(db, e, res, 0, NULL);
    db_res_free(res);
    return o;
}

json_t *container_json(db_t *db, err_t *e, long long id, bool full)
{
    return container_json_of(db, e, id, -1, full);
}

static json_t *container_row(db_t *db, err_t *e, db_res_t *res, int row, void *ctx)
{
    (void)ctx;
    return container_short(db, e, res, row, NULL);
}

static void h_containers_list(req_t *r)
{
    err_t e = {0};
    json_t *out = rows_query_json(r->db, &e, container_row, NULL,
                                  CONTAINER_SELECT "WHERE c.customer_id = $1 ORDER BY c.id",
                                  DB_ARGS(DB_INT(r->me.id)));
    reply_list(r, tags_filter(out, req_arg(r, "tags")), &e);
}

/* The internal id of the caller's container named by path segment `seg`;
 * anything else (missing, someone else's, not a uid) answers 403. */
static long long own_container(req_t *r, const char *seg)
{
    return req_own_container(r, seg);
}

static void reply_container(req_t *r, int status, long long id)
{
    err_t e = {0};
    json_t *o = container_json(r->db, &e, id, true);
    if (!o)
        return reply_err(r, &e);
    reply(r, status, o);
}

static void h_container_get(req_t *r)
{
    /* The ownership check is the query's (one query less on the API's
     * hottest read); anything not the caller's is a 403, as req_owned. */
    long long id = container_id_from_uid(r->segs[1]);
    err_t e = {0};
    json_t *o = id < 0 ? NULL : container_json_of(r->db, &e, id, r->me.id, true);
    if (!o)
        return id < 0 || e.kind == ERR_NOTFOUND ? reply_error(r, 403, NULL) : reply_err(r, &e);
    reply(r, 200, o);
}

int container_name_check(const char *name, err_t *e)
{
    /* Characters, not bytes (the body is UTF-8: jansson checked it); the
     * hostname is derived from it per character and cut to 63. */
    size_t len = str_chars(name);
    if (len == 0 || len > FIELD_TEXT_MAX)
        return err_set(e, ERR_INPUT, "'name' must be 1 to %d characters", FIELD_TEXT_MAX);
    return 0;
}

int container_create(db_t *db, err_t *e, long long customer_id, long long server_id,
                     const char *name, long long memory, long long storage, long long *id)
{
    if (container_name_check(name, e) < 0)
        return -1;
    if (sizes_check(e, true, memory, true, storage) < 0)
        return -1;
    if (db_begin(db, e) < 0)
        return -1;
    char uuid[37], secret[37];
    uuid_v4(uuid);
    uuid_v4(secret);
    db_res_t *res = NULL;
    if (server_check_capacity(db, e, server_id, 0, memory, storage) < 0 ||
        !(res = db_query(db, e,
                         "INSERT INTO containers (customer_id, server_id, name, memory, "
                         "storage, uuid, secret_uuid, created) VALUES ($1, $2, $3, $4, $5, "
                         "$6, $7, $8) RETURNING id",
                         DB_ARGS(DB_INT(customer_id), DB_INT(server_id), DB_TEXT(name),
                                 DB_INT(memory), DB_INT(storage), DB_TEXT(uuid),
                                 DB_TEXT(secret), DB_INT(time(NULL))))) ||
        db_commit(db, e) < 0) {
        db_res_free(res);
        db_rollback(db);
        return -1;
    }
    *id = db_get_int(res, 0, 0);
    db_res_free(res);
    return 0;
}

static void h_container_create(req_t *r)
{
    static const field_spec spec[] = {{"server", FT_STRING}, {"name", FT_STRING},
                                      {"memory", FT_INT},    {"storage", FT_INT},
                                      {NULL, 0}};
    static const char *const required[] = {"server", "name", "memory", "storage", NULL};
    if (fields_check(r, spec) < 0 || fields_require(r, required) < 0)
        return;
    err_t e = {0};
    long long server_id = db_scalar_int(r->db, &e, 0,
                                        "SELECT id FROM servers WHERE address = $1 AND "
                                        "owner_id = $2",
                                        DB_ARGS(DB_TEXT(field_str(r, "server")),
                                                DB_INT(r->me.id)));
    if (server_id < 0)
        return reply_internal(r, &e);
    if (server_id == 0)
        return reply_error(r, 403, "you do not own that server");
    long long id;
    if (container_create(r->db, &e, r->me.id, server_id, field_str(r, "name"),
                         field_int(r, "memory"), field_int(r, "storage"), &id) < 0)
        return reply_err(r, &e);
    reply(r, 201, json_pack("{s:s,s:I}", "message", "Created", "uid",
                            (json_int_t)container_uid(id)));
}

/* ---- POST /containers/<uid> ---- */

/* String fields stored as given.  Whether a change restarts the container
 * is container_touch_changed's to say (container_model.c), not the field's. */
static const char *const string_fields[] = {
    "name",           "note",           "jid",           "jid_secret",
    "jid_destinations", "pushover_user", "pushover_token", "pushover_sound",
    "pushbullet_token", "slack_webhook",
};

static const field_spec update_spec[] = {
    {"name", FT_STRING},          {"note", FT_STRING},
    {"quota_threshold", FT_INT},  {"jid", FT_STRING},
    {"jid_secret", FT_STRING},    {"jid_destinations", FT_STRING},
    {"nofollow", FT_BOOL},        {"pushover_user", FT_STRING},
    {"pushover_token", FT_STRING}, {"pushover_sound", FT_STRING},
    {"alarm_freq", FT_INT},       {"pushbullet_token", FT_STRING},
    {"slack_webhook", FT_STRING}, {"custom_distros_storage", FT_BOOL},
    {"ssh_keys", FT_STRING_LIST}, {"distro", FT_INT_OR_NULL},
    {"custom_distro", FT_INT_OR_NULL}, {"memory", FT_INT},
    {"storage", FT_INT},          {"tags", FT_STRING_LIST},
    {"link", FT_INT},             {"unlink", FT_INT},
    {NULL, 0}, /* `reboot` takes any value: reboot_asked() */
};

/* The alarm settings go into the node's requests (a header, a form, XMPP
 * stanzas): no control character anywhere, the service keys in their
 * alphabet, a bounded list of destinations, alarm_freq at most a week.
 * "" clears a field.  400 and -1 on the first bad one. */
static int alarm_fields_check(req_t *r)
{
    static const char *const tokens[] = {"pushover_user", "pushover_token", "pushover_sound",
                                         "pushbullet_token"};
    for (size_t i = 0; i < sizeof string_fields / sizeof string_fields[0]; i++) {
        const char *v = field_str(r, string_fields[i]);
        bool alarm = strcmp(string_fields[i], "name") != 0 && strcmp(string_fields[i], "note") != 0;
        if (alarm && v && str_has_control(v)) {
            reply_bad_request(r, "'%s' must not contain control characters", string_fields[i]);
            return -1;
        }
    }
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        const char *v = field_str(r, tokens[i]);
        if (v && *v && !alarm_token_valid(v)) {
            reply_bad_request(r, "'%s' is 1 to %d of letters, digits, '.', '_' and '-'",
                              tokens[i], ALARM_TOKEN_MAX);
            return -1;
        }
    }
    char why[256];
    const char *dests = field_str(r, "jid_destinations");
    if (dests && !jid_destinations_valid(dests, why, sizeof why)) {
        reply_bad_request(r, "%s", why);
        return -1;
    }
    if (field_has(r, "alarm_freq") && field_int(r, "alarm_freq") > ALARM_FREQ_MAX) {
        reply_bad_request(r, "'alarm_freq' is at most %d seconds (a week)", ALARM_FREQ_MAX);
        return -1;
    }
    return 0;
}

/* Checks that need no database: answer 400 and return -1 on the first. */
static int update_check_values(req_t *r)
{
    err_t e = {0};
    const char *name = field_str(r, "name");
    if (name && container_name_check(name, &e) < 0) {
        reply_bad_request(r, "%s", e.msg);
        return -1;
    }
    /* The alarm settings too (the public platform answered a longer one
     * with a 500); `note` is free text, bounded by the body's size only. */
    for (size_t i = 0; i < sizeof string_fields / sizeof string_fields[0]; i++) {
        const char *v = field_str(r, string_fields[i]);
        if (v && strcmp(string_fields[i], "name") != 0 && strcmp(string_fields[i], "note") != 0 &&
            str_chars(v) > FIELD_TEXT_MAX) {
            reply_bad_request(r, "'%s' is at most %d characters", string_fields[i],
                              FIELD_TEXT_MAX);
            return -1;
        }
    }
    if (alarm_fields_check(r) < 0)
        return -1;
    if (field_has(r, "quota_threshold") &&
        (field_int(r, "quota_threshold") < 0 || field_int(r, "quota_threshold") > 100)) {
        reply_bad_request(r, "'quota_threshold' is a percentage from 0 to 100 (a disk "
                             "usage above 100%% of the quota is meaningless)");
        return -1;
    }
    if (sizes_check(&e, field_has(r, "memory"), field_int(r, "memory"),
                    field_has(r, "storage"), field_int(r, "storage")) < 0) {
        reply_bad_request(r, "%s", e.msg);
        return -1;
    }
    json_t *keys = field_list(r, "ssh_keys");
    if (keys && json_array_size(keys) > MAX_SSH_KEYS) {
        reply_bad_request(r, "'ssh_keys' holds at most %d keys", MAX_SSH_KEYS);
        return -1;
    }
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        char why[256];
        if (!ssh_key_valid(json_string_value(k), why, sizeof why)) {
            reply_bad_request(r, "ssh_keys[%zu]: %s", i, why);
            return -1;
        }
    }
    return 0;
}

typedef struct {
    long long id, server_id, customer_id;
    bool restart; /* asked for (reboot), changed or not */
} update_t;

/* `reboot` with any value but 0, false, null (or their string forms "0",
 * "false"): the public platform rebooted on the key alone. */
static bool reboot_asked(req_t *r)
{
    json_t *v = field_list(r, "reboot");
    const char *s = json_string_value(v);
    if (!v || json_is_null(v) || json_is_false(v))
        return false;
    if (json_is_number(v))
        return json_number_value(v) != 0;
    return !s || (strcmp(s, "0") != 0 && strcasecmp(s, "false") != 0);
}

static int update_strings(req_t *r, update_t *u, err_t *e)
{
    for (size_t i = 0; i < sizeof string_fields / sizeof string_fields[0]; i++) {
        const char *v = field_str(r, string_fields[i]);
        if (!v)
            continue;
        char sql[128];
        /* The column name comes from the fixed table above, never the client. */
        snprintf(sql, sizeof sql, "UPDATE containers SET %s = $1 WHERE id = $2",
                 string_fields[i]);
        if (db_exec(r->db, e, sql, DB_ARGS(DB_TEXT(v), DB_INT(u->id))) < 0)
            return -1;
    }
    return 0;
}

static int update_numbers(req_t *r, update_t *u, err_t *e)
{
    if (field_has(r, "quota_threshold")) {
        if (db_exec(r->db, e, "UPDATE containers SET quota_threshold = $1 WHERE id = $2",
                    DB_ARGS(DB_INT(field_int(r, "quota_threshold")), DB_INT(u->id))) < 0)
            return -1;
    }
    if (field_has(r, "alarm_freq")) {
        long long f = field_int(r, "alarm_freq");
        if (db_exec(r->db, e, "UPDATE containers SET alarm_freq = $1 WHERE id = $2",
                    DB_ARGS(DB_INT(f < ALARM_FREQ_MIN ? ALARM_FREQ_MIN : f), DB_INT(u->id))) < 0)
            return -1;
    }
    if (field_has(r, "nofollow")) {
        if (db_exec(r->db, e, "UPDATE containers SET nofollow = $1 WHERE id = $2",
                    DB_ARGS(DB_INT(field_bool(r, "nofollow")), DB_INT(u->id))) < 0)
            return -1;
    }
    if (field_has(r, "custom_distros_storage")) {
        if (db_exec(r->db, e,
                    "UPDATE containers SET custom_distros_storage = $1 WHERE id = $2",
                    DB_ARGS(DB_INT(field_bool(r, "custom_distros_storage")),
                            DB_INT(u->id))) < 0)
            return -1;
    }
    u->restart |= reboot_asked(r);
    return 0;
}

static int update_resources(req_t *r, update_t *u, err_t *e)
{
    if (!field_has(r, "memory") && !field_has(r, "storage"))
        return 0;
    long long owner = db_scalar_int(r->db, e, 0, "SELECT owner_id FROM servers WHERE id = $1",
                                    DB_ARGS(DB_INT(u->server_id)));
    if (owner < 0)
        return -1;
    if (owner != u->customer_id)
        return err_set(e, ERR_FORBIDDEN,
                       "memory and storage can be changed only on a server you own");
    db_res_t *cur = db_query(r->db, e, "SELECT memory, storage FROM containers WHERE id = $1",
                             DB_ARGS(DB_INT(u->id)));
    if (!cur)
        return -1;
    long long mem = field_has(r, "memory") ? field_int(r, "memory") : db_get_int(cur, 0, 0);
    long long sto = field_has(r, "storage") ? field_int(r, "storage") : db_get_int(cur, 0, 1);
    long long had = db_get_int(cur, 0, 1);
    db_res_free(cur);
    if (storage_check_usage(r->db, e, u->id, had, sto) < 0 ||
        server_check_capacity(r->db, e, u->server_id, u->id, mem, sto) < 0)
        return -1;
    if (db_exec(r->db, e, "UPDATE containers SET memory = $1, storage = $2 WHERE id = $3",
                DB_ARGS(DB_INT(mem), DB_INT(sto), DB_INT(u->id))) < 0)
        return -1;
    return 0;
}

static int update_distro(req_t *r, update_t *u, err_t *e)
{
    if (field_has(r, "distro")) {
        long long d = field_is_null(r, "distro") ? 0 : field_int(r, "distro");
        if (d) {
            long long found = db_scalar_int(r->db, e, 0,
                                            "SELECT id FROM distros WHERE id = $1",
                                            DB_ARGS(DB_INT(d)));
            if (found < 0)
                return -1;
            if (found == 0)
                return err_set(e, ERR_INPUT, "'distro': no distro with id %lld", d);
        }
        /* A container boots one root filesystem: a distro replaces a custom
         * one, and ends a stop the API made.  (CAST: a bare `$1 IS NULL`
         * leaves PostgreSQL without the parameter's type.) */
        if (db_exec(r->db, e,
                    "UPDATE containers SET distro_id = $1, custom_distro_id = NULL, "
                    "stopped_reason = CASE WHEN CAST($1 AS BIGINT) IS NULL THEN "
                    "stopped_reason END WHERE id = $2",
                    DB_ARGS(d ? DB_INT(d) : DB_NULL, DB_INT(u->id))) < 0)
            return -1;
    }
    if (field_has(r, "custom_distro")) {
        long long d = field_is_null(r, "custom_distro") ? 0 : field_int(r, "custom_distro");
        if (d) {
            long long found = db_scalar_int(
                r->db, e, 0,
                "SELECT cd.id FROM custom_distros cd JOIN containers s "
                "ON s.id = cd.container_id WHERE cd.id = $1 AND s.customer_id = $2 AND "
                "s.server_id = $3 AND s.id != $4 AND s.custom_distros_storage = 1",
                DB_ARGS(DB_INT(d), DB_INT(u->customer_id), DB_INT(u->server_id),
                        DB_INT(u->id)));
            if (found < 0)
                return -1;
            if (found == 0)
                return err_set(e, ERR_INPUT,
                               "'custom_distro': no custom distro %lld usable by this "
                               "container",
                               d);
        }
        if (db_exec(r->db, e,
                    "UPDATE containers SET custom_distro_id = $1, distro_id = "
                    "CASE WHEN CAST($1 AS BIGINT) IS NULL THEN distro_id ELSE NULL END, "
                    "stopped_reason = CASE WHEN CAST($1 AS BIGINT) IS NULL THEN "
                    "stopped_reason END WHERE id = $2",
                    DB_ARGS(d ? DB_INT(d) : DB_NULL, DB_INT(u->id))) < 0)
            return -1;
    }
    return 0;
}

static int update_links(req_t *r, update_t *u, err_t *e)
{
    static const char *const ops[] = {"link", "unlink"};
    for (int op = 0; op < 2; op++) {
        if (!field_has(r, ops[op]))
            continue;
        long long uid = field_int(r, ops[op]);
        long long to = container_id_of_uid(uid);
        long long exists = to < 0 ? 0
                                  : db_scalar_int(r->db, e, 0,
                                                  "SELECT id FROM containers WHERE id = $1",
                                                  DB_ARGS(DB_INT(to)));
        if (exists < 0)
            return -1;
        if (exists == 0)
            return err_set(e, ERR_INPUT, "'%s': no container %lld", ops[op], uid);
        if (to == u->id)
            return err_set(e, ERR_CONFLICT, "a container cannot link itself");
        const char *sql = op == 0 ? "INSERT INTO links (container_id, to_id) VALUES ($1, $2) "
                                    "ON CONFLICT DO NOTHING"
                                  : "DELETE FROM links WHERE container_id = $1 AND to_id = $2";
        long long changed = db_exec(r->db, e, sql, DB_ARGS(DB_INT(u->id), DB_INT(to)));
        if (changed < 0)
            return -1;
        if (changed == 0)
            return err_set(e, ERR_CONFLICT,
                           op == 0 ? "already linked to %lld" : "not linked to %lld", uid);
        /* No restart (issue 15): the node applies links to its nft table
         * live; the route's WAKE_NODES tells it. */
    }
    return 0;
}

static int update_keys_and_tags(req_t *r, update_t *u, err_t *e)
{
    json_t *keys = field_list(r, "ssh_keys");
    if (keys) {
        if (db_exec(r->db, e, "DELETE FROM ssh_keys WHERE container_id = $1",
                    DB_ARGS(DB_INT(u->id))) < 0)
            return -1;
        size_t i;
        json_t *k;
        json_array_foreach(keys, i, k)
        {
            if (db_exec(r->db, e,
                        "INSERT INTO ssh_keys (container_id, pos, key) VALUES ($1, $2, $3)",
                        DB_ARGS(DB_INT(u->id), DB_INT((long long)i),
                                DB_TEXT(json_string_value(k)))) < 0)
                return -1;
        }
        /* Keys are rewritten in place by the node (ssh_generation), no
         * restart: container_touch_changed compares them. */
    }
    json_t *tags = field_list(r, "tags");
    if (tags && tags_set(r->db, e, TAGGED_CONTAINER, u->id, u->customer_id, tags) < 0)
        return -1;
    return 0;
}

/* In the caller's transaction: what the node runs is compared before and
 * after, so a field posted with the value it has restarts nothing. */
static int container_update(req_t *r, update_t *u, err_t *e)
{
    container_snap_t *before = container_snap(r->db, e, u->id);
    if (!before)
        return -1;
    bool failed = update_strings(r, u, e) < 0 || update_numbers(r, u, e) < 0 ||
                  update_resources(r, u, e) < 0 || update_distro(r, u, e) < 0 ||
                  update_links(r, u, e) < 0 || update_keys_and_tags(r, u, e) < 0 ||
                  container_touch_changed(r->db, e, before, u->restart) < 0;
    container_snap_free(before);
    return failed ? -1 : 0;
}

static void h_container_post(req_t *r)
{
    long long id = own_container(r, r->segs[1]);
    if (id < 0 || fields_check(r, update_spec) < 0 || update_check_values(r) < 0)
        return;
    err_t e = {0};
    update_t u = {.id = id, .customer_id = r->me.id};
    u.server_id = db_scalar_int(r->db, &e, 0, "SELECT server_id FROM containers WHERE id = $1",
                                DB_ARGS(DB_INT(id)));
    if (u.server_id <= 0)
        return reply_internal(r, &e);
    /* One transaction: a request rejected half-way changes nothing. */
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    if (container_update(r, &u, &e) < 0 || db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_err(r, &e);
    }
    reply_container(r, 200, id);
}

static void h_regenerate_secret_uuid(req_t *r)
{
    long long id = own_container(r, r->segs[1]);
    if (id < 0)
        return;
    char uuid[37];
    uuid_v4(uuid);
    err_t e = {0};
    if (db_exec(r->db, &e, "UPDATE containers SET secret_uuid = $1 WHERE id = $2",
                DB_ARGS(DB_TEXT(uuid), DB_INT(id))) < 0)
        return reply_internal(r, &e);
    reply_ok(r);
}

const route_t container_routes[] = {
    {"GET", "me/containers", h_containers_list, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"GET", "containers", h_containers_list, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "containers", h_container_create, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    /* The public platform routed both paths to one view, POST included. */
    {"POST", "me/containers", h_container_create, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"GET", "containers/*", h_container_get, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "containers/*", h_container_post, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"POST", "regenerate_secret_uuid/*", h_regenerate_secret_uuid, AUTH_CUSTOMER, CACHE_NONE,
     WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
