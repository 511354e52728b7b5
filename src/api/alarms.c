/* alarms.c - /alarms/ and /alarm_key/ (see API.md).
 *
 * Alarms are kept per container as a ring of at most `max_alarms` (set by
 * the supplier): storing one more deletes the oldest.  "Newest" follows the
 * alarm's own `unix` time (what the public platform ordered by), with the
 * insertion order breaking ties between alarms of the same second. */
#include "alarms.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "auth.h"
#include "routes.h"
#include "rows.h"
#include "throttle.h"

#include <ctype.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- pure rules ---- */

bool alarm_text_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p++;
        if (c == 0)
            return false;
        if (c < 0x80)
            continue;
        int more;
        unsigned cp, min;
        if ((c & 0xe0) == 0xc0)
            more = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            more = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            more = 3, cp = c & 0x07, min = 0x10000;
        else
            return false;
        if (end - p < more)
            return false;
        for (int i = 0; i < more; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (*p & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
    }
    return true;
}

bool alarm_color_normalize(const char *in, char out[8])
{
    const char *hex = in[0] == '#' ? in + 1 : in;
    if (strlen(hex) != 6)
        return false;
    for (int i = 0; i < 6; i++)
        if (!isxdigit((unsigned char)hex[i]))
            return false;
    snprintf(out, 8, "#%s", hex);
    return true;
}

