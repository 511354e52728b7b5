/* admin.c - `imperium admin OBJECT ACTION ...`: the supplier's commands.
 *
 * Each command is one row of `commands[]`: the admin API path it calls,
 * its positional argument, its options (each one a field of the JSON body,
 * or of the query string for lists) and, for lists, the table columns.
 * One generic runner does the rest. */
#include "../common/strutil.h"
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef enum {
    ACT_LIST,   /* GET path[?options] */
    ACT_SHOW,   /* GET path/POS */
    ACT_ADD,    /* POST path {options, pos_field: POS} */
    ACT_MODIFY, /* POST path/POS {options} */
    ACT_DELETE, /* DELETE path/POS */
    ACT_DO,     /* POST path/POS/<sub> {options} */
    ACT_BUILD,  /* distro build: runs here (distro_build.c), then POSTs path */
} action_t;

typedef struct {
    const char *object;    /* "customer" */
    const char *verb;      /* "add" */
    action_t act;
    const char *path;      /* admin API collection, "/customers" */
    const char *pos;       /* the positional argument's placeholder, or NULL */
    bool pos_int;          /* ... which must be an integer (an id, a uid) */
    const char *pos_field; /* add: the body field the positional fills */
    const opt_spec *opts;
    const column_t *cols;  /* list: the table */
    const char *print_key; /* add, do: print only this field of the answer */
    const char *help;
    const char *sub;       /* do: the last path segment */
} cmd_t;

/* ---- options ---- */

static const opt_spec customer_add_opts[] = {
    {"password", OPT_STR, "password", "P", true},
    {"company", OPT_STR, "company", "C", false},
    {"vat", OPT_STR, "vat", "V", false},
    {"email", OPT_STR, "email", "E", false},
    {NULL, 0, NULL, NULL, false},
};

static const opt_spec customer_modify_opts[] = {
    {"password", OPT_STR, "password", "P", false},
    {"company", OPT_STR, "company", "C", false},
    {"vat", OPT_STR, "vat", "V", false},
    {"email", OPT_STR, "email", "E", false},
    {NULL, 0, NULL, NULL, false},
};

#define SERVER_OPTIONAL_OPTS                                                               \
    {"disk", OPT_STR, "disk", "DEV", false}, {"owner", OPT_STR, "owner", "USERNAME", false}, \
        {"weight", OPT_INT, "weight", "N", false},                                         \
        {"datacenter", OPT_STR, "datacenter", "D", false},                                 \
        {"hosts-line", OPT_LIST, "etc_hosts", "LINE", false},                              \
        {"resolv-line", OPT_LIST, "etc_resolv_conf", "LINE", false},                       \
        {"note", OPT_STR, "note", "N", false},

static const opt_spec server_add_opts[] = {
    {"address", OPT_STR, "address", "IP", true},
    {"memory", OPT_INT, "memory", "MB", true},
    {"storage", OPT_INT, "storage", "MB", true},
    SERVER_OPTIONAL_OPTS{NULL, 0, NULL, NULL, false},
};

static const opt_spec server_modify_opts[] = {
    {"name", OPT_STR, "name", "NAME", false},
    {"address", OPT_STR, "address", "IP", false},
    {"memory", OPT_INT, "memory", "MB", false},
    {"storage", OPT_INT, "storage", "MB", false},
    SERVER_OPTIONAL_OPTS{NULL, 0, NULL, NULL, false},
};

static const opt_spec server_purge_opts[] = {
    {"older-than", OPT_INT, "older_than", "SECONDS", false},
    {NULL, 0, NULL, NULL, false},
};

static const opt_spec distro_add_opts[] = {
    {"path", OPT_STR, "path", "DIR", true},
    {NULL, 0, NULL, NULL, false},
};

static const opt_spec distro_modify_opts[] = {
    {"name", OPT_STR, "name", "NAME", false},
    {"path", OPT_STR, "path", "DIR", false},
    {NULL, 0, NULL, NULL, false},
};

static const opt_spec container_add_opts[] = {
    {"customer", OPT_STR, "customer", "USERNAME", true},
    {"server", OPT_STR, "server", "NAME_OR_ADDRESS", true},
    {"name", OPT_STR, "name", "NAME", true},
    {"memory", OPT_INT, "memory", "MB", true},
    {"storage", OPT_INT, "storage", "MB", true},
    {NULL, 0, NULL, NULL, false},
};

