/* db_sqlite.c - the SQLite backend of db.h.
 *
 * Each db_t is one connection, used by one thread at a time (the API keeps a
 * pool).  Statements are prepared once per connection and cached by their SQL
 * text: queries are literals or a few filter combinations, so the cache
 * stays small and a request pays no parse cost.
 *
 * The data version is kept in this process (db_version.h): it sees only
 * this process's writes, which is why db_claim keeps other processes out.
 *
 * Nothing here calls db.h's public operations (db_common.c calls in
 * through db_sqlite_backend): the sq_* functions call each other. */
#include "db_backend.h"
#include "db_version.h"
#include "strutil.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STMT_CACHE 128
/* How long a statement waits for another connection's write lock. */
#define BUSY_TIMEOUT_MS 10000

typedef struct sq {
    struct db base; /* first: a db_t * is an sq_t * */
    sqlite3 *h;
    struct {
        char *sql; /* a copy: callers may build SQL in reused buffers */
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
    int ncached;
    fifo_lock_t *write_lock; /* shared by the process's connections, or NULL */
    bool holds_write_lock;
    bool in_read; /* inside a transaction of db_read_begin */
    dbv_t *version;         /* the database's data version */
    bool dirty;             /* the open transaction has written */
    int claim_fd;           /* db_claim's lock on the file, or -1 */
} sq_t;

static sq_t *sq(db_t *db) { return (sq_t *)db; }

static int sq_exec_script(sq_t *db, err_t *e, const char *sql);
static void sq_read_end(sq_t *db);

static int sqlite_fail(sq_t *db, err_t *e, const char *what)
{
    int code = sqlite3_extended_errcode(db->h);
    enum err_kind k = (code & 0xff) == SQLITE_CONSTRAINT ? ERR_CONSTRAINT : ERR_INTERNAL;
    return err_set(e, k, "%s: %s", what, sqlite3_errmsg(db->h));
}

/* SQLite's own busy handler (sqlite3_busy_timeout) sleeps 1, 2, 5, 10 ... then
 * 100 ms at a time: under concurrent writes a waiter that keeps losing the
 * race sleeps hundreds of milliseconds while the lock is free most of that
 * time, and every request queued behind its worker thread waits with it
 * (docs/PERFORMANCE.md: write p99 0.7-0.9 s under 16 clients).  A write holds
 * the lock for well under a millisecond, so poll briskly instead: 50 us
 * doubling to 1 ms, for BUSY_TIMEOUT_MS in all. */
static int on_busy(void *arg, int count)
{
    (void)arg;
    long us = count < 5 ? 50L << count : 1000L; /* 50 100 200 400 800 1000 ... */
    /* Elapsed time, approximately: the sum of the sleeps so far. */
    long long slept = count < 5 ? 50LL * ((1LL << count) - 1) : 1550LL + (count - 5) * 1000LL;
    if (slept >= BUSY_TIMEOUT_MS * 1000LL)
        return 0; /* give up: the statement answers SQLITE_BUSY */
    struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    return 1;
}

/* A file that group or others may read or write: refused, naming the fix. */
static int check_mode(const char *file, const struct stat *st, err_t *e)
{
    if ((st->st_mode & 077) == 0)
        return 0;
    return err_set(e, ERR_INPUT,
                   "%s is readable or writable by group or others (mode %04o): it holds "
                   "password hashes and node secrets; run chmod 600 %s",
                   file, (unsigned)(st->st_mode & 07777), file);
}

/* The database is created 0600 here, not by SQLite (0644 less the umask),
 * and SQLite gives its -wal and -shm the database's mode.  An existing
 * file, or sidecar, open to others is refused rather than fixed: a chmod
 * would not take back what others may have copied or opened already. */
static int check_private(const char *path, err_t *e)
{
    if (!*path || !strcmp(path, ":memory:"))
        return 0;
    /* Only a file that does not exist yet is opened here: closing any
     * descriptor of a database drops every POSIX lock this process holds on
     * it (the pool's other connections), and another SQLite process would
     * then take itself for the last user and checkpoint away the live WAL. */
    int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    else if (errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "cannot create database %s: %s", path, strerror(errno));
    struct stat st;
    if (stat(path, &st) < 0)
        return err_set(e, ERR_INTERNAL, "cannot stat %s: %s", path, strerror(errno));
    if (check_mode(path, &st, e) < 0)
        return -1;
    static const char *const sidecars[] = {"-wal", "-shm"};
    for (size_t i = 0; i < sizeof sidecars / sizeof sidecars[0]; i++) {
        char side[4096];
        if (snprintf(side, sizeof side, "%s%s", path, sidecars[i]) >= (int)sizeof side)
            return err_set(e, ERR_INPUT, "database path %s is too long", path);
        if (stat(side, &st) < 0) {
            if (errno == ENOENT)
                continue;
            return err_set(e, ERR_INTERNAL, "cannot stat %s: %s", side, strerror(errno));
        }
        if (check_mode(side, &st, e) < 0)
            return -1;
    }
    return 0;
}

/* What a sqlite: URL names: "sqlite:/p" and "sqlite:///p" are /p,
 * "sqlite:p" a relative p (and "sqlite::memory:" SQLite's in-memory
 * database); NULL with e set for an authority ("sqlite://host/p") or no
 * file at all. */
static const char *sqlite_path(const char *url, const char *target, err_t *e)
{
    if (target != url && strncmp(target, "//", 2) == 0) {
        if (target[2] != '/') {
            err_set(e, ERR_INPUT,
                    "database URL %s names a host: a SQLite database is a local file "
                    "(sqlite:/path/to/db or sqlite:///path/to/db)",
                    url);
            return NULL;
        }
        target += 2;
    }
    if (!*target) {
        err_set(e, ERR_INPUT, "database URL \"%s\" names no file (sqlite:/path/to/db)", url);
        return NULL;
    }
    return target;
}

static void sq_close(sq_t *db);

static db_t *sq_open(const char *url, const char *target, err_t *e)
{
    const char *path = sqlite_path(url, target, e);
    if (!path || check_private(path, e) < 0)
        return NULL;
    sq_t *db = calloc(1, sizeof *db);
    if (!db) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    db->base.be = &db_sqlite_backend;
    db->claim_fd = -1;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &db->h, flags, NULL) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "cannot open database %s: %s", path,
                db->h ? sqlite3_errmsg(db->h) : "out of memory");
        sqlite3_close(db->h);
        free(db);
        return NULL;
    }
    if (sqlite3_busy_handler(db->h, on_busy, NULL) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "cannot set the busy handler of %s: %s", path,
                sqlite3_errmsg(db->h));
        sqlite3_close(db->h);
        free(db);
        return NULL;
    }
    /* WAL lets readers run while one writer commits; synchronous=FULL keeps
     * every acknowledged API change durable across a power loss. */
    if (sq_exec_script(db, e,
                       "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                       "PRAGMA foreign_keys=ON;") < 0) {
        sq_close(db);
        return NULL;
    }
    /* Only now: the pragmas are no change of the data, and count for
     * nothing. */
    if (!(db->version = dbv_get(sqlite3_db_filename(db->h, "main"), e))) {
        sq_close(db);
        return NULL;
    }
    return &db->base;
}