/* Digits only (no sign, no blanks), at most 18 of them so nothing overflows. */
static bool parse_digits(const char *s, size_t len, long long *out)
{
    if (len == 0 || len > 18)
        return false;
    long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool alarm_range_parse(const char *s, alarm_range_t *out)
{
    if (!s)
        return false;
    const char *dash = strchr(s, '-');
    long long a, b;
    if (!dash) {
        if (!parse_digits(s, strlen(s), &a))
            return false;
        *out = (alarm_range_t){.offset = 0, .limit = a, .oldest_first = false};
        return true;
    }
    if (!parse_digits(s, (size_t)(dash - s), &a) || !parse_digits(dash + 1, strlen(dash + 1), &b))
        return false;
    /* A == B is a well-formed, empty range (the public platform gave []). */
    if (a <= b)
        *out = (alarm_range_t){.offset = a, .limit = b - a, .oldest_first = false};
    else
        *out = (alarm_range_t){.offset = b, .limit = a - b, .oldest_first = true};
    return true;
}

int alarm_raise_admit(throttle_t *t, long long container_id, double now)
{
    if (!t)
        return 0;
    char key[32];
    snprintf(key, sizeof key, "%lld", container_id);
    int wait = throttle_wait(t, key, now);
    /* Checked, then counted: raises running at once may each take the
     * last token (the bucket stops at 0), a few past the limit at most. */
    if (wait == 0)
        throttle_fail(t, key, now);
    return wait;
}

/* ---- storage ---- */

static int alarm_check(err_t *e, int level, const char *color, char out_color[8],
                       const char *const texts[5])
{
    static const char *const names[] = {"class", "vassal", "filename", "func", "message"};
    for (int i = 0; i < 5; i++)
        if (texts[i] && !alarm_text_valid(texts[i], strlen(texts[i])))
            return err_set(e, ERR_INPUT, "the alarm's %s is not valid UTF-8 text", names[i]);
    if (level < ALARM_LEVEL_SYSTEM || level > ALARM_LEVEL_LOG)
        return err_set(e, ERR_INPUT, "an alarm level is 0 to %d", ALARM_LEVEL_LOG);
    if (!color || !*color)
        color = ALARM_DEFAULT_COLOR;
    if (!alarm_color_normalize(color, out_color))
        return err_set(e, ERR_INPUT, "'color' must be '#' followed by 6 hex digits");
    return 0;
}

/* Make room for one more alarm: keep the newest max_alarms - 1. */
static int alarm_make_room(db_t *db, err_t *e, long long container_id)
{
    long long max = db_scalar_int(db, e, 0,
                                  "SELECT max_alarms FROM containers WHERE id = $1",
                                  DB_ARGS(DB_INT(container_id)));
    if (max < 0)
        return -1;
    if (max == 0)
        return err_set(e, ERR_NOTFOUND, "no container %lld", container_uid(container_id));
    /* NOT IN (... LIMIT) rather than LIMIT/OFFSET on DELETE: portable to
     * PostgreSQL, and it also trims a ring whose max_alarms was lowered. */
    return db_exec(db, e,
                   "DELETE FROM alarms WHERE container_id = $1 AND id NOT IN "
                   "(SELECT id FROM alarms WHERE container_id = $1 "
                   "ORDER BY unix DESC, id DESC LIMIT $2)",
                   DB_ARGS(DB_INT(container_id), DB_INT(max - 1))) < 0
               ? -1
               : 0;
}

/* Whether container `container_id` has an alarm with this node ref:
 * 1 yes, 0 no, -1 on failure. */
static int node_ref_known(db_t *db, err_t *e, long long container_id, const char *ref)
{
    long long n = db_scalar_int(db, e, 0,
                                "SELECT COUNT(*) FROM alarms WHERE container_id = $1 "
                                "AND node_ref = $2",
                                DB_ARGS(DB_INT(container_id), DB_TEXT(ref)));
    return n < 0 ? -1 : n > 0;
}

int alarm_store_in(db_t *db, err_t *e, long long container_id, const alarm_t *a)
{
    const char *const texts[5] = {a->cls, a->vassal, a->filename, a->func, a->msg};
    char c[8];
    if (alarm_check(e, a->level, a->color, c, texts) < 0)
        return -1;
    /* A resent node alarm is looked for before making room: a duplicate
     * must not push an older alarm out of the ring. */
    int known = a->node_ref ? node_ref_known(db, e, container_id, a->node_ref) : 0;
    if (known != 0)
        return known < 0 ? -1 : 0;
    /* Trimming and inserting in one transaction: concurrent raises never
     * leave more than max_alarms, and a failed insert deletes nothing. */
    if (alarm_make_room(db, e, container_id) < 0 ||
        db_exec(db, e,
                "INSERT INTO alarms (container_id, level, color, class, vassal, line, "
                "filename, func, unix, msg, node_ref) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                DB_ARGS(DB_INT(container_id), DB_INT(a->level), DB_TEXT(c),
                        DB_TEXT(a->cls ? a->cls : ""), DB_TEXT(a->vassal ? a->vassal : ""),
                        a->line < 0 ? DB_NULL : DB_INT(a->line),
                        DB_TEXT(a->filename ? a->filename : ""),
                        DB_TEXT(a->func ? a->func : ""), DB_INT(a->unix_time),
                        DB_TEXT(a->msg ? a->msg : ""), DB_TEXT(a->node_ref))) < 0)
        return -1;
    /* One raised with the API goes down to the node: its server's
     * alarm_seq (in the node state) moves to the new id, the container's
     * newest (ids only grow). */
    if (!a->node_ref &&
        db_exec(db, e,
                "UPDATE servers SET alarm_seq = (SELECT MAX(id) FROM alarms "
                "WHERE container_id = $1) "
                "WHERE id = (SELECT server_id FROM containers WHERE id = $1)",
                DB_ARGS(DB_INT(container_id))) < 0)
        return -1;
    return 1;
}

int alarm_store(db_t *db, err_t *e, long long container_id, const alarm_t *a)
{
    if (db_begin(db, e) < 0)
        return -1;
    int rc = alarm_store_in(db, e, container_id, a);
    if (rc < 0 || db_commit(db, e) < 0) {
        db_rollback(db);
        return -1;
    }
    return rc;
}

/* ---- reading ---- */

