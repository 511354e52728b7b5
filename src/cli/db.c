/* db.c - `imperium admin db ...`: the commands that open the database
 * itself instead of calling the API.
 *
 *   migrate --database URL   the schema steps imperium-api runs at start
 *   copy FROM_URL TO_URL     every row of one database into an empty other
 *                            (SQLite -> PostgreSQL, and back)
 *
 * A copy keeps every id, and so every container's uid (30000 + id), which
 * names its home on the node; then it moves each id table's high mark on
 * the target, so an id handed out in the source and deleted since (whose
 * home may still be on a node) is never handed out again.  URLs are shown
 * only through db_url_redacted: a PostgreSQL URL may hold a password. */
#include "../common/db.h"
#include "../common/schema.h"
#include "../common/strutil.h"
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *verb;
    const char *args;     /* positional arguments, for the help */
    int npos;             /* how many */
    const opt_spec *opts;
    const char *help;
    int (*run)(cli_t *cli, args_t *a, err_t *e);
} db_cmd_t;

/* ---- shared ---- */

/* e's message after "<what>: ", the kind kept. */
static int err_prefix(err_t *e, const char *what)
{
    char msg[sizeof e->msg];
    snprintf(msg, sizeof msg, "%s", e->msg);
    return err_set(e, e->kind ? e->kind : ERR_INTERNAL, "%s: %s", what, msg);
}

/* One database of a command: its URL as it may be shown, and "<role>
 * <that URL>" to start its messages with. */
typedef struct {
    char url[512];
    char label[600];
    db_t *db;
} side_t;

/* Open `url`; NULL with e starting with the label. */
static db_t *open_side(side_t *s, const char *role, const char *url, err_t *e)
{
    db_url_redacted(url, s->url, sizeof s->url);
    snprintf(s->label, sizeof s->label, "%s %s", role, s->url);
    if (!(s->db = db_open(url, e)))
        err_prefix(e, s->label);
    return s->db;
}

/* ---- migrate ---- */

static const opt_spec migrate_opts[] = {
    {"database", OPT_STR, "database", "URL", true},
    {NULL, 0, NULL, NULL, false},
};

static int run_migrate(cli_t *cli, args_t *a, err_t *e)
{
    (void)cli;
    const char *url = json_string_value(json_object_get(a->opts, "database"));
    side_t d;
    db_t *db = open_side(&d, "database", url, e);
    if (!db)
        return -1;
    int before = schema_version(db, e), after = -1;
    if (before >= 0 && schema_migrate(db, e) == 0)
        after = schema_version(db, e);
    db_close(db);
    if (after < 0)
        return err_prefix(e, d.label);
    if (before == after)
        printf("%s: schema version %d, the newest: nothing to do\n", d.url, after);
    else
        printf("%s: schema version %d -> %d\n", d.url, before, after);
    return 0;
}

/* ---- copy ---- */

/* FROM must be at this binary's schema version: the columns must match,
 * and the copy never writes to its source (not even a migration). */
static int check_source(db_t *from, const char *label, err_t *e)
{
    int v = schema_version(from, e);
    if (v < 0)
        return err_prefix(e, label);
    if (v == 0)
        return err_set(e, ERR_INPUT, "%s holds no Imperium database (no schema version): "
                       "nothing to copy; check the URL", label);
    if (v < schema_latest_version())
        return err_set(e, ERR_CONFLICT, "%s is at schema version %d, this binary at %d: "
                       "migrate it first (imperium admin db migrate --database FROM_URL)",
                       label, v, schema_latest_version());
    if (v > schema_latest_version())
        return err_set(e, ERR_CONFLICT, "%s is at schema version %d, newer than this binary "
                       "(%d): copy it with the binary that migrated it", label, v,
                       schema_latest_version());
    return 0;
}

/* TO must be new (no schema: it is migrated here) or migrated and empty.
 * Checked before anything is written to it. */
static int check_target(db_t *to, const char *label, bool *fresh, err_t *e)
{
    int v = schema_version(to, e);
    if (v < 0)
        return err_prefix(e, label);
    *fresh = v == 0;
    if (v == 0)
        return 0;
    if (v != schema_latest_version())
        return err_set(e, ERR_CONFLICT, "%s is at schema version %d, not %d: the copy goes "
                       "only into an empty database or one migrated by this binary", label, v,
                       schema_latest_version());
    for (const char *const *t = schema_copy_order; *t; t++) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", *t);
        long long n = db_scalar_int(to, e, 0, sql, DB_NOARGS);
        if (n < 0)
            return err_prefix(e, label);
        if (n > 0)
            return err_set(e, ERR_CONFLICT, "%s is not empty (table %s has %lld row%s): the "
                           "copy goes only into an empty database; nothing was changed", label,
                           *t, n, n == 1 ? "" : "s");
    }
    return 0;
}