static const opt_spec container_list_opts[] = {
    {"customer", OPT_STR, "customer", "USERNAME", false},
    {"server", OPT_STR, "server", "NAME_OR_ADDRESS", false},
    {NULL, 0, NULL, NULL, false},
};

static const opt_spec container_modify_opts[] = {
    {"max-alarms", OPT_INT, "max_alarms", "N", false},
    {"memory", OPT_INT, "memory", "MB", false},
    {"storage", OPT_INT, "storage", "MB", false},
    {"name", OPT_STR, "name", "NAME", false},
    {NULL, 0, NULL, NULL, false},
};

static const opt_spec domain_add_opts[] = {
    {"customer", OPT_STR, "customer", "USERNAME", true},
    {NULL, 0, NULL, NULL, false},
};

static const opt_spec legion_add_opts[] = {
    {"address", OPT_STR, "address", "IP", true},
    {"key", OPT_STR, "key", "K", false},
    {"quorum", OPT_INT, "quorum", "N", false},
    {"node", OPT_LIST, "nodes", "SERVER", false},
    {"note", OPT_STR, "note", "N", false},
    {NULL, 0, NULL, NULL, false},
};

static const opt_spec legion_modify_opts[] = {
    {"name", OPT_STR, "name", "NAME", false},
    {"address", OPT_STR, "address", "IP", false},
    {"key", OPT_STR, "key", "K", false},
    {"quorum", OPT_INT, "quorum", "N", false},
    {"node", OPT_LIST, "nodes", "SERVER", false},
    {"note", OPT_STR, "note", "N", false},
    {NULL, 0, NULL, NULL, false},
};

static const opt_spec news_add_opts[] = {
    {"public", OPT_FLAG, "public", NULL, false},
    {NULL, 0, NULL, NULL, false},
};

/* ---- tables ---- */

static const column_t customer_cols[] = {
    {"id", "ID", COL_TEXT},           {"username", "USERNAME", COL_TEXT},
    {"company", "COMPANY", COL_TEXT}, {"vat", "VAT", COL_TEXT},
    {"email", "EMAIL", COL_TEXT},     {"containers", "CONTAINERS", COL_TEXT},
    {"servers", "SERVERS", COL_TEXT}, {NULL, NULL, 0},
};

static const column_t server_cols[] = {
    {"id", "ID", COL_TEXT},
    {"name", "NAME", COL_TEXT},
    {"address", "ADDRESS", COL_TEXT},
    {"memory", "MEMORY", COL_TEXT},
    {"used_memory", "MEM_USED", COL_TEXT},
    {"storage", "STORAGE", COL_TEXT},
    {"used_storage", "STO_USED", COL_TEXT},
    {"owner", "OWNER", COL_TEXT},
    {"datacenter", "DATACENTER", COL_TEXT},
    {"weight", "WEIGHT", COL_TEXT},
    {NULL, NULL, 0},
};

static const column_t distro_cols[] = {
    {"id", "ID", COL_TEXT},
    {"name", "NAME", COL_TEXT},
    {"path", "PATH", COL_TEXT},
    {NULL, NULL, 0},
};

static const column_t container_cols[] = {
    {"uid", "UID", COL_TEXT},
    {"name", "NAME", COL_TEXT},
    {"customer", "CUSTOMER", COL_TEXT},
    {"server", "SERVER", COL_TEXT},
    {"server_address", "ADDRESS", COL_TEXT},
    {"ip", "IP", COL_TEXT},
    {"memory", "MEMORY", COL_TEXT},
    {"storage", "STORAGE", COL_TEXT},
    {"distro_name", "DISTRO", COL_TEXT},
    {NULL, NULL, 0},
};

static const column_t domain_cols[] = {
    {"id", "ID", COL_TEXT},
    {"name", "NAME", COL_TEXT},
    {"customer", "CUSTOMER", COL_TEXT},
    {"uuid", "UUID", COL_TEXT},
    {NULL, NULL, 0},
};