#define ALARM_COLS                                                                         \
    "SELECT a.id, a.container_id, a.level, a.color, a.class, a.vassal, a.line, "          \
    "a.filename, a.func, a.unix, a.msg "

/* The caller's alarms matching the filters; a NULL filter matches all.
 * CAST(... IS NULL) keeps one statement for every filter combination and
 * gives PostgreSQL the parameter types (BIGINT: its INTEGER is 32 bits,
 * and a line number or level may be larger). */
#define ALARM_WHERE                                                                        \
    "FROM alarms a JOIN containers c ON c.id = a.container_id "                           \
    "WHERE c.customer_id = $1 AND ($2 = 0 OR a.container_id = $2) "                       \
    "AND (CAST($3 AS TEXT) IS NULL OR a.vassal = $3) "                                    \
    "AND (CAST($4 AS TEXT) IS NULL OR a.class = $4) "                                     \
    "AND (CAST($5 AS TEXT) IS NULL OR a.color = $5) "                                     \
    "AND (CAST($6 AS BIGINT) IS NULL OR a.level = $6) "                                   \
    "AND (CAST($7 AS BIGINT) IS NULL OR a.line = $7) "                                    \
    "AND (CAST($8 AS TEXT) IS NULL OR a.filename = $8) "                                  \
    "AND (CAST($9 AS TEXT) IS NULL OR a.func = $9) "

/* Unset texts were null on the public platform; they are stored as "". */
static json_t *text_or_null(const char *s) { return s && *s ? json_string(s) : json_null(); }

static json_t *alarm_json(db_res_t *res, int i)
{
    return json_pack(
        "{s:I,s:I,s:I,s:s,s:o,s:o,s:o,s:o,s:o,s:I,s:s}", "id",
        (json_int_t)db_get_int(res, i, 0), "container",
        (json_int_t)container_uid(db_get_int(res, i, 1)), "level",
        (json_int_t)db_get_int(res, i, 2), "color", db_get(res, i, 3), "class",
        text_or_null(db_get(res, i, 4)), "vassal", text_or_null(db_get(res, i, 5)), "line",
        db_is_null(res, i, 6) ? json_null() : json_integer(db_get_int(res, i, 6)),
        "filename", text_or_null(db_get(res, i, 7)), "func", text_or_null(db_get(res, i, 8)),
        "unix", (json_int_t)db_get_int(res, i, 9), "msg", db_get(res, i, 10));
}

/* The internal id of the caller's container `uid_seg`; 0 when it is not
 * one (missing, someone else's, not a uid); -1 on a storage failure. */
static long long own_container_id(req_t *r, err_t *e, const char *uid_seg)
{
    long long id = container_id_from_uid(uid_seg);
    if (id < 0)
        return 0;
    return db_scalar_int(r->db, e, 0,
                         "SELECT id FROM containers WHERE id = $1 AND customer_id = $2",
                         DB_ARGS(DB_INT(id), DB_INT(r->me.id)));
}

typedef struct {
    long long container_id; /* 0: every container of the caller */
    const char *vassal, *cls, *color, *filename, *func;
    db_val level, line;
    char color_buf[8];
} alarm_filter_t;

/* An integer filter: DB_NULL when absent; -1 after a 400 on junk. */
static int int_filter(req_t *r, const char *name, db_val *out)
{
    const char *v = req_arg(r, name);
    long long n;
    *out = DB_NULL;
    if (!v)
        return 0;
    if (!str_to_ll(v, &n)) {
        reply_bad_request(r, "'%s' must be an integer", name);
        return -1;
    }
    *out = DB_INT(n);
    return 0;
}

