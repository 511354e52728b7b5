/* db_sqlite.c - the SQLite backend of db.h.
 *
 * Each db_t is one connection, used by one thread at a time (the API keeps a
 * pool).  Statements are prepared once per connection and cached by their SQL
 * text: queries are literals or a few filter combinations, so the cache
 * stays small and a request pays no parse cost. */
#include "db.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STMT_CACHE 128

struct db {
    sqlite3 *h;
    struct {
        char *sql; /* a copy: callers may build SQL in reused buffers */
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
    int ncached;
};

static int sqlite_fail(db_t *db, err_t *e, const char *what)
{
    int code = sqlite3_extended_errcode(db->h);
    enum err_kind k = (code & 0xff) == SQLITE_CONSTRAINT ? ERR_CONSTRAINT : ERR_INTERNAL;
    return err_set(e, k, "%s: %s", what, sqlite3_errmsg(db->h));
}

db_t *db_open(const char *url, err_t *e)
{
    const char *path = url;
    if (strncmp(url, "sqlite:", 7) == 0)
        path = url + 7;
    db_t *db = calloc(1, sizeof *db);
    if (!db) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &db->h, flags, NULL) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "cannot open database %s: %s", path,
                db->h ? sqlite3_errmsg(db->h) : "out of memory");
        sqlite3_close(db->h);
        free(db);
        return NULL;
    }
    sqlite3_busy_timeout(db->h, 10000);
    /* WAL lets readers run while one writer commits; synchronous=FULL keeps
     * every acknowledged API change durable across a power loss. */
    if (db_exec_script(db, e,
                       "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                       "PRAGMA foreign_keys=ON;") < 0) {
        db_close(db);
        return NULL;
    }
    return db;
}

void db_close(db_t *db)
{
    if (!db)
        return;
    for (int i = 0; i < db->ncached; i++) {
        sqlite3_finalize(db->cache[i].st);
        free(db->cache[i].sql);
    }
    sqlite3_close(db->h);
    free(db);
}

static sqlite3_stmt *prepare(db_t *db, err_t *e, const char *sql)
{
    for (int i = 0; i < db->ncached; i++)
        if (strcmp(db->cache[i].sql, sql) == 0)
            return db->cache[i].st;
    sqlite3_stmt *st;
    unsigned flags = db->ncached < STMT_CACHE ? SQLITE_PREPARE_PERSISTENT : 0u;
    if (sqlite3_prepare_v3(db->h, sql, -1, flags, &st, NULL) != SQLITE_OK) {
        sqlite_fail(db, e, "prepare");
        return NULL;
    }
    if (db->ncached < STMT_CACHE) {
        char *copy = strdup(sql);
        if (copy) {
            db->cache[db->ncached].sql = copy;
            db->cache[db->ncached].st = st;
            db->ncached++;
        }
    }
    return st;
}

static bool is_cached(db_t *db, sqlite3_stmt *st)
{
    for (int i = 0; i < db->ncached; i++)
        if (db->cache[i].st == st)
            return true;
    return false;
}

static void release(db_t *db, sqlite3_stmt *st)
{
    if (is_cached(db, st)) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    } else {
        sqlite3_finalize(st);
    }
}

static int bind_args(db_t *db, sqlite3_stmt *st, err_t *e, int n, const db_val *args)
{
    if (sqlite3_bind_parameter_count(st) != n)
        return err_set(e, ERR_INTERNAL, "statement expects %d parameters, got %d",
                       sqlite3_bind_parameter_count(st), n);
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "$%d", i + 1);
        int idx = sqlite3_bind_parameter_index(st, name);
        if (idx == 0)
            return err_set(e, ERR_INTERNAL, "statement has no parameter %s", name);
        int rc;
        switch (args[i].t) {
        case DBV_INT:
            rc = sqlite3_bind_int64(st, idx, args[i].i);
            break;
        case DBV_TEXT:
            rc = sqlite3_bind_text(st, idx, args[i].s, -1, SQLITE_STATIC);
            break;
        default:
            rc = sqlite3_bind_null(st, idx);
        }
        if (rc != SQLITE_OK)
            return sqlite_fail(db, e, "bind");
    }
    return 0;
}

static int res_add_row(db_res_t *r, sqlite3_stmt *st, int *cap)
{
    if (r->nrows == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        char **n = realloc(r->cells, (size_t)*cap * (size_t)r->ncols * sizeof *n);
        if (!n)
            return -1;
        r->cells = n;
    }
    char **row = r->cells + (size_t)r->nrows * (size_t)r->ncols;
    for (int c = 0; c < r->ncols; c++)
        row[c] = NULL;
    r->nrows++; /* counted before filling so db_res_free frees a partial row */
    for (int c = 0; c < r->ncols; c++) {
        const unsigned char *t = sqlite3_column_text(st, c);
        if (t && !(row[c] = strdup((const char *)t)))
            return -1;
    }
    return 0;
}

db_res_t *db_query(db_t *db, err_t *e, const char *sql, int n, const db_val *args)
{
    sqlite3_stmt *st = prepare(db, e, sql);
    if (!st)
        return NULL;
    db_res_t *r = calloc(1, sizeof *r);
    if (!r) {
        err_set(e, ERR_INTERNAL, "out of memory");
        release(db, st);
        return NULL;
    }
    if (bind_args(db, st, e, n, args) < 0)
        goto fail;
    r->ncols = sqlite3_column_count(st);
    int cap = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (res_add_row(r, st, &cap) < 0) {
            err_set(e, ERR_INTERNAL, "out of memory");
            goto fail;
        }
    }
    if (rc != SQLITE_DONE) {
        sqlite_fail(db, e, "query");
        goto fail;
    }
    r->changes = sqlite3_changes(db->h);
    release(db, st);
    return r;
fail:
    release(db, st);
    db_res_free(r);
    return NULL;
}

int db_exec_script(db_t *db, err_t *e, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "sql: %s", msg ? msg : sqlite3_errmsg(db->h));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int db_begin(db_t *db, err_t *e)
{
    /* IMMEDIATE takes the write lock now, so a read-then-write check (the
     * overselling check) cannot race another writer. */
    return db_exec(db, e, "BEGIN IMMEDIATE", DB_NOARGS) < 0 ? -1 : 0;
}

int db_commit(db_t *db, err_t *e) { return db_exec(db, e, "COMMIT", DB_NOARGS) < 0 ? -1 : 0; }

void db_rollback(db_t *db)
{
    if (!sqlite3_get_autocommit(db->h))
        db_exec(db, NULL, "ROLLBACK", DB_NOARGS);
}