static const column_t legion_cols[] = {
    {"id", "ID", COL_TEXT},           {"name", "NAME", COL_TEXT},
    {"address", "ADDRESS", COL_TEXT}, {"quorum", "QUORUM", COL_TEXT},
    {"nodes", "NODES", COL_TEXT},     {"note", "NOTE", COL_TEXT},
    {NULL, NULL, 0},
};

static const column_t news_cols[] = {
    {"id", "ID", COL_TEXT},
    {"date", "DATE (UTC)", COL_DATE},
    {"public", "PUBLIC", COL_TEXT},
    {"content", "CONTENT", COL_TEXT},
    {NULL, NULL, 0},
};

/* ---- the commands ---- */

static const cmd_t commands[] = {
    {"customer", "add", ACT_ADD, "/customers", "USERNAME", false, "username", customer_add_opts,
     NULL, NULL, "create a customer account", NULL},
    {"customer", "list", ACT_LIST, "/customers", NULL, false, NULL, NULL, customer_cols, NULL,
     "list the customers", NULL},
    {"customer", "show", ACT_SHOW, "/customers", "USERNAME", false, NULL, NULL, NULL, NULL,
     "show one customer", NULL},
    {"customer", "modify", ACT_MODIFY, "/customers", "USERNAME", false, NULL,
     customer_modify_opts, NULL, NULL, "change a customer's password or data", NULL},
    {"customer", "delete", ACT_DELETE, "/customers", "USERNAME", false, NULL, NULL, NULL, NULL,
     "delete a customer (it must have no containers left)", NULL},

    {"server", "add", ACT_ADD, "/servers", "NAME", false, "name", server_add_opts, NULL, NULL,
     "add a server (node); --owner gives it to one customer.  The answer shows the\n"
     "      node's secret (node_secret) once: imperium-node connects with it", NULL},
    {"server", "list", ACT_LIST, "/servers", NULL, false, NULL, NULL, server_cols, NULL,
     "list the servers with their used memory and storage", NULL},
    {"server", "show", ACT_SHOW, "/servers", "NAME", false, NULL, NULL, NULL, NULL,
     "show one server (by name or address)", NULL},
    {"server", "modify", ACT_MODIFY, "/servers", "NAME", false, NULL, server_modify_opts, NULL,
     NULL,
     "change a server (--owner '' clears the owner; --hosts-line and --resolv-line\n"
     "      replace all the lines, '' clears them)",
     NULL},
    {"server", "delete", ACT_DELETE, "/servers", "NAME", false, NULL, NULL, NULL, NULL,
     "delete a server (it must have no containers left)", NULL},
    {"server", "secret", ACT_DO, "/servers", "NAME", false, NULL, NULL, NULL, "node_secret",
     "give the server's node a new secret (printed once; the old one stops working)",
     "secret"},
    {"server", "purge-deleted", ACT_DO, "/servers", "NAME", false, NULL, server_purge_opts,
     NULL, "purge_deleted_before",
     "let the server's node remove the homes of deleted containers (kept in\n"
     "      <containers_dir>/.deleted) deleted at least SECONDS ago (default: all);\n"
     "      prints the unix time before which they go",
     "purge_deleted"},

    {"distro", "add", ACT_ADD, "/distros", "NAME", false, "name", distro_add_opts, NULL, NULL,
     "add a distro to the pool (DIR: its rootfs on the nodes)", NULL},
    {"distro", "list", ACT_LIST, "/distros", NULL, false, NULL, NULL, distro_cols, NULL,
     "list the distros", NULL},
    {"distro", "modify", ACT_MODIFY, "/distros", "ID", true, NULL, distro_modify_opts, NULL,
     NULL, "rename a distro or move its rootfs (its containers restart)", NULL},
    {"distro", "delete", ACT_DELETE, "/distros", "ID", true, NULL, NULL, NULL, NULL,
     "delete a distro no container uses", NULL},
    {"distro", "build", ACT_BUILD, "/distros", "NAME", false, "name", distro_build_opts, NULL,
     "id",
     "build a Debian rootfs with debootstrap (uwsgi-core, python3/psgi/rack plugins,\n"
     "      `python` alias) in DIR (default /var/lib/imperium/distros/NAME) and add it to\n"
     "      the pool; prints its id.  Needs root and the debootstrap package",
     NULL},

    {"container", "add", ACT_ADD, "/containers", NULL, false, NULL, container_add_opts, NULL,
     "uid", "create a container for a customer on a server; prints its uid", NULL},
    {"container", "list", ACT_LIST, "/containers", NULL, false, NULL, container_list_opts,
     container_cols, NULL, "list containers, optionally of one customer and/or server", NULL},
    {"container", "show", ACT_SHOW, "/containers", "UID", true, NULL, NULL, NULL, NULL,
     "show one container", NULL},
    {"container", "modify", ACT_MODIFY, "/containers", "UID", true, NULL,
     container_modify_opts, NULL, NULL,
     "change a container's alarm slots, memory, storage or name", NULL},
    {"container", "delete", ACT_DELETE, "/containers", "UID", true, NULL, NULL, NULL, NULL,
     "delete a container", NULL},

    {"domain", "add", ACT_ADD, "/domains", "NAME", false, "name", domain_add_opts, NULL, NULL,
     "map a domain to a customer (without the DNS check)", NULL},
    {"domain", "list", ACT_LIST, "/domains", NULL, false, NULL, NULL, domain_cols, NULL,
     "list every customer's domains", NULL},
    {"domain", "delete", ACT_DELETE, "/domains", "NAME", false, NULL, NULL, NULL, NULL,
     "remove a domain", NULL},

    {"legion", "add", ACT_ADD, "/legions", "NAME", false, "name", legion_add_opts, NULL, NULL,
     "create a legion (failover address shared by its node servers)", NULL},
    {"legion", "list", ACT_LIST, "/legions", NULL, false, NULL, NULL, legion_cols, NULL,
     "list the legions", NULL},
    {"legion", "modify", ACT_MODIFY, "/legions", "NAME", false, NULL, legion_modify_opts, NULL,
     NULL, "change a legion; --node replaces all nodes ('' clears them)", NULL},
    {"legion", "delete", ACT_DELETE, "/legions", "NAME", false, NULL, NULL, NULL, NULL,
     "delete a legion", NULL},

    {"news", "add", ACT_ADD, "/news", "CONTENT", false, "content", news_add_opts, NULL, "id",
     "publish news (--public: anonymous callers see it too); prints its id", NULL},
    {"news", "list", ACT_LIST, "/news", NULL, false, NULL, NULL, news_cols, NULL,
     "list the news, newest first", NULL},
    {"news", "delete", ACT_DELETE, "/news", "ID", true, NULL, NULL, NULL, NULL,
     "delete news", NULL},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const struct {
    const char *object, *what;
} objects[] = {
    {"customer", "customer accounts"},
    {"server", "servers (nodes)"},
    {"distro", "the distro pool"},
    {"container", "containers of any customer"},
    {"domain", "domains mapped to customers"},
    {"legion", "legions (failover groups of servers)"},
    {"news", "news for customers"},
};

/* ---- help ---- */

/* "imperium admin server add NAME --address IP ...", wrapped before
 * column 92 with continuation lines indented under the command. */
static void cmd_line(FILE *f, const cmd_t *c, int indent)
{
    int col = indent + fprintf(f, "imperium admin %s %s%s%s", c->object, c->verb,
                               c->pos ? " " : "", c->pos ? c->pos : "");
    for (const opt_spec *o = c->opts; o && o->name; o++) {
        char item[128];
        if (args_opt_usage(o, item, sizeof item) < 0)
            continue;
        if (col + 1 + (int)strlen(item) > 92) {
            fprintf(f, "\n%*s", indent + 8, "");
            col = indent + 8;
        } else {
            fputc(' ', f);
            col++;
        }
        col += fprintf(f, "%s", item);
    }
    fputc('\n', f);
}

static void cmd_help(FILE *f, const cmd_t *c)
{
    fputs("usage: ", f);
    cmd_line(f, c, 7);
    fprintf(f, "  %s\n", c->help);
    fputs("Global options: --api URL, --token-file FILE, --config FILE, --timeout SECONDS,\n"
          "  --json (see imperium --help)\n",
          f);
}

static void object_help(FILE *f, const char *object, bool verbose)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (object && strcmp(commands[i].object, object) != 0)
            continue;
        fputs("  ", f);
        cmd_line(f, &commands[i], 2);
        if (verbose)
            fprintf(f, "      %s\n", commands[i].help);
    }
}