static int parse_filter(req_t *r, alarm_filter_t *f)
{
    const char *cuid = req_arg(r, "container");
    if (cuid) {
        err_t e = {0};
        f->container_id = own_container_id(r, &e, cuid);
        if (f->container_id <= 0) {
            if (f->container_id < 0)
                reply_internal(r, &e);
            else
                reply_error(r, 403, "'container' is not one of your containers");
            return -1;
        }
    }
    f->vassal = req_arg(r, "vassal");
    f->cls = req_arg(r, "class");
    f->filename = req_arg(r, "filename");
    f->func = req_arg(r, "func");
    f->color = req_arg(r, "color");
    /* '#' must be written %23 in a URL: accept the color without it, as
     * raise does. */
    if (f->color && f->color[0] != '#' && strlen(f->color) < sizeof f->color_buf - 1) {
        snprintf(f->color_buf, sizeof f->color_buf, "#%s", f->color);
        f->color = f->color_buf;
    }
    return int_filter(r, "level", &f->level) < 0 || int_filter(r, "line", &f->line) < 0 ? -1
                                                                                        : 0;
}

static json_t *query_alarms(req_t *r, err_t *e, const alarm_filter_t *f,
                              const alarm_range_t *rg)
{
    /* Two fixed statements rather than SQL built per request; LLONG_MAX
     * stands for "no limit" in both SQLite and PostgreSQL. */
    const char *sql = rg->oldest_first
                          ? ALARM_COLS ALARM_WHERE "ORDER BY a.unix ASC, a.id ASC "
                                                   "LIMIT $10 OFFSET $11"
                          : ALARM_COLS ALARM_WHERE "ORDER BY a.unix DESC, a.id DESC "
                                                   "LIMIT $10 OFFSET $11";
    return rows_json(r->db, e, alarm_json, sql,
                     DB_ARGS(DB_INT(r->me.id), DB_INT(f->container_id), DB_TEXT(f->vassal),
                             DB_TEXT(f->cls), DB_TEXT(f->color), f->level, f->line,
                             DB_TEXT(f->filename), DB_TEXT(f->func), DB_INT(rg->limit),
                             DB_INT(rg->offset)));
}

static long long count_alarms(req_t *r, err_t *e, const alarm_filter_t *f)
{
    return db_scalar_int(r->db, e, 0, "SELECT COUNT(*) " ALARM_WHERE,
                         DB_ARGS(DB_INT(r->me.id), DB_INT(f->container_id),
                                 DB_TEXT(f->vassal), DB_TEXT(f->cls), DB_TEXT(f->color),
                                 f->level, f->line, DB_TEXT(f->filename),
                                 DB_TEXT(f->func)));
}

static void h_alarms_list(req_t *r)
{
    alarm_filter_t f = {0};
    alarm_range_t rg = {.offset = 0, .limit = LLONG_MAX, .oldest_first = false};
    const char *range, *ignored;
    if (parse_filter(r, &f) < 0)
        return;
    if (req_arg_present(r, "range", &range) && !alarm_range_parse(range, &rg))
        return reply_error(r, 416, NULL);
    err_t e = {0};
    long long total = req_arg_present(r, "with_total", &ignored) ? count_alarms(r, &e, &f) : 0;
    json_t *list = total < 0 ? NULL : query_alarms(r, &e, &f, &rg);
    if (!list || !req_arg_present(r, "with_total", &ignored))
        return reply_list(r, list, &e);
    reply(r, 200, json_pack("{s:I,s:o}", "total", (json_int_t)total, "alarms", list));
}

/* The id of the caller's alarm named by the path, or -1 after answering
 * (403 for someone else's or a missing one). */
static long long own_alarm(req_t *r)
{
    return req_owned(r,
                     "SELECT a.id FROM alarms a JOIN containers c ON c.id = a.container_id "
                     "WHERE a.id = $1 AND c.customer_id = $2",
                     parse_id(r->segs[1]), 403);
}

static void h_alarm_get(req_t *r)
{
    long long id = own_alarm(r);
    if (id < 0)
        return;
    err_t e = {0};
    db_res_t *res = db_query(r->db, &e, ALARM_COLS "FROM alarms a WHERE a.id = $1",
                             DB_ARGS(DB_INT(id)));
    if (!res)
        return reply_internal(r, &e);
    json_t *o = res->nrows == 1 ? alarm_json(res, 0) : NULL;
    db_res_free(res);
    if (!o)
        return reply_internal(r, NULL);
    reply(r, 200, o);
}