static void sq_set_write_lock(sq_t *db, fifo_lock_t *lock) { db->write_lock = lock; }

static void count_commit(sq_t *db)
{
    if (db->version)
        dbv_move(db->version, DB_FEED_WRITES);
}

/* flock, not fcntl: SQLite's own locks on the file are fcntl locks, which
 * an flock neither takes nor conflicts with. */
static int sq_claim(sq_t *db, err_t *e)
{
    const char *path = sqlite3_db_filename(db->h, "main");
    if (!path || !*path)
        return 0; /* an in-memory database belongs to this connection anyway */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "cannot open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int err = errno;
        close(fd);
        if (err == EWOULDBLOCK)
            return err_set(e, ERR_CONFLICT,
                           "%s is in use by another process (one imperium-api per SQLite "
                           "database)",
                           path);
        return err_set(e, ERR_INTERNAL, "cannot lock %s: %s", path, strerror(err));
    }
    db->claim_fd = fd;
    return 0;
}

static void write_unlock(sq_t *db)
{
    if (db->holds_write_lock) {
        db->holds_write_lock = false;
        fifo_unlock(db->write_lock);
    }
}

static void sq_close(sq_t *db)
{
    if (!db)
        return;
    write_unlock(db);
    for (int i = 0; i < db->ncached; i++) {
        sqlite3_finalize(db->cache[i].st);
        free(db->cache[i].sql);
    }
    sqlite3_close(db->h);
    if (db->claim_fd >= 0)
        close(db->claim_fd);
    dbv_put(db->version);
    free(db);
}

static sqlite3_stmt *prepare(sq_t *db, err_t *e, const char *sql)
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