/* INSERT INTO table ("c1", ...) VALUES ($1, ...) with the columns of `r`. */
static char *insert_sql(const char *table, const db_res_t *r, err_t *e)
{
    buf_t cols = {0}, vals = {0};
    int bad = 0;
    for (int c = 0; c < r->ncols && !bad; c++) {
        const char *name = db_col_name(r, c);
        if (!name || strchr(name, '"')) {
            buf_free(&cols);
            buf_free(&vals);
            err_set(e, ERR_INTERNAL, "table %s: column %d has no usable name", table, c + 1);
            return NULL;
        }
        bad |= buf_printf(&cols, "%s\"%s\"", c ? ", " : "", name) < 0;
        bad |= buf_printf(&vals, "%s$%d", c ? ", " : "", c + 1) < 0;
    }
    char *sql = bad ? NULL : str_printf("INSERT INTO %s (%s) VALUES (%s)", table, cols.data,
                                        vals.data);
    buf_free(&cols);
    buf_free(&vals);
    if (!sql)
        err_set(e, ERR_INTERNAL, "out of memory");
    return sql;
}

/* Every row of `r` into `table` of `to`: the cells as text (NULL as NULL),
 * which each backend converts to the column's type. */
static int insert_rows(db_t *to, const char *table, const db_res_t *r, err_t *e)
{
    if (r->nrows == 0)
        return 0;
    char *sql = insert_sql(table, r, e);
    db_val *args = sql ? calloc((size_t)r->ncols, sizeof *args) : NULL;
    int rc = sql && args ? 0 : -1;
    if (sql && !args)
        err_set(e, ERR_INTERNAL, "out of memory");
    for (int row = 0; rc == 0 && row < r->nrows; row++) {
        for (int c = 0; c < r->ncols; c++)
            args[c] = DB_TEXT(db_get(r, row, c));
        if (db_exec(to, e, sql, r->ncols, args) < 0) {
            char what[96];
            snprintf(what, sizeof what, "table %s, row %d", table, row + 1);
            rc = err_prefix(e, what);
        }
    }
    free(args);
    free(sql);
    return rc;
}

static int copy_table(db_t *from, db_t *to, const char *table, err_t *e)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT * FROM %s ORDER BY 1", table);
    db_res_t *r = db_query(from, e, sql, DB_NOARGS);
    if (!r) {
        char what[96];
        snprintf(what, sizeof what, "reading table %s", table);
        return err_prefix(e, what);
    }
    int rc = insert_rows(to, table, r, e);
    if (rc == 0)
        printf("  %-18s %d row%s\n", table, r->nrows, r->nrows == 1 ? "" : "s");
    db_res_free(r);
    return rc;
}

/* The next id of each id table on `to` above the highest `from` ever
 * handed out: a deleted newest container's uid stays retired. */
static int copy_high_marks(db_t *from, db_t *to, err_t *e)
{
    for (const char *const *t = schema_id_tables; *t; t++) {
        long long high = db_id_high(from, e, *t), have = high < 0 ? -1 : db_id_high(to, e, *t);
        if (high < 0 || have < 0 || db_id_set_high(to, e, *t, high > have ? high : have) < 0) {
            char what[96];
            snprintf(what, sizeof what, "the id high mark of table %s", *t);
            return err_prefix(e, what);
        }
    }
    return 0;
}

/* Every table in one write transaction on `to`, read in one snapshot of
 * `from`: the copy is all or nothing, and consistent. */
static int copy_rows(db_t *from, db_t *to, err_t *e)
{
    if (db_read_begin(from, e) < 0 || db_begin(to, e) < 0) {
        db_read_end(from);
        return -1;
    }
    int rc = 0;
    for (const char *const *t = schema_copy_order; rc == 0 && *t; t++)
        rc = copy_table(from, to, *t, e);
    if (rc == 0)
        rc = copy_high_marks(from, to, e);
    db_read_end(from);
    if (rc == 0)
        rc = db_commit(to, e);
    if (rc < 0)
        db_rollback(to);
    return rc;
}