static void h_alarm_delete(req_t *r)
{
    long long id = own_alarm(r);
    if (id < 0)
        return;
    err_t e = {0};
    if (db_exec(r->db, &e, "DELETE FROM alarms WHERE id = $1", DB_ARGS(DB_INT(id))) < 0)
        return reply_internal(r, &e);
    reply_ok(r);
}

/* ---- raising ---- */

/* 1 when `key` is container `id`'s alarm key, 0 when not, -1 on failure. */
static int alarm_key_matches(req_t *r, err_t *e, long long id, const char *key)
{
    db_res_t *res = db_query(r->db, e, "SELECT alarm_key FROM containers WHERE id = $1",
                             DB_ARGS(DB_INT(id)));
    if (!res)
        return -1;
    const char *want = res->nrows == 1 ? db_get(res, 0, 0) : NULL;
    size_t len = strlen(key);
    /* Constant time over the key, so its bytes cannot be guessed one by one. */
    int ok = want && strlen(want) == len && len > 0 && sodium_memcmp(want, key, len) == 0;
    db_res_free(res);
    return ok;
}

/* API.md: customer credentials (for the container's owner), or else
 * ?key=<alarm key> of that container.  Returns the container id, or -1
 * after answering 401 / 403. */
static long long raise_auth(req_t *r)
{
    const char *seg = r->segs[2];
    long long id = container_id_from_uid(seg);
    err_t e = {0};
    int a = auth_optional(r);
    if (a == AUTH_ANSWERED)
        return -1; /* 429: too many wrong passwords */
    if (a == 0) {
        long long own = own_container_id(r, &e, seg);
        if (own < 0)
            reply_internal(r, &e);
        else if (own == 0)
            reply_error(r, 403, NULL);
        return own > 0 ? own : -1;
    }
    const char *key = req_arg(r, "key");
    int ok = key && id > 0 ? alarm_key_matches(r, &e, id, key) : 0;
    if (ok < 0)
        reply_internal(r, &e);
    else if (ok == 0)
        reply_error(r, 401, NULL);
    return ok > 0 ? id : -1;
}

typedef struct {
    long long level, line, unix_time;
    const char *color, *cls, *vassal, *filename, *func;
    char color_buf[8];
} raise_params_t;

/* An integer query argument >= min, or `dflt` when absent; 400 on junk. */
static int int_arg(req_t *r, const char *name, long long min, long long dflt, long long *out)
{
    const char *v = req_arg(r, name);
    *out = dflt;
    if (v && (!str_to_ll(v, out) || *out < min)) {
        reply_bad_request(r, "'%s' must be an integer of at least %lld", name, min);
        return -1;
    }
    return 0;
}

static int text_args(req_t *r, raise_params_t *p)
{
    static const char *const names[] = {"class", "vassal", "filename", "func"};
    const char **dest[] = {&p->cls, &p->vassal, &p->filename, &p->func};
    for (int i = 0; i < 4; i++) {
        const char *v = *dest[i] = req_arg(r, names[i]);
        if (v && (strlen(v) > ALARM_TEXT_MAX || !alarm_text_valid(v, strlen(v)))) {
            reply_bad_request(r, "'%s' must be UTF-8 text of at most %d bytes", names[i],
                              ALARM_TEXT_MAX);
            return -1;
        }
    }
    return 0;
}