void admin_help(FILE *f, bool verbose)
{
    fputs("Admin commands (the supplier's; authenticated by the admin token):\n", f);
    for (size_t i = 0; i < sizeof objects / sizeof objects[0]; i++) {
        if (verbose)
            fprintf(f, "\n %s: %s\n", objects[i].object, objects[i].what);
        object_help(f, objects[i].object, verbose);
    }
    fputs(verbose ? "\n db: the database itself, opened by URL (no API; stop the APIs for a "
                    "copy)\n"
                  : "Database commands (the database itself, by URL; no API):\n",
          f);
    db_help(f, verbose);
}

/* ---- running one command ---- */

/* "?key=value&..." from the options of a list command ("" when none). */
static char *query_string(json_t *opts, err_t *e)
{
    buf_t b = {0};
    const char *key;
    json_t *v;
    if (buf_append(&b, "", 0) < 0)
        goto oom;
    json_object_foreach(opts, key, v)
    {
        char *esc = http_escape(json_string_value(v), e);
        if (!esc) {
            buf_free(&b);
            return NULL;
        }
        int rc = (buf_appends(&b, b.len ? "&" : "?") < 0 || buf_appends(&b, key) < 0 ||
                  buf_appends(&b, "=") < 0 || buf_appends(&b, esc) < 0);
        free(esc);
        if (rc)
            goto oom;
    }
    return b.data;
oom:
    buf_free(&b);
    err_set(e, ERR_INTERNAL, "out of memory");
    return NULL;
}

