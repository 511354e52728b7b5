/* db_pg.c - the PostgreSQL backend of db.h.
 *
 * PostgreSQL backend, the design (docs/design/issue20/CONTRACT.md).  Each
 * db_t is one libpq connection, used by one thread at a time like SQLite's
 * (the API's pool).  Statements are prepared once per connection and
 * cached by their SQL text and the types bound (PQprepare, then
 * PQexecPrepared: sent unnamed each time, PostgreSQL parsed and planned every
 * statement again, 0.3-0.7 ms apiece); integers are bound as int8, text and
 * NULL untyped so the server infers them from the context; results are text
 * cells, BOOL cells "1"/"0" as SQLite gives them.
 *
 * Isolation: every write transaction (db_begin, and every write statement
 * outside one, which is wrapped here in BEGIN ... COMMIT) runs at READ
 * COMMITTED after taking one transaction-level advisory lock, the same for
 * all: writers are serialized across every process as SQLite's BEGIN
 * IMMEDIATE serializes them within one, so a read-then-write check cannot
 * race another writer and ids become visible in id order.  A read
 * transaction (db_read_begin) is REPEATABLE READ READ ONLY, one snapshot per
 * request; a write statement ends it first.
 *
 * The data version: a row this backend owns (imperium_data_version, made at
 * open), bumped by every transaction that changed rows, with
 * pg_notify('imperium', 'w<v>') in that same transaction.  Each process
 * keeps one hub per database URL: a dbv_t (db_version.c) for the two feeds
 * and a listener thread on a connection of its own (LISTEN imperium) that
 * moves DB_FEED_WRITES on the 'w' notifications of other processes and
 * DB_FEED_NOTICES on 'n' ones, and sends db_notify's NOTIFY (asked for
 * through an eventfd, so db_notify never blocks).  When it loses its
 * connection it reconnects with backoff and moves both feeds: it may have
 * missed some.  db_data_version_now reads the row itself, exact across
 * processes, for the response cache.
 *
 * Errors: SQLSTATE class 23 is ERR_CONSTRAINT; a lost connection, 40001,
 * 40P01, 55P03 (lock_timeout) and 57P01 are ERR_UNAVAILABLE.  A write outside a transaction that
 * failed so before its COMMIT is run again (3 tries); inside the caller's
 * transaction nothing is ever replayed.  The schema's DDL, written for
 * SQLite, is rewritten by db_pg_ddl.  No message carries the URL (it may
 * hold a password): callers log it with db_url_redacted.
 *
 * Nothing here calls db.h's public operations (db_common.c calls in through
 * db_pg_backend): the pg_* functions call each other. */
#include "db_pg.h"
#include "clock.h"
#include "db_backend.h"
#include "db_version.h"
#include "log.h"
#include "strutil.h"

#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* The one advisory lock of every write transaction: "Imperium" in ASCII. */
#define WRITE_LOCK_SQL "SELECT pg_advisory_xact_lock(5291008718243722605)"
#define AUTOCOMMIT_TRIES 3
#define BOOL_OID 16
#define INT8_OID 20
/* Every session's bounds (a URL's options= replaces them): a writer
 * waiting for the writers' lock (held by a stuck instance) gives up after
 * 30 s with a 503 rather than holding its request for ever; a transaction
 * left idle for 60 s (its instance stopped, SIGSTOP or a hung handler) is
 * ended by the server, which frees the lock for every other instance. */
#define SESSION_OPTIONS "-c lock_timeout=30s -c idle_in_transaction_session_timeout=60s"
/* Prepared statements kept per connection: the API's queries are literals
 * or a few filter combinations; beyond, statements go unnamed. */
#define STMT_CACHE 128
/* How often the listener wakes with nothing to do (to see a stop). */
#define LISTEN_TICK_MS 1000

typedef struct hub hub_t;

/* A statement prepared on the connection: its name ("s<n>"), its SQL text
 * and the types it was prepared with ('i' int8, 'u' untyped, one per
 * parameter). */
typedef struct {
    char name[16];
    char *sql;
    char *types;
} stmt_t;

typedef struct pg {
    struct db base; /* first: a db_t * is a pg_t * */
    PGconn *c;
    stmt_t stmts[STMT_CACHE];
    int nstmts;
    unsigned next_id; /* never reused on a connection: a stale name is never taken again */
    hub_t *hub;
    fifo_lock_t *write_lock; /* shared by the process's connections, or NULL */
    bool holds_write_lock;
    bool in_txn;  /* a write transaction (db_begin) is open */
    bool in_read; /* a read transaction (db_read_begin) is open */
    bool dirty;   /* the write transaction changed rows */
    bool lost;    /* the connection died inside a transaction: only ending it helps */
} pg_t;

static pg_t *pg(db_t *db) { return (pg_t *)db; }

/* ---- the hub: one per process and database URL ---- */