static int raise_params(req_t *r, raise_params_t *p)
{
    const char *lv = req_arg(r, "level");
    p->level = ALARM_LEVEL_USER;
    if (lv && !str_to_ll(lv, &p->level)) {
        reply_bad_request(r, "'level' must be an integer");
        return -1;
    }
    /* Level 0 marks the platform's own alarms: customers cannot forge one. */
    if (p->level < ALARM_LEVEL_USER) {
        reply_error(r, 403, "level 0 (system) is reserved to the platform");
        return -1;
    }
    if (p->level > ALARM_LEVEL_LOG) {
        reply_bad_request(r, "'level' must be 1 (user), 2 (exception), 3 (traceback) or "
                             "4 (log)");
        return -1;
    }
    p->color = req_arg(r, "color");
    if (p->color && !alarm_color_normalize(p->color, p->color_buf)) {
        reply_bad_request(r, "'color' must be 6 hex digits, optionally after a '#'");
        return -1;
    }
    if (p->color)
        p->color = p->color_buf;
    return int_arg(r, "line", 0, -1, &p->line) < 0 ||
                   int_arg(r, "unix", 0, (long long)time(NULL), &p->unix_time) < 0 ||
                   text_args(r, p) < 0
               ? -1
               : 0;
}

static void h_alarm_raise(req_t *r)
{
    long long id = raise_auth(r);
    raise_params_t p = {0};
    if (id < 0 || raise_params(r, &p) < 0)
        return;
    /* The raw body is the message.  It is stored and served as JSON text,
     * so invalid UTF-8 (or a NUL byte) is refused rather than silently
     * rewritten with replacement characters: the sender learns at once. */
    if (!alarm_text_valid(r->body, r->body_len))
        return reply_bad_request(r, "the alarm message (the body) must be UTF-8 text "
                                    "without NUL bytes");
    int wait = alarm_raise_admit(r->api ? r->api->alarm_raises : NULL, id, throttle_now());
    if (wait > 0)
        return reply_429(r, wait, "too many alarms raised for this container");
    err_t e = {0};
    /* server.c keeps the body NUL-terminated, so it is a C string here. */
    alarm_t a = {.level = (int)p.level, .color = p.color, .cls = p.cls, .vassal = p.vassal,
                 .filename = p.filename, .func = p.func, .msg = r->body, .line = p.line,
                 .unix_time = p.unix_time};
    if (alarm_store(r->db, &e, id, &a) < 0)
        return reply_err(r, &e);
    reply(r, 201, json_pack("{s:s}", "message", "Created"));
}

static void h_alarm_key(req_t *r)
{
    err_t e = {0};
    long long id = own_container_id(r, &e, r->segs[1]);
    if (id < 0)
        return reply_internal(r, &e);
    if (id == 0)
        return reply_error(r, 403, NULL);
    char key[37];
    uuid_v4(key);
    if (db_exec(r->db, &e, "UPDATE containers SET alarm_key = $1 WHERE id = $2",
                DB_ARGS(DB_TEXT(key), DB_INT(id))) < 0)
        return reply_internal(r, &e);
    reply(r, 200, json_pack("{s:s,s:s}", "message", "Ok", "alarm_key", key));
}

/* Other methods on raise/trigger get 405 from the router, which knows the
 * paths exist for POST. */
const route_t alarm_routes[] = {
    {"GET", "alarms", h_alarms_list, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {"GET", "alarms/*", h_alarm_get, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    {"DELETE", "alarms/*", h_alarm_delete, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    /* WAKE_NODES: the alarm goes down to the container's node (its state's
     * server.alarm_seq moves), which delivers it (docs/NODE-CHANNEL.md). */
    {"POST", "alarms/raise/*", h_alarm_raise, AUTH_ALARM, CACHE_NONE, WAKE_NODES},
    {"POST", "alarms/trigger/*", h_alarm_raise, AUTH_ALARM, CACHE_NONE, WAKE_NODES},
    {"GET", "alarm_key/*", h_alarm_key, AUTH_CUSTOMER, CACHE_NONE, WAKE_NONE},
    /* The public view regenerated the key on any method; POST is what a
     * client that knows GET should not change things sends. */
    {"POST", "alarm_key/*", h_alarm_key, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
