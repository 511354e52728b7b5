/* db_common.c - the backend-independent part of db.h: the table of
 * backends by URL scheme, the calls through a connection's backend, and
 * what is built on db_query. */
#include "db_backend.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A scheme with no backend names why (`missing`) instead of opening a
 * file of that name. */
static const struct {
    const char *scheme;
    const db_backend_t *be;
    const char *missing;
} schemes[] = {
    {"sqlite", &db_sqlite_backend, NULL},
    {"postgresql", &db_pg_backend, NULL},
    {"postgres", &db_pg_backend, NULL},
};

#define NSCHEMES (sizeof schemes / sizeof schemes[0])

/* The length of `url`'s scheme (RFC 3986: a letter, then letters, digits,
 * "+", "-", "."; then ":"), or 0 when it has none: a plain path. */
static size_t scheme_len(const char *url)
{
    if (!isalpha((unsigned char)url[0]))
        return 0;
    size_t n = 1;
    while (url[n] && (isalnum((unsigned char)url[n]) || strchr("+-.", url[n])))
        n++;
    return url[n] == ':' ? n : 0;
}

/* The schemes of the table, "sqlite:, postgresql:, ...", for a message. */
static void known_schemes(char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < NSCHEMES && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s:", i ? ", " : "",
                                 schemes[i].scheme);
}

db_t *db_open(const char *url, err_t *e)
{
    size_t n = scheme_len(url);
    if (n == 0) /* a plain path: SQLite, as always */
        return db_sqlite_backend.open(url, url, e);
    for (size_t i = 0; i < NSCHEMES; i++) {
        if (strlen(schemes[i].scheme) != n || strncasecmp(url, schemes[i].scheme, n) != 0)
            continue;
        if (!schemes[i].be) {
            /* Not the URL itself: it may hold a password. */
            err_set(e, ERR_INPUT, "database URL scheme %s: %s", schemes[i].scheme,
                    schemes[i].missing);
            return NULL;
        }
        return schemes[i].be->open(url, url + n + 1, e);
    }
    char known[128];
    known_schemes(known, sizeof known);
    err_set(e, ERR_INPUT, "unknown database URL scheme \"%.*s:\" (known: %s; a plain path "
            "is a SQLite file)", (int)(n > 32 ? 32 : n), url, known);
    return NULL;
}

/* Is the query key s (up to n bytes, percent-encoded perhaps) "password"?
 * libpq decodes keys before it reads them: so must this. */
static bool is_password_key(const char *s, size_t n)
{
    static const char want[] = "password";
    size_t k = 0;
    for (size_t i = 0; i < n; i++, k++) {
        int c = (unsigned char)s[i];
        if (c == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], '\0'};
            c = (int)strtol(hex, NULL, 16);
            i += 2;
        }
        if (k >= sizeof want - 1 || c != want[k])
            return false;
    }
    return k == sizeof want - 1;
}

/* The '@' ending a URL's user:password, or NULL: libpq looks for it up to
 * the first '/' (so may a password hold '?' or '#'); one up to the query
 * is taken too (a password with an unencoded '/', which libpq would take
 * for host:port/path and refuse, must not be logged either). */
static const char *userinfo_end(const char *auth)
{
    const char *at = NULL;
    size_t stops[] = {strcspn(auth, "/"), strcspn(auth, "?")};
    for (size_t s = 0; s < 2 && !at; s++)
        for (const char *p = auth; p < auth + stops[s]; p++)
            if (*p == '@')
                at = p; /* the last one: a password may hold "@" */
    return at;
}

const char *db_url_redacted(const char *url, char *buf, size_t len)
{
    if (!len)
        return buf;
    buf[0] = '\0';
    if (!url)
        return buf;
    size_t n = scheme_len(url), used = 0;
    const char *rest = url;
#define PUT(p, k) (used += (size_t)snprintf(buf + used, used < len ? len - used : 0, "%.*s", \
                                            (int)(k), (p)), used = used < len ? used : len)
    if (n && strncmp(url + n, "://", 3) == 0) {
        const char *auth = url + n + 3;
        const char *at = userinfo_end(auth);
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon) { /* user:password@ */
            PUT(url, colon + 1 - url);
            PUT("***", 3);
            rest = at;
        }
    }
    /* A query's password=... (its key perhaps percent-encoded): hidden to
     * the end, since an unencoded '&' or '#' may be part of it. */
    const char *q = strchr(rest, '?');
    while (q) {
        const char *key = q + 1;
        size_t klen = strcspn(key, "=&#");
        if (key[klen] == '=' && is_password_key(key, klen)) {
            PUT(rest, key + klen + 1 - rest);
            PUT("***", 3);
            return buf;
        }
        const char *end = key + strcspn(key, "&#");
        q = *end == '&' ? end : NULL;
    }
    PUT(rest, strlen(rest));
#undef PUT
    return buf;
}

void db_close(db_t *db)
{
    if (db)
        db->be->close(db);
}

db_res_t *db_query(db_t *db, err_t *e, const char *sql, int n, const db_val *args)
{
    return db->be->query(db, e, sql, n, args);
}

int db_exec_script(db_t *db, err_t *e, const char *sql)
{
    return db->be->exec_script(db, e, sql);
}

int db_begin(db_t *db, err_t *e) { return db->be->begin(db, e); }

int db_commit(db_t *db, err_t *e) { return db->be->commit(db, e); }

void db_rollback(db_t *db) { db->be->rollback(db); }

void db_set_write_lock(db_t *db, fifo_lock_t *lock) { db->be->set_write_lock(db, lock); }

int db_claim(db_t *db, err_t *e) { return db->be->claim(db, e); }

int db_read_begin(db_t *db, err_t *e) { return db->be->read_begin(db, e); }

void db_read_end(db_t *db) { db->be->read_end(db); }

int db_schema_begin(db_t *db, err_t *e) { return db->be->schema_begin(db, e); }

int db_schema_commit(db_t *db, err_t *e) { return db->be->schema_commit(db, e); }

void db_schema_rollback(db_t *db) { db->be->schema_rollback(db); }

int db_ids_never_reused(db_t *db, err_t *e, const char *table)
{
    return db->be->ids_never_reused(db, e, table);
}

unsigned long long db_data_version(db_t *db, db_feed feed)
{
    return db->be->data_version(db, feed);
}

void db_notify(db_t *db) { db->be->notify(db); }

unsigned long long db_data_wait(db_t *db, db_feed feed, unsigned long long since,
                                long long deadline_ms)
{
    return db->be->data_wait(db, feed, since, deadline_ms);
}

bool db_shared(db_t *db) { return db->be->shared(db); }

int db_data_version_now(db_t *db, err_t *e, unsigned long long *v)
{
    return db->be->data_version_now(db, e, v);
}

long long db_id_high(db_t *db, err_t *e, const char *table)
{
    return db->be->id_high(db, e, table);
}

int db_id_set_high(db_t *db, err_t *e, const char *table, long long high)
{
    return db->be->id_set_high(db, e, table, high);
}

long long db_exec(db_t *db, err_t *e, const char *sql, int n, const db_val *args)
{
    return db_res_changes(db_query(db, e, sql, n, args));
}

long long db_scalar_int(db_t *db, err_t *e, long long dflt, const char *sql, int n,
                        const db_val *args)
{
    db_res_t *r = db_query(db, e, sql, n, args);
    if (!r)
        return -1;
    long long v = r->nrows > 0 && !db_is_null(r, 0, 0) ? db_get_int(r, 0, 0) : dflt;
    db_res_free(r);
    return v;
}