struct hub {
    char *url;
    int refs; /* under hubs_lock */
    dbv_t *v;
    int efd; /* eventfd: db_notify's notices to send, and the stop request */
    atomic_bool stop;
    pthread_mutex_t seen_lock;
    unsigned long long seen; /* the highest 'w' version moved for */
    /* The listener thread's alone once it runs: */
    PGconn *listen;
    bool notice_pending;
    pthread_t thread;
    hub_t *next;
};

static pthread_mutex_t hubs_lock = PTHREAD_MUTEX_INITIALIZER;
static hub_t *hubs;

/* libpq prints NOTICEs ("relation already exists, skipping") on stderr. */
static void quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* libpq's messages end with a newline and may run on: the first line. */
static int first_line(const char *msg) { return (int)strcspn(msg ? msg : "", "\n"); }

/* A new connection (no URL in e: it may hold a password); NULL with e. */
static PGconn *connect_url(const char *url, err_t *e)
{
    char *why = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &why);
    if (!opts) {
        /* libpq's reason may quote part of the URL: not repeated. */
        PQfreemem(why);
        err_set(e, ERR_INPUT, "the database URL is not a valid PostgreSQL connection URI "
                              "(postgresql://user@host:port/database?option=value)");
        return NULL;
    }
    PQconninfoFree(opts);
    /* Bounds the URL may override (it comes after them): a database host
     * that does not answer, or a connection that died half-open, fails in
     * seconds instead of holding a thread (and perhaps the writers' lock). */
    static const char *const keys[] = {"connect_timeout", "keepalives", "keepalives_idle",
                                       "keepalives_interval", "keepalives_count",
                                       "tcp_user_timeout", "options", "dbname", NULL};
    const char *values[] = {"5", "1", "10", "5", "3", "30000", SESSION_OPTIONS, url, NULL};
    PGconn *c = PQconnectdbParams(keys, values, 1);
    if (!c) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(c);
        err_set(e, ERR_UNAVAILABLE, "cannot connect to PostgreSQL: %.*s", first_line(msg), msg);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

/* Move DB_FEED_WRITES for a commit that made version v, unless a move for
 * v or a later one was made already: writers bump the row one after the
 * other, so the data of every version up to the highest seen is visible. */
static void hub_saw(hub_t *h, unsigned long long v)
{
    pthread_mutex_lock(&h->seen_lock);
    bool newer = v > h->seen;
    if (newer)
        h->seen = v;
    pthread_mutex_unlock(&h->seen_lock);
    if (newer)
        dbv_move(h->v, DB_FEED_WRITES);
}

static PGconn *listen_connect(const char *url, err_t *e)
{
    PGconn *c = connect_url(url, e);
    if (!c)
        return NULL;
    PGresult *r = PQexec(c, "LISTEN imperium");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        const char *msg = PQerrorMessage(c);
        err_set(e, ERR_UNAVAILABLE, "LISTEN imperium: %.*s", first_line(msg), msg);
        PQclear(r);
        PQfinish(c);
        return NULL;
    }
    PQclear(r);
    return c;
}

static void hub_take_notifies(hub_t *h)
{
    PGnotify *n;
    int own = PQbackendPID(h->listen);
    while ((n = PQnotifies(h->listen))) {
        if (n->extra[0] == 'w')
            hub_saw(h, strtoull(n->extra + 1, NULL, 10));
        else if (n->extra[0] == 'n' && n->be_pid != own) /* not our own echo */
            dbv_move(h->v, DB_FEED_NOTICES);
        PQfreemem(n);
    }
}

/* Take what db_notify asked for: the eventfd's count. */
static void hub_read_efd(hub_t *h)
{
    uint64_t k;
    if (read(h->efd, &k, sizeof k) == (ssize_t)sizeof k && k > 0)
        h->notice_pending = true;
}

/* One turn of the listener: wait for the server or db_notify, then send
 * the pending notice and take the notifications.  -1: connection lost. */
static int hub_step(hub_t *h)
{
    struct pollfd p[2] = {{.fd = PQsocket(h->listen), .events = POLLIN},
                          {.fd = h->efd, .events = POLLIN}};
    if (poll(p, 2, LISTEN_TICK_MS) < 0 && errno != EINTR)
        return -1;
    if (p[1].revents & POLLIN)
        hub_read_efd(h);
    if (h->notice_pending && !atomic_load(&h->stop)) {
        PGresult *r = PQexec(h->listen, "NOTIFY imperium, 'n'");
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok)
            return -1;
        h->notice_pending = false;
    }
    if ((p[0].revents & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(h->listen))
        return -1;
    hub_take_notifies(h);
    return PQstatus(h->listen) == CONNECTION_OK ? 0 : -1;
}

/* Sleep ms, or less when stopped; notices asked for meanwhile are kept. */
static void hub_sleep(hub_t *h, long long ms)
{
    long long deadline = now_ms() + ms;
    while (!atomic_load(&h->stop)) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return;
        struct pollfd p = {.fd = h->efd, .events = POLLIN};
        if (poll(&p, 1, left > LISTEN_TICK_MS ? LISTEN_TICK_MS : (int)left) > 0)
            hub_read_efd(h);
    }
}

/* The listener had lost its connection: connect again with backoff, then
 * move both feeds (whatever was notified meanwhile is lost). */