static char *request_path(const cmd_t *c, const char *pos, json_t *opts, err_t *e)
{
    if (c->act == ACT_LIST) {
        char *q = query_string(opts, e);
        char *p = q ? str_printf("%s%s", c->path, q) : NULL;
        if (q && !p)
            err_set(e, ERR_INTERNAL, "out of memory");
        free(q);
        return p;
    }
    if (c->act == ACT_ADD) {
        char *p = strdup(c->path);
        if (!p)
            err_set(e, ERR_INTERNAL, "out of memory");
        return p;
    }
    char *esc = http_escape(pos, e);
    char *p = esc ? str_printf("%s/%s%s%s", c->path, esc, c->sub ? "/" : "",
                               c->sub ? c->sub : "")
                  : NULL;
    if (esc && !p)
        err_set(e, ERR_INTERNAL, "out of memory");
    free(esc);
    return p;
}

static int print_answer(cli_t *cli, const cmd_t *c, const char *pos, const http_resp_t *resp,
                        err_t *e)
{
    if (cli->json)
        return out_raw(stdout, resp, e);
    if (c->act == ACT_DELETE) {
        printf("deleted %s %s\n", c->object, pos);
        return 0;
    }
    json_t *o = http_json(resp, e);
    if (!o)
        return -1;
    int rc;
    if (c->act == ACT_LIST) {
        rc = out_table(stdout, o, c->cols, e);
    } else if (c->print_key) {
        char *s = out_value(json_object_get(o, c->print_key), ", ", "-");
        rc = s ? 0 : err_set(e, ERR_INTERNAL, "out of memory");
        if (s)
            printf("%s\n", s);
        free(s);
    } else {
        json_object_del(o, "message");
        rc = out_object(stdout, o, e);
    }
    json_decref(o);
    return rc;
}