static bool is_cached(sq_t *db, sqlite3_stmt *st)
{
    for (int i = 0; i < db->ncached; i++)
        if (db->cache[i].st == st)
            return true;
    return false;
}

static void release(sq_t *db, sqlite3_stmt *st)
{
    if (is_cached(db, st)) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    } else {
        sqlite3_finalize(st);
    }
}

static int bind_args(sq_t *db, sqlite3_stmt *st, err_t *e, int n, const db_val *args)
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

/* The result's columns and their names (db_col_name). */
static int res_names(db_res_t *r, sqlite3_stmt *st)
{
    int cols = sqlite3_column_count(st);
    if (cols == 0)
        return 0;
    if (!(r->names = calloc((size_t)cols, sizeof *r->names)))
        return -1;
    r->ncols = cols; /* names are freed by ncols */
    for (int c = 0; c < cols; c++) {
        const char *name = sqlite3_column_name(st, c);
        if (!name || !(r->names[c] = strdup(name)))
            return -1;
    }
    return 0;
}

/* A statement that changed rows: outside a transaction it has committed by
 * the time it returns; inside one, it counts when db_commit succeeds.  One
 * that changed none (an upsert finding the row as it wants it: a node's
 * periodic status report) changes nothing a reader could see. */
static void note_write(sq_t *db, bool changed_rows)
{
    if (!changed_rows)
        return;
    if (sqlite3_get_autocommit(db->h))
        count_commit(db);
    else
        db->dirty = true;
}

static db_res_t *sq_query(sq_t *db, err_t *e, const char *sql, int n, const db_val *args)
{
    sqlite3_stmt *st = prepare(db, e, sql);
    if (!st)
        return NULL;
    /* A write (or BEGIN) in a read transaction: end the read first, so the
     * write runs as it would without it. */
    if (db->in_read && !sqlite3_stmt_readonly(st))
        sq_read_end(db);
    db_res_t *r = calloc(1, sizeof *r);
    if (!r) {
        err_set(e, ERR_INTERNAL, "out of memory");
        release(db, st);
        return NULL;
    }
    sqlite3_int64 changes_before = sqlite3_total_changes64(db->h);
    if (bind_args(db, st, e, n, args) < 0)
        goto fail;
    if (res_names(r, st) < 0) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto fail;
    }
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
    note_write(db, sqlite3_total_changes64(db->h) != changes_before);
    return r;
fail:
    release(db, st);
    note_write(db, sqlite3_total_changes64(db->h) != changes_before);
    db_res_free(r);
    return NULL;
}

/* A statement whose rows are not needed: rows changed, or -1. */
static long long sq_exec(sq_t *db, err_t *e, const char *sql, int n, const db_val *args)
{
    return db_res_changes(sq_query(db, e, sql, n, args));
}

static int sq_exec_script(sq_t *db, err_t *e, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db->h, sql, NULL, NULL, &msg);
    note_write(db, true); /* scripts are migrations: assume they wrote */
    if (rc != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "sql: %s", msg ? msg : sqlite3_errmsg(db->h));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int sq_read_begin(sq_t *db, err_t *e)
{
    if (db->in_read || !sqlite3_get_autocommit(db->h))
        return 0;
    if (sq_exec(db, e, "BEGIN", DB_NOARGS) < 0)
        return -1;
    db->in_read = true;
    return 0;
}

static void sq_read_end(sq_t *db)
{
    if (!db->in_read)
        return;
    db->in_read = false;
    if (!sqlite3_get_autocommit(db->h) && sq_exec(db, NULL, "COMMIT", DB_NOARGS) < 0)
        sq_exec(db, NULL, "ROLLBACK", DB_NOARGS);
}

static int sq_begin(sq_t *db, err_t *e)
{
    sq_read_end(db);
    if (db->write_lock && !db->holds_write_lock) {
        fifo_lock(db->write_lock);
        db->holds_write_lock = true;
    }
    /* IMMEDIATE takes the write lock now, so a read-then-write check (the
     * overselling check) cannot race another writer. */
    if (sq_exec(db, e, "BEGIN IMMEDIATE", DB_NOARGS) < 0) {
        if (sqlite3_get_autocommit(db->h))
            write_unlock(db);
        return -1;
    }
    db->dirty = false; /* SQLite counts BEGIN IMMEDIATE as a write: it wrote nothing */
    return 0;
}