static void hub_reconnect(hub_t *h)
{
    for (int failures = 1; !atomic_load(&h->stop); failures++) {
        hub_sleep(h, backoff_ms(failures));
        if (atomic_load(&h->stop))
            return;
        err_t e = {0};
        if ((h->listen = listen_connect(h->url, &e))) {
            log_info("postgresql: the listener is connected again");
            dbv_move(h->v, DB_FEED_WRITES);
            dbv_move(h->v, DB_FEED_NOTICES);
            return;
        }
        log_warn("postgresql: the listener cannot reconnect: %s", e.msg);
    }
}

static void *hub_run(void *arg)
{
    hub_t *h = arg;
    while (!atomic_load(&h->stop)) {
        if (hub_step(h) == 0)
            continue;
        const char *msg = PQerrorMessage(h->listen);
        log_warn("postgresql: the listener lost its connection (%.*s): reconnecting",
                 first_line(msg), msg);
        PQfinish(h->listen);
        h->listen = NULL;
        hub_reconnect(h);
    }
    return NULL;
}

static void hub_free(hub_t *h)
{
    if (h->listen)
        PQfinish(h->listen);
    if (h->efd >= 0)
        close(h->efd);
    dbv_put(h->v);
    pthread_mutex_destroy(&h->seen_lock);
    free(h->url);
    free(h);
}

/* Lists ordered by name come out in byte order on SQLite; a database made
 * with another collation orders them otherwise (docs/OPERATING.md says to
 * create it with C): said, not refused (it still works).  Asked once per
 * process and database, on the new hub's listener connection. */
static void check_collation(PGconn *c)
{
    /* datlocprovider 'i': ICU, whose orders are never byte order. */
    PGresult *r = PQexec(c, "SELECT CASE WHEN datlocprovider = 'i' THEN 'ICU' "
                            "ELSE datcollate END FROM pg_database "
                            "WHERE datname = current_database()");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        const char *coll = PQgetvalue(r, 0, 0);
        /* C.UTF-8 orders by code point: UTF-8's byte order too. */
        bool bytewise = !strcmp(coll, "C") || !strcmp(coll, "POSIX") ||
                        !strcasecmp(coll, "C.UTF-8") || !strcasecmp(coll, "C.utf8");
        if (!bytewise)
            log_warn("postgresql: the database's collation is %s, not C: lists ordered by "
                     "name (tags, distros, legions) will not be in the byte order SQLite "
                     "gives (docs/OPERATING.md, \"The database\")", coll);
    }
    PQclear(r);
}

