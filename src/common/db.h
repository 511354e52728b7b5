/* db.h - the one small storage interface.
 *
 * Handlers speak plain SQL with numbered `$1, $2 ...` placeholders, which
 * both backends understand (PostgreSQL natively, SQLite as named parameters),
 * and read back a fully materialised result of text cells.  Keeping the
 * interface at this level lets SQLite (the embedded default) and PostgreSQL
 * (several API instances, one database) share every query.
 *
 * Backends: db_open picks one by the URL's scheme (db_common.c's table);
 * each implements the operations of db_backend.h (db_sqlite.c: SQLite).
 * Besides SQL, a backend keeps the database's data version (below): what
 * the API's response cache and the nodes' long polls rest on. */
#ifndef IMP_DB_H
#define IMP_DB_H

#include "err.h"
#include "fifo_lock.h"

#include <stdbool.h>

typedef struct db db_t;

typedef enum { DBV_NULL, DBV_INT, DBV_TEXT } db_vtype;

typedef struct {
    db_vtype t;
    long long i;
    const char *s;
} db_val;

static inline db_val db_text_val(const char *s)
{
    return (db_val){.t = s ? DBV_TEXT : DBV_NULL, .s = s};
}

#define DB_INT(x) ((db_val){.t = DBV_INT, .i = (long long)(x)})
/* A NULL C string binds SQL NULL. */
#define DB_TEXT(x) db_text_val(x)
#define DB_NULL ((db_val){.t = DBV_NULL})
#define DB_ARGS(...)                                                                       \
    (int)(sizeof((db_val[]){__VA_ARGS__}) / sizeof(db_val)), (db_val[]){__VA_ARGS__}
#define DB_NOARGS 0, NULL

typedef struct {
    int nrows, ncols;
    char **cells; /* nrows * ncols, NULL for SQL NULL */
    char **names; /* ncols column names (db_col_name); NULL when the backend gave none */
    long long changes;
} db_res_t;

/* Open a database by URL: "sqlite:/path/file.db", "sqlite:///path/file.db"
 * or a plain path (SQLite); "postgresql://..." / "postgres://..." (libpq's
 * connection URI: PostgreSQL, db_pg.c).  Any other scheme is refused,
 * naming the ones known. */
db_t *db_open(const char *url, err_t *e);

/* url as it may be logged, in buf: a "scheme://user:password@host/..."
 * keeps its scheme, user, host and path with the password "***" (unencoded
 * '/', '?', '#', '@' in it included); a "password=" of its query (its key
 * percent-encoded or not) is "***" and what follows it is dropped; a path or
 * a URL without a password is unchanged.  Returns buf ("" for NULL). */
const char *db_url_redacted(const char *url, char *buf, size_t len);
void db_close(db_t *db);

/* Run one statement; on success returns a result (possibly zero rows) the
 * caller frees with db_res_free.  NULL on failure, with kind ERR_CONSTRAINT
 * for uniqueness / foreign key violations. */
db_res_t *db_query(db_t *db, err_t *e, const char *sql, int n, const db_val *args);
/* Run a statement whose rows are not needed; returns rows changed or -1. */
long long db_exec(db_t *db, err_t *e, const char *sql, int n, const db_val *args);
/* Run a script of several statements (schema migrations); no parameters. */
int db_exec_script(db_t *db, err_t *e, const char *sql);

int db_begin(db_t *db, err_t *e); /* a write transaction */
int db_commit(db_t *db, err_t *e);
void db_rollback(db_t *db); /* a no-op outside a transaction */
/* Connections of one process sharing `lock` queue their write transactions
 * on it, first come first served (db_begin takes it, db_commit / db_rollback
 * release it): a waiting writer wakes the moment the previous one commits
 * instead of polling the database's lock.  Other processes are still waited for by polling. */
void db_set_write_lock(db_t *db, fifo_lock_t *lock);
/* Make this process the database's only user: a second process calling it
 * on the same database fails (ERR_CONFLICT) instead of running beside the
 * first with caches of its own.  Needed by a backend whose data version
 * sees only this process's writes (SQLite); a no-op for one whose version
 * follows every process (PostgreSQL).  Held until the connection is closed;
 * close the claiming connection last (closing a descriptor of the database
 * file drops the process's other locks on it). */
int db_claim(db_t *db, err_t *e);
/* A read transaction around a request's queries: one snapshot and one
 * acquisition of the database's read lock, instead of one per statement
 * (for a GET of a container: 10 statements).  A no-op inside a transaction.
 * A write statement or db_begin ends it first, so a handler may still
 * write; db_read_end ends it if it is still open. */
int db_read_begin(db_t *db, err_t *e);
void db_read_end(db_t *db);