static int sq_commit(sq_t *db, err_t *e)
{
    long long rc = sq_exec(db, e, "COMMIT", DB_NOARGS);
    /* A failed COMMIT may leave the transaction open: db_rollback ends it. */
    if (sqlite3_get_autocommit(db->h)) {
        if (rc >= 0 && db->dirty)
            count_commit(db);
        db->dirty = false;
        write_unlock(db);
    }
    return rc < 0 ? -1 : 0;
}

static void sq_rollback(sq_t *db)
{
    db->in_read = false;
    db->dirty = false;
    if (!sqlite3_get_autocommit(db->h))
        sq_exec(db, NULL, "ROLLBACK", DB_NOARGS);
    if (sqlite3_get_autocommit(db->h))
        write_unlock(db);
}

/* ---- schema changes ---- */

/* PRAGMA foreign_keys is a no-op inside a transaction: it is switched
 * before BEGIN and after COMMIT / ROLLBACK. */
static int sq_schema_begin(sq_t *db, err_t *e)
{
    if (sq_exec_script(db, e, "PRAGMA foreign_keys=OFF") < 0)
        return -1;
    if (sq_begin(db, e) < 0) {
        sq_exec_script(db, NULL, "PRAGMA foreign_keys=ON");
        return -1;
    }
    return 0;
}

static void sq_schema_rollback(sq_t *db)
{
    sq_rollback(db);
    sq_exec_script(db, NULL, "PRAGMA foreign_keys=ON");
}

static int sq_schema_commit(sq_t *db, err_t *e)
{
    /* Rows: table, rowid, parent, fkid of every reference to a missing row. */
    db_res_t *bad = sq_query(db, e, "PRAGMA foreign_key_check", DB_NOARGS);
    int rc = -1;
    if (bad && bad->nrows > 0)
        err_set(e, ERR_INTERNAL,
                "foreign key check: row %s of table %s refers to a missing row of %s (and "
                "%d more)",
                db_get(bad, 0, 1) ? db_get(bad, 0, 1) : "?", db_get(bad, 0, 0),
                db_get(bad, 0, 2), bad->nrows - 1);
    else if (bad)
        rc = sq_commit(db, e);
    db_res_free(bad);
    if (rc < 0) {
        sq_schema_rollback(db);
        return -1;
    }
    return sq_exec_script(db, e, "PRAGMA foreign_keys=ON");
}

/* Does `s` start with `word` (case-insensitive), not followed by more of
 * an identifier? */
static bool word_at(const char *s, const char *word)
{
    size_t n = strlen(word);
    return strncasecmp(s, word, n) == 0 && !(isalnum((unsigned char)s[n]) || s[n] == '_');
}

static const char *skip_space(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    return s;
}

/* Where a column definition `id INTEGER PRIMARY KEY` of `sql` (a CREATE
 * TABLE statement) ends: AUTOINCREMENT goes there.  NULL when there is no
 * such column; *done when it already has AUTOINCREMENT. */
static const char *id_key_end(const char *sql, bool *done)
{
    static const char *const words[] = {"id", "INTEGER", "PRIMARY", "KEY"};
    *done = false;
    for (const char *p = strchr(sql, '('); p && *p; p = strpbrk(p + 1, "(,")) {
        const char *q = skip_space(p + 1);
        size_t i;
        for (i = 0; i < 4 && word_at(q, words[i]); i++)
            q = skip_space(q + strlen(words[i]));
        if (i < 4)
            continue;
        *done = word_at(q, "AUTOINCREMENT");
        if (*done || *q == ',' || *q == ')')
            return q;
    }
    return NULL;
}

/* `sql` (CREATE TABLE <table> (...)) as CREATE TABLE new_<table> with
 * AUTOINCREMENT on its id; NULL with e set (or *done when nothing to do). */
static char *autoincrement_sql(const char *table, const char *sql, bool *done, err_t *e)
{
    const char *open = strchr(sql, '(');
    bool header_ok = open && word_at(sql, "CREATE") && word_at(skip_space(sql + 6), "TABLE");
    if (header_ok) {
        /* A renamed table's name is quoted: CREATE TABLE "x" (...). */
        const char *name = skip_space(skip_space(sql + 6) + 5);
        bool quoted = *name == '"';
        name += quoted;
        header_ok = word_at(name, table) && (!quoted || name[strlen(table)] == '"') &&
                    skip_space(name + strlen(table) + quoted) == open;
    }
    const char *end = header_ok ? id_key_end(sql, done) : NULL;
    if (!end) {
        err_set(e, ERR_INTERNAL,
                "cannot make the ids of table %s grow only: its definition is not "
                "\"CREATE TABLE %s (... id INTEGER PRIMARY KEY ...)\"",
                table, table);
        return NULL;
    }
    if (*done)
        return NULL;
    char *out = str_printf("CREATE TABLE new_%s %.*s AUTOINCREMENT%s", table,
                           (int)(end - open), open, end);
    if (!out)
        err_set(e, ERR_INTERNAL, "out of memory");
    return out;
}