static int run_copy(cli_t *cli, args_t *a, err_t *e)
{
    (void)cli;
    side_t from = {0}, to = {0};
    bool fresh = false;
    int rc = -1;
    /* No API may write either database meanwhile (SQLite: claimed; a
     * PostgreSQL database is the operator's to keep quiet).  Nothing is
     * opened on TO before FROM passed its checks. */
    if (!open_side(&from, "FROM", a->pos[0], e))
        goto out;
    if (db_claim(from.db, e) < 0) {
        err_prefix(e, from.label);
        goto out;
    }
    if (check_source(from.db, from.label, e) < 0 || !open_side(&to, "TO", a->pos[1], e))
        goto out;
    if (db_claim(to.db, e) < 0) {
        err_prefix(e, to.label);
        goto out;
    }
    if (check_target(to.db, to.label, &fresh, e) < 0)
        goto out;
    if (fresh && schema_migrate(to.db, e) < 0) {
        err_prefix(e, to.label);
        goto out;
    }
    printf("copying %s to %s (schema version %d)\n", from.url, to.url,
           schema_latest_version());
    if (copy_rows(from.db, to.db, e) < 0) {
        char what[700];
        snprintf(what, sizeof what, "copy to %s failed, no row was copied", to.url);
        err_prefix(e, what);
        goto out;
    }
    printf("done: ids and uids kept, each id table's next id above the source's\n");
    rc = 0;
out:
    if (to.db)
        db_close(to.db);
    if (from.db)
        db_close(from.db);
    return rc;
}

/* ---- dispatch ---- */

static const db_cmd_t db_cmds[] = {
    {"migrate", "", 0, migrate_opts,
     "apply the schema migrations this binary has and the database lacks (what\n"
     "      imperium-api does at start); prints the version before and after",
     run_migrate},
    {"copy", " FROM_URL TO_URL", 2, NULL,
     "copy every row of one database into another (e.g. SQLite to PostgreSQL and\n"
     "      back): TO must be new or migrated and empty; ids, uids and the ids' high\n"
     "      marks are kept.  Stop the APIs first.  Prints the rows per table",
     run_copy},
};

#define NDB_CMDS (sizeof db_cmds / sizeof db_cmds[0])

static void db_cmd_line(FILE *f, const db_cmd_t *c)
{
    fprintf(f, "imperium admin db %s%s", c->verb, c->args);
    for (const opt_spec *o = c->opts; o && o->name; o++) {
        char item[128];
        if (args_opt_usage(o, item, sizeof item) == 0)
            fprintf(f, " %s", item);
    }
    fputc('\n', f);
}

void db_help(FILE *f, bool verbose)
{
    for (size_t i = 0; i < NDB_CMDS; i++) {
        fputs("  ", f);
        db_cmd_line(f, &db_cmds[i]);
        if (verbose)
            fprintf(f, "      %s\n", db_cmds[i].help);
    }
}

static int run_db_cmd(cli_t *cli, const db_cmd_t *c, int argc, char **argv, err_t *e)
{
    char name[64];
    snprintf(name, sizeof name, "admin db %s", c->verb);
    args_t a;
    if (args_parse(cli, c->opts, name, argc, argv, &a, e) < 0)
        return -1;
    int rc;
    if (cli->help) {
        fputs("usage: ", stdout);
        db_cmd_line(stdout, c);
        printf("  %s\n", c->help);
        rc = 0;
    } else if (a.npos != c->npos) {
        rc = err_set(e, ERR_INPUT, "%s: %s (see imperium %s --help)", name,
                     a.npos < c->npos ? "missing arguments" : "too many arguments", name);
    } else {
        rc = c->run(cli, &a, e);
    }
    args_free(&a);
    return rc;
}

int db_main(cli_t *cli, int argc, char **argv, err_t *e)
{
    int i = 0;
    if (args_globals(cli, argc, argv, &i, e) < 0)
        return -1;
    if (i >= argc) {
        if (!cli->help)
            return err_set(e, ERR_INPUT, "admin db: which action? (see imperium admin db --help)");
        fputs("usage:\n", stdout);
        db_help(stdout, true);
        return 0;
    }
    for (size_t k = 0; k < NDB_CMDS; k++)
        if (!strcmp(db_cmds[k].verb, argv[i]))
            return run_db_cmd(cli, &db_cmds[k], argc - i - 1, argv + i + 1, e);
    return err_set(e, ERR_INPUT, "unknown command 'admin db %s' (see imperium admin db --help)",
                   argv[i]);
}