/* ---- the data version ----
 *
 * Two counters of the database, each a feed: DB_FEED_WRITES moves by
 * itself on every committed write (the response cache: an answer built
 * at version v is good while the version is still v); DB_FEED_NOTICES
 * moves only on db_notify, which a writer calls after a change worth
 * waking for (the nodes' long polls: a node's own status report commits
 * a write but wakes no one).  What a backend must guarantee:
 *
 * - Monotonic: a feed's version never goes back, within one process.
 * - A reader that read version v of DB_FEED_WRITES before taking its
 *   snapshot sees every write committed before the version moved to v;
 *   so if it still reads v afterwards, no write committed in between.
 *   The version moves after the write is visible to new snapshots, by
 *   at least one for each committed transaction (or autocommit
 *   statement) that changed rows, or ran a script (db_exec_script).  A
 *   rollback or a read never moves it (a write that changed no row need
 *   not: moving too often only costs the cache a miss).
 * - Every writer counts: all connections of this process and, for a
 *   backend shared by several processes, every process (PostgreSQL:
 *   NOTIFY at commit, a LISTEN connection per process).  A backend that
 *   sees only its own process's writes (SQLite, in process) needs
 *   db_claim to keep other processes out.
 * - Waiting loses nothing: a move after `since` was read wakes a
 *   db_data_wait that started with it, or makes it return at once.
 * - These three calls may be made on a connection another thread is
 *   using: they touch only what the process's connections to that
 *   database share (a backend that needs a connection for them keeps
 *   its own). */
typedef enum {
    DB_FEED_WRITES,  /* every committed write */
    DB_FEED_NOTICES, /* db_notify only */
    DB_FEEDS
} db_feed;

unsigned long long db_data_version(db_t *db, db_feed feed);
/* Move DB_FEED_NOTICES, waking its waiters (in every process).  Call it
 * after the write it announces has committed. */
void db_notify(db_t *db);
/* Block until `feed`'s version differs from `since`, or until
 * `deadline_ms` (clock.h's now_ms) passes; returns the version then. */
unsigned long long db_data_wait(db_t *db, db_feed feed, unsigned long long since,
                                long long deadline_ms);

/* Schema changes (migrations), following SQLite's procedure for changing a
 * table (sqlite.org/lang_altertable.html, "other kinds of table schema
 * changes"): db_schema_begin suspends foreign key enforcement (outside the
 * transaction, where the switch takes effect) and opens a write
 * transaction, so tables can be rebuilt under the references of others;
 * db_schema_commit checks every foreign key, commits, and enforces them
 * again; db_schema_rollback abandons the change.  A backend whose DDL is
 * transactional and needs none of this (PostgreSQL) makes them plain
 * db_begin / db_commit / db_rollback. */
int db_schema_begin(db_t *db, err_t *e);
int db_schema_commit(db_t *db, err_t *e);
void db_schema_rollback(db_t *db);
/* Between db_schema_begin and db_schema_commit: make the integer key `id`
 * of `table` never hand out a value again once used, even after the newest
 * row is deleted (SQLite reuses max(id)+1 otherwise).  SQLite: the table is
 * rebuilt with AUTOINCREMENT, its definition taken from sqlite_master (the
 * schema has one owner, its migrations), rows and indexes kept; a no-op
 * when it already is.  PostgreSQL: identity columns never reuse a value. */
int db_ids_never_reused(db_t *db, err_t *e, const char *table);

/* ---- several processes on one database (issue 20) ---- */

/* True when other processes may use the database at the same time
 * (PostgreSQL): db_claim is then a no-op, and a cache must compare with
 * db_data_version_now rather than trust db_data_version alone. */
bool db_shared(db_t *db);
/* DB_FEED_WRITES as the database has it now, read on this connection
 * (which the caller holds, outside a write transaction): exact across
 * processes, at the cost of a round trip when db_shared.  A backend that
 * is not shared answers db_data_version(db, DB_FEED_WRITES).  0 or -1
 * with e (ERR_UNAVAILABLE when the database cannot be reached). */
int db_data_version_now(db_t *db, err_t *e, unsigned long long *v);
/* The highest value ever handed out for `table`'s integer key `id` (not
 * only the highest row's: a deleted newest row counts), 0 when none, -1
 * with e; and making the next one handed out greater than `high` (copying
 * a database: uids and ids are kept, and never reused). */
long long db_id_high(db_t *db, err_t *e, const char *table);
int db_id_set_high(db_t *db, err_t *e, const char *table, long long high);

void db_res_free(db_res_t *r);
/* The name of result column `col`, NULL when out of range or unknown. */
const char *db_col_name(const db_res_t *r, int col);
const char *db_get(const db_res_t *r, int row, int col);
long long db_get_int(const db_res_t *r, int row, int col);
bool db_is_null(const db_res_t *r, int row, int col);

/* A single integer from the first row and column (COUNT, lookups);
 * returns -1 with e set on failure, `dflt` when there is no row. */
long long db_scalar_int(db_t *db, err_t *e, long long dflt, const char *sql, int n,
                        const db_val *args);

#endif