static int run_cmd(cli_t *cli, const cmd_t *c, int argc, char **argv, err_t *e)
{
    char name[64];
    snprintf(name, sizeof name, "admin %s %s", c->object, c->verb);
    args_t a;
    if (args_parse(cli, c->opts, name, argc, argv, &a, e) < 0)
        return -1;
    int rc = -1;
    char *token = NULL, *path = NULL, *url = NULL, *body = NULL;
    http_resp_t resp = {0};
    const char *pos = a.npos > 0 ? a.pos[0] : NULL;
    long long num;
    if (cli->help) {
        cmd_help(stdout, c);
        rc = 0;
        goto out;
    }
    if (c->pos && !pos) {
        err_set(e, ERR_INPUT, "%s: missing %s (see imperium %s --help)", name, c->pos, name);
        goto out;
    }
    if (a.npos > (c->pos ? 1 : 0)) {
        err_set(e, ERR_INPUT, "%s: unexpected argument '%s' (see imperium %s --help)", name,
                a.pos[c->pos ? 1 : 0], name);
        goto out;
    }
    if (c->pos_int && args_int(pos, c->pos, name, &num, e) < 0)
        goto out;
    if (c->act == ACT_BUILD) {
        rc = distro_build(cli, pos, a.opts, e);
        goto out;
    }
    if (c->act == ACT_MODIFY && json_object_size(a.opts) == 0) {
        err_set(e, ERR_INPUT,
                "%s: nothing to change: give at least one option (see imperium %s --help)", name,
                name);
        goto out;
    }
    if (c->act == ACT_ADD || c->act == ACT_MODIFY || c->act == ACT_DO) {
        if (c->pos_field && json_object_set_new(a.opts, c->pos_field, json_string(pos)) < 0) {
            err_set(e, ERR_INPUT, "%s: %s is not valid UTF-8", name, c->pos);
            goto out;
        }
        if (!(body = json_dumps(a.opts, JSON_COMPACT))) {
            err_set(e, ERR_INTERNAL, "out of memory");
            goto out;
        }
    }
    if (cli_settle(cli, e) < 0 || !(token = cli_admin_token(cli, e)) ||
        !(path = request_path(c, pos, a.opts, e)) ||
        !(url = cli_url(cli, CLI_ADMIN_PREFIX, path, e)))
        goto out;
    static const char *const methods[] = {
        [ACT_LIST] = "GET", [ACT_SHOW] = "GET", [ACT_ADD] = "POST",
        [ACT_MODIFY] = "POST", [ACT_DELETE] = "DELETE", [ACT_DO] = "POST",
    };
    http_req_t rq = {.method = methods[c->act], .url = url, .bearer = token, .body = body,
                     .timeout = cli->timeout};
    if (http_request(&rq, &resp, e) < 0)
        goto out;
    if (http_check(&resp, e) < 0) {
        if (resp.status == 401) {
            char msg[sizeof e->msg];
            snprintf(msg, sizeof msg, "%s", e->msg);
            err_set(e, ERR_INTERNAL, "%s: the API refused the admin token (check --token-file, "
                    "IMPERIUM_ADMIN_TOKEN_FILE or IMPERIUM_ADMIN_TOKEN)", msg);
        }
        goto out;
    }
    if (print_answer(cli, c, pos, &resp, e) < 0)
        goto out;
    rc = 0;
out:
    http_resp_free(&resp);
    if (token) {
        memset(token, 0, strlen(token));
        free(token);
    }
    free(path);
    free(url);
    free(body);
    args_free(&a);
    return rc;
}

int admin_main(cli_t *cli, int argc, char **argv, err_t *e)
{
    int i = 0;
    if (args_globals(cli, argc, argv, &i, e) < 0)
        return -1;
    if (i >= argc) {
        if (!cli->help)
            return err_set(e, ERR_INPUT, "admin: which object? (see imperium admin --help)");
        admin_help(stdout, true);
        return 0;
    }
    const char *object = argv[i++];
    if (!strcmp(object, "db")) /* the database itself, not the API */
        return db_main(cli, argc - i, argv + i, e);
    bool known = false;
    for (size_t k = 0; k < sizeof objects / sizeof objects[0]; k++)
        known |= !strcmp(objects[k].object, object);
    if (!known)
        return err_set(e, ERR_INPUT, "unknown admin object '%s' (see imperium admin --help)",
                       object);
    if (args_globals(cli, argc, argv, &i, e) < 0)
        return -1;
    if (i >= argc) {
        if (!cli->help)
            return err_set(e, ERR_INPUT, "admin %s: which action? (see imperium admin %s --help)",
                           object, object);
        fputs("usage:\n", stdout);
        object_help(stdout, object, true);
        return 0;
    }
    const char *verb = argv[i++];
    for (size_t k = 0; k < NCOMMANDS; k++)
        if (!strcmp(commands[k].object, object) && !strcmp(commands[k].verb, verb))
            return run_cmd(cli, &commands[k], argc - i, argv + i, e);
    return err_set(e, ERR_INPUT, "unknown command 'admin %s %s' (see imperium admin %s --help)",
                   object, verb, object);
}