/* Steps 4-8 of SQLite's procedure: create new_X, copy, drop X, rename,
 * recreate X's indexes and triggers (in `res` rows after the table's). */
static int rebuild_table(sq_t *db, err_t *e, const char *table, const char *create,
                         const db_res_t *res)
{
    buf_t b = {0};
    int rc = buf_appends(&b, create);
    char *copy = str_printf(";INSERT INTO new_%s SELECT * FROM %s;DROP TABLE %s;"
                            "ALTER TABLE new_%s RENAME TO %s;",
                            table, table, table, table, table);
    rc |= copy ? buf_appends(&b, copy) : -1;
    free(copy);
    for (int i = 0; i < res->nrows; i++)
        if (strcmp(db_get(res, i, 0), "table") != 0)
            rc |= buf_appends(&b, db_get(res, i, 1)) | buf_appends(&b, ";");
    if (rc < 0) {
        buf_free(&b);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    rc = sq_exec_script(db, e, b.data);
    buf_free(&b);
    return rc;
}

static int sq_ids_never_reused(sq_t *db, err_t *e, const char *table)
{
    /* The table first, then what DROP TABLE takes with it.  Automatic
     * indexes of UNIQUE constraints have no sql: the new table makes its own. */
    db_res_t *res = sq_query(db, e,
                             "SELECT type, sql FROM sqlite_master WHERE tbl_name = $1 AND "
                             "sql IS NOT NULL AND (type = 'table' AND name = $1 OR "
                             "type IN ('index', 'trigger')) ORDER BY type != 'table'",
                             DB_ARGS(DB_TEXT(table)));
    if (!res)
        return -1;
    int rc = 0;
    if (res->nrows == 0 || strcmp(db_get(res, 0, 0), "table") != 0) {
        rc = err_set(e, ERR_INTERNAL, "no table %s to make its ids grow only", table);
    } else {
        bool done = false;
        char *create = autoincrement_sql(table, db_get(res, 0, 1), &done, e);
        if (create)
            rc = rebuild_table(db, e, table, create, res);
        else if (!done)
            rc = -1;
        free(create);
    }
    db_res_free(res);
    return rc;
}

/* ---- id high marks (copying a database) ---- */

/* One integer of a one-row query (`dflt` without a row or for NULL); -1
 * with e. */
static int sq_int(sq_t *db, err_t *e, long long dflt, long long *out, const char *sql, int n,
                  const db_val *args)
{
    db_res_t *r = sq_query(db, e, sql, n, args);
    if (!r)
        return -1;
    *out = r->nrows > 0 && !db_is_null(r, 0, 0) ? db_get_int(r, 0, 0) : dflt;
    db_res_free(r);
    return 0;
}

/* sqlite_sequence's mark (AUTOINCREMENT), or MAX(id) when there is none. */
static long long sq_id_high(sq_t *db, err_t *e, const char *table)
{
    char *max_sql = sqlite3_mprintf("SELECT MAX(id) FROM \"%w\"", table);
    if (!max_sql)
        return err_set(e, ERR_INTERNAL, "out of memory");
    long long max = 0, has_seq = 0, seq = 0;
    int rc = sq_int(db, e, 0, &max, max_sql, DB_NOARGS);
    sqlite3_free(max_sql);
    if (rc == 0)
        rc = sq_int(db, e, 0, &has_seq, "SELECT COUNT(*) FROM sqlite_master WHERE name = "
                    "'sqlite_sequence'", DB_NOARGS);
    if (rc == 0 && has_seq)
        rc = sq_int(db, e, 0, &seq, "SELECT seq FROM sqlite_sequence WHERE name = $1",
                    DB_ARGS(DB_TEXT(table)));
    if (rc < 0)
        return -1;
    return seq > max ? seq : max;
}

/* Only an AUTOINCREMENT table keeps a mark (in sqlite_sequence). */
static int sq_id_set_high(sq_t *db, err_t *e, const char *table, long long high)
{
    db_res_t *r = sq_query(db, e, "SELECT sql FROM sqlite_master WHERE type = 'table' AND "
                                  "name = $1", DB_ARGS(DB_TEXT(table)));
    if (!r)
        return -1;
    bool autoinc = false;
    if (r->nrows == 1 && db_get(r, 0, 0))
        id_key_end(db_get(r, 0, 0), &autoinc);
    db_res_free(r);
    if (!autoinc)
        return err_set(e, ERR_INTERNAL,
                       "cannot keep the id high mark of table %s: it is not \"id INTEGER "
                       "PRIMARY KEY AUTOINCREMENT\" (db_ids_never_reused makes it so)",
                       table);
    long long now = sq_id_high(db, e, table);
    if (now < 0)
        return -1;
    if (high < now)
        high = now; /* never back: that would hand out used ids again */
    long long changed = sq_exec(db, e, "UPDATE sqlite_sequence SET seq = $2 WHERE name = $1",
                                DB_ARGS(DB_TEXT(table), DB_INT(high)));
    if (changed == 0)
        changed = sq_exec(db, e, "INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)",
                          DB_ARGS(DB_TEXT(table), DB_INT(high)));
    return changed < 0 ? -1 : 0;
}

/* ---- the backend's table: db_t * in, sq_t * on ---- */

static void op_close(db_t *db) { sq_close(sq(db)); }

static db_res_t *op_query(db_t *db, err_t *e, const char *sql, int n, const db_val *args)
{
    return sq_query(sq(db), e, sql, n, args);
}

static int op_exec_script(db_t *db, err_t *e, const char *sql)
{
    return sq_exec_script(sq(db), e, sql);
}

static int op_begin(db_t *db, err_t *e) { return sq_begin(sq(db), e); }
static int op_commit(db_t *db, err_t *e) { return sq_commit(sq(db), e); }
static void op_rollback(db_t *db) { sq_rollback(sq(db)); }
static int op_read_begin(db_t *db, err_t *e) { return sq_read_begin(sq(db), e); }
static void op_read_end(db_t *db) { sq_read_end(sq(db)); }
static int op_claim(db_t *db, err_t *e) { return sq_claim(sq(db), e); }
static int op_schema_begin(db_t *db, err_t *e) { return sq_schema_begin(sq(db), e); }
static int op_schema_commit(db_t *db, err_t *e) { return sq_schema_commit(sq(db), e); }
static void op_schema_rollback(db_t *db) { sq_schema_rollback(sq(db)); }
/* The data version lives in this process (db_version.h). */
static void op_notify(db_t *db) { dbv_move(sq(db)->version, DB_FEED_NOTICES); }

static void op_set_write_lock(db_t *db, fifo_lock_t *lock)
{
    sq_set_write_lock(sq(db), lock);
}

static int op_ids_never_reused(db_t *db, err_t *e, const char *table)
{
    return sq_ids_never_reused(sq(db), e, table);
}

static unsigned long long op_data_version(db_t *db, db_feed feed)
{
    return dbv_version(sq(db)->version, feed);
}

static unsigned long long op_data_wait(db_t *db, db_feed feed, unsigned long long since,
                                       long long deadline_ms)
{
    return dbv_wait(sq(db)->version, feed, since, deadline_ms);
}

/* One process per database (db_claim). */
static bool op_shared(db_t *db)
{
    (void)db;
    return false;
}

static int op_data_version_now(db_t *db, err_t *e, unsigned long long *v)
{
    (void)e;
    *v = dbv_version(sq(db)->version, DB_FEED_WRITES);
    return 0;
}

static long long op_id_high(db_t *db, err_t *e, const char *table)
{
    return sq_id_high(sq(db), e, table);
}

static int op_id_set_high(db_t *db, err_t *e, const char *table, long long high)
{
    return sq_id_set_high(sq(db), e, table, high);
}

const db_backend_t db_sqlite_backend = {
    .open = sq_open,
    .close = op_close,
    .query = op_query,
    .exec_script = op_exec_script,
    .begin = op_begin,
    .commit = op_commit,
    .rollback = op_rollback,
    .read_begin = op_read_begin,
    .read_end = op_read_end,
    .set_write_lock = op_set_write_lock,
    .claim = op_claim,
    .schema_begin = op_schema_begin,
    .schema_commit = op_schema_commit,
    .schema_rollback = op_schema_rollback,
    .ids_never_reused = op_ids_never_reused,
    .data_version = op_data_version,
    .notify = op_notify,
    .data_wait = op_data_wait,
    .shared = op_shared,
    .data_version_now = op_data_version_now,
    .id_high = op_id_high,
    .id_set_high = op_id_set_high,
};