static hub_t *hub_new(const char *url, err_t *e)
{
    hub_t *h = calloc(1, sizeof *h);
    if (!h || !(h->url = strdup(url))) {
        free(h);
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    h->refs = 1;
    h->efd = -1;
    atomic_init(&h->stop, false);
    int rc = pthread_mutex_init(&h->seen_lock, NULL);
    if (rc != 0) {
        err_set(e, ERR_INTERNAL, "cannot make the listener's lock: %s", strerror(rc));
        free(h->url);
        free(h);
        return NULL;
    }
    if (!(h->v = dbv_get(NULL, e)) || !(h->listen = listen_connect(url, e))) {
        hub_free(h);
        return NULL;
    }
    check_collation(h->listen);
    if ((h->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        err_set(e, ERR_INTERNAL, "eventfd: %s", strerror(errno));
        hub_free(h);
        return NULL;
    }
    rc = pthread_create(&h->thread, NULL, hub_run, h);
    if (rc != 0) {
        err_set(e, ERR_INTERNAL, "cannot start the PostgreSQL listener: %s", strerror(rc));
        hub_free(h);
        return NULL;
    }
    return h;
}

static hub_t *hub_get(const char *url, err_t *e)
{
    pthread_mutex_lock(&hubs_lock);
    hub_t *h = hubs;
    while (h && strcmp(h->url, url) != 0)
        h = h->next;
    if (h) {
        h->refs++;
    } else if ((h = hub_new(url, e))) {
        h->next = hubs;
        hubs = h;
    }
    pthread_mutex_unlock(&hubs_lock);
    return h;
}

static void hub_wake(hub_t *h)
{
    uint64_t one = 1;
    if (write(h->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_warn("postgresql: cannot wake the listener: %s", strerror(errno));
}

static void hub_put(hub_t *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&hubs_lock);
    bool last = --h->refs == 0;
    if (last) {
        hub_t **p = &hubs;
        while (*p != h)
            p = &(*p)->next;
        *p = h->next;
    }
    pthread_mutex_unlock(&hubs_lock);
    if (!last)
        return;
    atomic_store(&h->stop, true);
    hub_wake(h);
    pthread_join(h->thread, NULL);
    hub_free(h);
}

/* ---- errors and round trips ---- */

static bool state_is(const char *state, const char *want)
{
    return state && strcmp(state, want) == 0;
}

/* SQLSTATEs after which the server has gone: class 08 (but 08P01, a
 * protocol violation such as a wrong parameter count) and 57P01-57P03. */
static bool state_lost(const char *state)
{
    if (!state)
        return false;
    if (strncmp(state, "08", 2) == 0)
        return strcmp(state, "08P01") != 0;
    return state_is(state, "57P01") || state_is(state, "57P02") || state_is(state, "57P03");
}

static bool res_ok(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* Fill e from a failed result r (NULL: out of memory or no answer);
 * always -1.  A connection lost inside a transaction stays so (db->lost)
 * until the transaction is ended. */
static int pg_fail(pg_t *db, err_t *e, const PGresult *r, const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    bool lost = PQstatus(db->c) != CONNECTION_OK || state_lost(state);
    if (lost && (db->in_txn || db->in_read))
        db->lost = true;
    enum err_kind k = ERR_INTERNAL;
    if (lost || state_is(state, "40001") || state_is(state, "40P01") ||
        state_is(state, "55P03"))
        k = ERR_UNAVAILABLE;
    else if (state && strncmp(state, "23", 2) == 0)
        k = ERR_CONSTRAINT;
    if (!msg)
        msg = PQerrorMessage(db->c);
    return err_set(e, k, "%s: %s%.*s", what,
                   lost ? "the connection to the database was lost: " : "", first_line(msg),
                   msg);
}

/* The statement prepared for sql with these parameter types, or NULL. */
static stmt_t *stmt_find(pg_t *db, const char *sql, const char *types)
{
    for (int i = 0; i < db->nstmts; i++)
        if (strcmp(db->stmts[i].sql, sql) == 0 && strcmp(db->stmts[i].types, types) == 0)
            return &db->stmts[i];
    return NULL;
}

static void stmt_drop(pg_t *db, stmt_t *st)
{
    free(st->sql);
    free(st->types);
    *st = db->stmts[--db->nstmts];
}

/* Forget every prepared statement (the session that had them is gone). */
static void stmts_forget(pg_t *db)
{
    while (db->nstmts > 0)
        stmt_drop(db, &db->stmts[0]);
}

/* Prepare sql on the connection and keep it; NULL with *res the server's
 * refusal (the caller's to clear), or NULL and no result when the cache is
 * full or memory short: the statement then goes unnamed. */
static stmt_t *stmt_prepare(pg_t *db, const char *sql, int n, const Oid *types,
                            const char *sig, PGresult **res)
{
    *res = NULL;
    if (db->nstmts == STMT_CACHE)
        return NULL;
    stmt_t *st = &db->stmts[db->nstmts];
    st->sql = strdup(sql);
    st->types = strdup(sig);
    if (!st->sql || !st->types) {
        free(st->sql);
        free(st->types);
        return NULL;
    }
    snprintf(st->name, sizeof st->name, "s%u", db->next_id++);
    PGresult *r = PQprepare(db->c, st->name, sql, n, types);
    if (!res_ok(r)) {
        free(st->sql);
        free(st->types);
        *res = r;
        return NULL;
    }
    PQclear(r);
    db->nstmts++;
    return st;
}

/* 0A000 "cached plan must not change result type": the schema changed
 * under a prepared SELECT (another instance migrated it). */
static bool plan_stale(const PGresult *r)
{
    return !res_ok(r) && state_is(PQresultErrorField(r, PG_DIAG_SQLSTATE), "0A000");
}

/* Before a statement: the connection, reset when it was lost outside a
 * transaction (inside one, the transaction is gone: the caller must end it). */
static int pg_ready(pg_t *db, err_t *e)
{
    if (db->lost)
        return err_set(e, ERR_UNAVAILABLE, "the connection to the database was lost in this "
                                           "transaction: it must be rolled back");
    if (PQstatus(db->c) == CONNECTION_OK)
        return 0;
    stmts_forget(db); /* a new session has none of them */
    PQreset(db->c);
    if (PQstatus(db->c) == CONNECTION_OK)
        return 0;
    const char *msg = PQerrorMessage(db->c);
    return err_set(e, ERR_UNAVAILABLE, "cannot reach PostgreSQL: %.*s", first_line(msg), msg);
}

/* A statement without parameters (several, separated by ";"). */
static int pg_run(pg_t *db, err_t *e, const char *sql, const char *what)
{
    PGresult *r = PQexec(db->c, sql);
    int rc = res_ok(r) ? 0 : pg_fail(db, e, r, what);
    PQclear(r);
    return rc;
}

/* End whatever transaction the server has open, quietly (cleaning up). */
static void pg_abandon(pg_t *db)
{
    if (PQstatus(db->c) == CONNECTION_OK && PQtransactionStatus(db->c) != PQTRANS_IDLE)
        PQclear(PQexec(db->c, "ROLLBACK"));
}

static PGresult *pg_send_try(pg_t *db, const char *sql, int n, const db_val *args,
                             bool again)
{
    int m = n > 0 ? n : 1;
    const char *values[m];
    Oid types[m];
    char ints[m][24];
    char sig[m + 1];
    for (int i = 0; i < n; i++) {
        types[i] = 0; /* untyped: the server infers text and NULL from the context */
        values[i] = args[i].t == DBV_TEXT ? args[i].s : NULL;
        sig[i] = 'u';
        if (args[i].t == DBV_INT) {
            types[i] = INT8_OID;
            snprintf(ints[i], sizeof ints[i], "%lld", args[i].i);
            values[i] = ints[i];
            sig[i] = 'i';
        }
    }
    sig[n > 0 ? n : 0] = '\0';
    stmt_t *st = stmt_find(db, sql, sig);
    PGresult *refused = NULL;
    if (!st && !(st = stmt_prepare(db, sql, n, types, sig, &refused)))
        return refused ? refused : PQexecParams(db->c, sql, n, types, values, NULL, NULL, 0);
    PGresult *r = PQexecPrepared(db->c, st->name, n, values, NULL, NULL, 0);
    if (!plan_stale(r))
        return r;
    /* Prepared again: at once outside a transaction (nothing was run),
     * at its next use inside one (the server aborted the transaction). */
    stmt_drop(db, st);
    if (db->in_txn || db->in_read || !again)
        return r;
    PQclear(r);
    return pg_send_try(db, sql, n, args, false);
}

static PGresult *pg_send(pg_t *db, const char *sql, int n, const db_val *args)
{
    return pg_send_try(db, sql, n, args, true);
}

static char *cell_copy(const PGresult *res, int row, int col)
{
    const char *v = PQgetvalue(res, row, col);
    if (PQftype(res, col) == BOOL_OID)
        v = v[0] == 't' ? "1" : "0";
    return strdup(v);
}

/* A result of db.h from libpq's; NULL with e when out of memory. */
static db_res_t *res_from(const PGresult *res, bool is_write, err_t *e)
{
    db_res_t *r = calloc(1, sizeof *r);
    if (!r)
        goto oom;
    int rows = PQntuples(res), cols = PQnfields(res);
    if (cols > 0) {
        if (!(r->names = calloc((size_t)cols, sizeof *r->names)))
            goto oom;
        r->ncols = cols; /* names are freed by ncols */
        for (int c = 0; c < cols; c++)
            if (!(r->names[c] = strdup(PQfname(res, c))))
                goto oom;
        if (rows > 0 && !(r->cells = calloc((size_t)rows * (size_t)cols, sizeof *r->cells)))
            goto oom;
    }
    r->nrows = r->cells ? rows : 0;
    for (int i = 0; i < r->nrows; i++)
        for (int c = 0; c < cols; c++)
            if (!PQgetisnull(res, i, c) &&
                !(r->cells[(size_t)i * (size_t)cols + (size_t)c] = cell_copy(res, i, c)))
                goto oom;
    /* A SELECT's tag counts the rows it read: only writes report changes. */
    r->changes = is_write ? strtoll(PQcmdTuples((PGresult *)res), NULL, 10) : 0;
    return r;
oom:
    db_res_free(r);
    err_set(e, ERR_INTERNAL, "out of memory");
    return NULL;
}

/* ---- transactions ---- */

static void write_lock(pg_t *db)
{
    if (db->write_lock && !db->holds_write_lock) {
        fifo_lock(db->write_lock);
        db->holds_write_lock = true;
    }
}

static void write_unlock(pg_t *db)
{
    if (db->holds_write_lock) {
        db->holds_write_lock = false;
        fifo_unlock(db->write_lock);
    }
}

static void pg_read_end(pg_t *db)
{
    if (!db->in_read)
        return;
    db->in_read = false;
    db->lost = false;
    pg_abandon(db); /* READ ONLY: nothing to commit */
}

static int pg_read_begin(pg_t *db, err_t *e)
{
    if (db->in_txn || db->in_read)
        return 0;
    if (pg_ready(db, e) < 0 ||
        pg_run(db, e, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "read_begin") < 0)
        return -1;
    db->in_read = true;
    return 0;
}

static int pg_begin(pg_t *db, err_t *e)
{
    pg_read_end(db);
    if (db->in_txn)
        return err_set(e, ERR_INTERNAL, "begin: a transaction is already open");
    write_lock(db);
    if (pg_ready(db, e) < 0 || pg_run(db, e, "BEGIN; " WRITE_LOCK_SQL, "begin") < 0) {
        pg_abandon(db);
        write_unlock(db);
        return -1;
    }
    db->in_txn = true;
    db->dirty = false;
    return 0;
}

static void pg_rollback(pg_t *db)
{
    db->in_read = false;
    db->in_txn = false;
    db->dirty = false;
    db->lost = false;
    pg_abandon(db);
    write_unlock(db);
}

/* In the transaction: the next data version, announced at COMMIT. */
static int bump_version(pg_t *db, err_t *e, unsigned long long *v)
{
    PGresult *r = pg_send(db, "WITH b AS (UPDATE imperium_data_version SET v = v + 1 "
                              "WHERE id = 1 RETURNING v) "
                              "SELECT v, pg_notify('imperium', 'w' || v) FROM b", 0, NULL);
    int rc = 0;
    if (!res_ok(r))
        rc = pg_fail(db, e, r, "commit");
    else if (PQntuples(r) != 1)
        rc = err_set(e, ERR_INTERNAL, "commit: imperium_data_version has no row");
    else
        *v = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return rc;
}

/* COMMIT of a transaction an error had aborted answers "ROLLBACK".  A
 * COMMIT whose answer is lost may have committed: never ERR_UNAVAILABLE
 * (503 "send it again" would apply a write twice), a plain failure. */
static int commit_now(pg_t *db, err_t *e)
{
    PGresult *r = PQexec(db->c, "COMMIT");
    int rc = 0;
    if (!res_ok(r)) {
        rc = pg_fail(db, e, r, "commit");
        if (e && e->kind == ERR_UNAVAILABLE && PQstatus(db->c) != CONNECTION_OK)
            err_set(e, ERR_INTERNAL, "commit: the connection to the database was lost while "
                                     "committing: the write may or may not have been made");
    } else if (strcmp(PQcmdStatus(r), "COMMIT") != 0)
        rc = err_set(e, ERR_INTERNAL, "commit: a statement of the transaction had failed: "
                                      "it was rolled back");
    PQclear(r);
    return rc;
}

static int pg_commit(pg_t *db, err_t *e)
{
    if (!db->in_txn)
        return err_set(e, ERR_INTERNAL, "commit: no transaction is open");
    unsigned long long v = 0;
    bool dirty = db->dirty;
    int rc = pg_ready(db, e);
    if (rc == 0 && dirty)
        rc = bump_version(db, e, &v);
    rc = rc == 0 ? commit_now(db, e) : -1;
    pg_rollback(db); /* ends what a failure left open, and the locks */
    if (rc == 0 && dirty)
        hub_saw(db->hub, v);
    return rc;
}

/* ---- statements ---- */

static size_t word_len(const char *s)
{
    size_t n = 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '_')
        n++;
    return n;
}

static bool is_word(const char *s, size_t n, const char *word)
{
    return n == strlen(word) && strncasecmp(s, word, n) == 0;
}

/* Does `sql` only read?  By its first word (WITH: unless it holds a
 * data-modifying word).  A SELECT calling a writing function (setval) is
 * taken for a read; in a read transaction the server refuses it (25006)
 * and it runs again after the read transaction. */
static bool is_read_sql(const char *sql)
{
    while (isspace((unsigned char)*sql) || *sql == '(')
        sql++;
    size_t n = word_len(sql);
    static const char *const reads[] = {"SELECT", "VALUES", "SHOW", "TABLE", "EXPLAIN"};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++)
        if (is_word(sql, n, reads[i]))
            return true;
    if (!is_word(sql, n, "WITH"))
        return false;
    static const char *const writes[] = {"INSERT", "UPDATE", "DELETE", "MERGE"};
    for (const char *p = sql; *p; p += n ? n : 1) {
        n = word_len(p);
        for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++)
            if (is_word(p, n, writes[i]))
                return false;
    }
    return true;
}

static db_res_t *autocommit_write(pg_t *db, err_t *e, const char *sql, int n,
                                  const db_val *args);

/* One statement where it stands (a transaction, or autocommit for a read). */
static db_res_t *pg_statement(pg_t *db, err_t *e, const char *sql, int n, const db_val *args,
                              bool is_write)
{
    if (pg_ready(db, e) < 0)
        return NULL;
    PGresult *res = pg_send(db, sql, n, args);
    if (!res_ok(res) && db->in_read &&
        state_is(PQresultErrorField(res, PG_DIAG_SQLSTATE), "25006")) {
        /* A "read" that writes (SELECT setval(...)): the read-only
         * transaction refused it; it runs as the write it is, locked and
         * counted in the data version. */
        PQclear(res);
        pg_read_end(db);
        return autocommit_write(db, e, sql, n, args);
    }
    db_res_t *r = NULL;
    if (!res_ok(res))
        pg_fail(db, e, res, "query");
    else if ((r = res_from(res, is_write, e)) && r->changes > 0)
        db->dirty = true;
    PQclear(res);
    return r;
}

/* A write outside a transaction, made one: *retry when it failed before
 * its COMMIT for a reason that may pass (the connection, a conflict). */
static db_res_t *autocommit_once(pg_t *db, err_t *e, const char *sql, int n,
                                 const db_val *args, bool *retry)
{
    *retry = false;
    if (pg_begin(db, e) < 0) {
        *retry = e->kind == ERR_UNAVAILABLE;
        return NULL;
    }
    db_res_t *r = pg_statement(db, e, sql, n, args, true);
    if (!r) {
        *retry = e->kind == ERR_UNAVAILABLE;
        pg_rollback(db);
        return NULL;
    }
    if (pg_commit(db, e) < 0) { /* perhaps committed: never run again */
        db_res_free(r);
        return NULL;
    }
    return r;
}

static db_res_t *autocommit_write(pg_t *db, err_t *e, const char *sql, int n,
                                  const db_val *args)
{
    err_t local = {0};
    err_t *why = e ? e : &local;
    for (int try = 1;; try++) {
        bool retry;
        db_res_t *r = autocommit_once(db, why, sql, n, args, &retry);
        if (r || !retry || try == AUTOCOMMIT_TRIES)
            return r;
        log_debug("postgresql: running a write again (%s)", why->msg);
    }
}

static db_res_t *pg_query(pg_t *db, err_t *e, const char *sql, int n, const db_val *args)
{
    bool is_write = !is_read_sql(sql);
    if (is_write && db->in_read)
        pg_read_end(db);
    if (is_write && !db->in_txn)
        return autocommit_write(db, e, sql, n, args);
    return pg_statement(db, e, sql, n, args, is_write);
}

static int pg_exec_script(pg_t *db, err_t *e, const char *sql)
{
    char *ddl = db_pg_ddl(sql);
    if (!ddl)
        return err_set(e, ERR_INTERNAL, "out of memory");
    bool own = !db->in_txn; /* outside a transaction: one of its own */
    int rc = own ? pg_begin(db, e) : pg_ready(db, e);
    if (rc == 0 && (rc = pg_run(db, e, ddl, "sql")) == 0)
        db->dirty = true; /* scripts are migrations: assume they wrote */
    free(ddl);
    if (own && rc == 0)
        return pg_commit(db, e);
    if (own)
        pg_rollback(db);
    return rc;
}

/* ---- open and close ---- */

/* The version row: made once per database, under the writers' lock so
 * that processes starting together do not collide on it. */
static int version_table(pg_t *db, err_t *e)
{
    PGresult *r = PQexec(db->c, "SELECT to_regclass('imperium_data_version') IS NOT NULL");
    bool there = res_ok(r) && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    int rc = res_ok(r) ? 0 : pg_fail(db, e, r, "open");
    PQclear(r);
    if (rc < 0 || there)
        return rc;
    rc = pg_run(db, e,
                "BEGIN; " WRITE_LOCK_SQL "; "
                "CREATE TABLE IF NOT EXISTS imperium_data_version (id int PRIMARY KEY "
                "CHECK (id = 1), v bigint NOT NULL); "
                "INSERT INTO imperium_data_version VALUES (1, 0) ON CONFLICT DO NOTHING; "
                "COMMIT",
                "open: imperium_data_version");
    pg_abandon(db);
    return rc;
}

static void pg_close(pg_t *db)
{
    if (!db)
        return;
    pg_rollback(db);
    stmts_forget(db);
    PQfinish(db->c);
    hub_put(db->hub);
    free(db);
}

static db_t *pg_open(const char *url, const char *target, err_t *e)
{
    (void)target; /* libpq reads the whole URL */
    pg_t *db = calloc(1, sizeof *db);
    if (!db) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    db->base.be = &db_pg_backend;
    if (!(db->c = connect_url(url, e)) || version_table(db, e) < 0 ||
        !(db->hub = hub_get(url, e))) {
        if (db->c)
            PQfinish(db->c);
        free(db);
        return NULL;
    }
    return &db->base;
}

/* ---- several processes, id high marks ---- */

static int pg_data_version_now(pg_t *db, err_t *e, unsigned long long *v)
{
    if (pg_ready(db, e) < 0)
        return -1;
    /* Prepared: once per cached answer. */
    PGresult *r = pg_send(db, "SELECT v FROM imperium_data_version WHERE id = 1", 0, NULL);
    int rc = 0;
    if (!res_ok(r))
        rc = pg_fail(db, e, r, "data version");
    else if (PQntuples(r) != 1)
        rc = err_set(e, ERR_INTERNAL, "data version: imperium_data_version has no row");
    else
        *v = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return rc;
}

/* The identity's sequence, or MAX(id) when ids were inserted past it (a copy). */
static long long pg_id_high(pg_t *db, err_t *e, const char *table)
{
    char *quoted = PQescapeIdentifier(db->c, table, strlen(table)); /* libpq's quoting */
    char *sql = quoted ? str_printf("SELECT s IS NULL, GREATEST(COALESCE(pg_sequence_last_value("
                                    "CAST(s AS regclass)), 0), (SELECT COALESCE(MAX(id), 0) "
                                    "FROM %s)) FROM (SELECT pg_get_serial_sequence($1, 'id') "
                                    "AS s) q",
                                    quoted)
                       : NULL;
    PQfreemem(quoted);
    err_t why = {.kind = ERR_INTERNAL, .msg = "out of memory"};
    db_res_t *r = sql ? pg_statement(db, &why, sql, DB_ARGS(DB_TEXT(table)), false) : NULL;
    free(sql);
    if (!r)
        return err_set(e, why.kind, "the id high mark of table %s: %s", table, why.msg);
    long long high = -1;
    if (r->nrows != 1 || db_get_int(r, 0, 0))
        err_set(e, ERR_INTERNAL, "table %s has no identity column id", table);
    else
        high = db_get_int(r, 0, 1);
    db_res_free(r);
    return high;
}

static int pg_id_set_high(pg_t *db, err_t *e, const char *table, long long high)
{
    long long now = pg_id_high(db, e, table);
    if (now < 0)
        return -1;
    if (high < now)
        high = now; /* never back: that would hand out used ids again */
    if (high <= 0)
        return 0;
    db_res_t *r = pg_statement(db, e,
                               "SELECT setval(CAST(pg_get_serial_sequence($1, 'id') AS "
                               "regclass), $2, true)",
                               DB_ARGS(DB_TEXT(table), DB_INT(high)), false);
    db_res_free(r);
    return r ? 0 : -1;
}

/* ---- the DDL rewrite ---- */

/* The length of the token at s: a quoted name or string, a -- comment, a
 * word, or one character. */
static size_t token_len(const char *s)
{
    if (*s == '\'' || *s == '"') {
        const char *end = strchr(s + 1, *s);
        return end ? (size_t)(end - s) + 1 : strlen(s);
    }
    if (s[0] == '-' && s[1] == '-')
        return strcspn(s, "\n");
    size_t n = word_len(s);
    return n ? n : 1;
}

/* After "id" at s: " INTEGER PRIMARY KEY [AUTOINCREMENT]"'s end, or NULL. */
static const char *id_key_words(const char *s)
{
    static const char *const words[] = {"INTEGER", "PRIMARY", "KEY", "AUTOINCREMENT"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        const char *p = s;
        while (isspace((unsigned char)*p))
            p++;
        if (p == s || !is_word(p, word_len(p), words[i]))
            return i == 3 ? s : NULL; /* AUTOINCREMENT is optional */
        s = p + word_len(p);
    }
    return s;
}

char *db_pg_ddl(const char *sqlite_ddl)
{
    buf_t b = {0};
    int rc = buf_appends(&b, "");
    for (const char *p = sqlite_ddl; rc == 0 && *p;) {
        size_t n = token_len(p);
        const char *end = is_word(p, n, "id") ? id_key_words(p + n) : NULL;
        if (end) {
            rc = buf_appends(&b, "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY");
            p = end;
            continue;
        }
        rc = is_word(p, n, "INTEGER") ? buf_appends(&b, "BIGINT") : buf_append(&b, p, n);
        p += n;
    }
    if (rc < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* ---- the backend's table: db_t * in, pg_t * on ---- */

static void op_close(db_t *db) { pg_close(pg(db)); }

static db_res_t *op_query(db_t *db, err_t *e, const char *sql, int n, const db_val *args)
{
    return pg_query(pg(db), e, sql, n, args);
}

static int op_exec_script(db_t *db, err_t *e, const char *sql)
{
    return pg_exec_script(pg(db), e, sql);
}

static int op_begin(db_t *db, err_t *e) { return pg_begin(pg(db), e); }
static int op_commit(db_t *db, err_t *e) { return pg_commit(pg(db), e); }
static void op_rollback(db_t *db) { pg_rollback(pg(db)); }
static int op_read_begin(db_t *db, err_t *e) { return pg_read_begin(pg(db), e); }
static void op_read_end(db_t *db) { pg_read_end(pg(db)); }
static void op_set_write_lock(db_t *db, fifo_lock_t *lock) { pg(db)->write_lock = lock; }
/* Every process follows every other's writes: nothing to claim. */
static int op_claim(db_t *db, err_t *e)
{
    (void)db;
    (void)e;
    return 0;
}
/* DDL is transactional and foreign keys need no switching off: a schema
 * change is a write transaction (with the writers' lock: APIs starting
 * together migrate one after the other). */
static int op_schema_begin(db_t *db, err_t *e) { return pg_begin(pg(db), e); }
static int op_schema_commit(db_t *db, err_t *e) { return pg_commit(pg(db), e); }
static void op_schema_rollback(db_t *db) { pg_rollback(pg(db)); }
/* Identity columns never hand out a value twice. */
static int op_ids_never_reused(db_t *db, err_t *e, const char *table)
{
    (void)db;
    (void)e;
    (void)table;
    return 0;
}

static unsigned long long op_data_version(db_t *db, db_feed feed)
{
    return dbv_version(pg(db)->hub->v, feed);
}

/* Here at once, elsewhere through the listener's NOTIFY. */
static void op_notify(db_t *db)
{
    dbv_move(pg(db)->hub->v, DB_FEED_NOTICES);
    hub_wake(pg(db)->hub);
}

static unsigned long long op_data_wait(db_t *db, db_feed feed, unsigned long long since,
                                       long long deadline_ms)
{
    return dbv_wait(pg(db)->hub->v, feed, since, deadline_ms);
}

static bool op_shared(db_t *db)
{
    (void)db;
    return true;
}

static int op_data_version_now(db_t *db, err_t *e, unsigned long long *v)
{
    return pg_data_version_now(pg(db), e, v);
}

static long long op_id_high(db_t *db, err_t *e, const char *table)
{
    return pg_id_high(pg(db), e, table);
}

static int op_id_set_high(db_t *db, err_t *e, const char *table, long long high)
{
    return pg_id_set_high(pg(db), e, table, high);
}

const db_backend_t db_pg_backend = {
    .open = pg_open,
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
