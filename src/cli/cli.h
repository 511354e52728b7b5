/* cli.h - the `imperium` command-line tool: what its files share.
 *
 *   main.c         usage, dispatch, exit codes
 *   context.c      the run's settings: global options, config file, token
 *   args.c         option parsing for one command (tables of opt_spec)
 *   http_client.c  libcurl: one request, one answer; API errors as err_t
 *   output.c       tables, key: value lines, raw JSON
 *   admin.c        `imperium admin ...` (the supplier's commands)
 *   call.c         `imperium call ...` (the customer API)
 *   distro_build.c `imperium admin distro build` (debootstrap, then the API)
 *   db.c           `imperium admin db ...` (the database itself: migrate, copy)
 *
 * Every function that can fail takes an err_t and returns -1; only main()
 * prints the message and picks the exit code: 2 for ERR_INPUT (a usage
 * error), 1 for anything else (the API refused, the API is unreachable...). */
#ifndef IMP_CLI_H
#define IMP_CLI_H

#include "../common/config.h"
#include "../common/err.h"
#include "../common/settings.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#define CLI_DEFAULT_API "http://127.0.0.1:8080"
#define CLI_DEFAULT_TOKEN_FILE "/etc/imperium/admin.token"
#define CLI_ADMIN_PREFIX "/admin"
#define CLI_CUSTOMER_PREFIX "/api"

/* The config file's settings (context.c); they point into cli_t.conf. */
typedef struct {
    const char *api, *token, *token_file, *user, *password;
} cli_file_t;

/* Settings of one run: flags point into argv, `api` is owned (cli_free). */
typedef struct {
    char *api;              /* base URL without a trailing '/', once cli_settle ran */
    const char *api_flag;   /* --api */
    const char *token_file; /* --token-file (NULL: env, then the default) */
    const char *config;     /* --config (NULL: env IMPERIUM_CONFIG, else none) */
    bool json;              /* --json: print the API's answers as they are */
    bool help;              /* --help / -h seen */
    int timeout;            /* --timeout: seconds for one request (0: the default) */
    conf_t conf;            /* the config file, once cli_settle loaded it */
    bool conf_loaded;
    cli_file_t file;        /* its settings */
} cli_t;

/* The global options (--api, --token-file, --config, --timeout, --json,
 * --help), accepted anywhere on the line. */
extern const setting_t cli_global_settings[];

void cli_free(cli_t *cli);

/* ---- args.c ---- */

typedef enum {
    OPT_STR,  /* --name VALUE */
    OPT_INT,  /* --name N (a base-10 integer) */
    OPT_FLAG, /* --name */
    OPT_LIST, /* --name VALUE, repeatable; empty values are dropped */
} opt_kind;

typedef struct {
    const char *name;  /* without the leading "--" */
    opt_kind kind;
    const char *field; /* key of the value in args_t.opts (usually the JSON field) */
    const char *meta;  /* placeholder in the help, e.g. "MB" */
    bool required;
} opt_spec;

typedef struct {
    json_t *opts; /* field -> string / integer / true / list of strings */
    char **pos;   /* positional arguments (point into argv) */
    int npos;
} args_t;

/* Parse argv[0..argc) against `spec` (terminated by {NULL}) plus the global
 * options (--api, --token-file, --config, --timeout, --json, --help), which
 * set `cli`.
 * Required options are checked unless --help was given.  `cmd` names the
 * command in messages. */
int args_parse(cli_t *cli, const opt_spec *spec, const char *cmd, int argc, char **argv,
               args_t *out, err_t *e);
/* Consume the global options at argv[*i...]; *i is left on the first word
 * that is not one (or argc). */
int args_globals(cli_t *cli, int argc, char **argv, int *i, err_t *e);
void args_free(args_t *a);
/* One option as the help shows it: "--password P", "[--company C]",
 * "[--hosts-line LINE]...". */
int args_opt_usage(const opt_spec *o, char *out, size_t len);
/* Parse a positional integer argument; a usage error names `what`. */
int args_int(const char *s, const char *what, const char *cmd, long long *out, err_t *e);

/* ---- http_client.c ---- */

typedef struct {
    const char *method;   /* GET, POST, DELETE, ... */
    const char *url;
    const char *bearer;   /* admin token, or NULL */
    const char *user;     /* HTTP Basic credentials, or NULL */
    const char *password;
    const char *body;     /* JSON text, or NULL */
    long timeout;         /* seconds for the whole request; 0: 120 */
} http_req_t;

typedef struct {
    long status;
    char *body; /* always NUL-terminated once http_request succeeded */
    size_t len;
} http_resp_t;

int http_init(err_t *e);
void http_cleanup(void);
/* Perform one request.  -1 only when no answer came (unreachable, timeout,
 * out of memory); any HTTP status is a success here. */
int http_request(const http_req_t *rq, http_resp_t *resp, err_t *e);
void http_resp_free(http_resp_t *resp);
/* 0 for a 2xx answer, else -1 with "<status> <error>: <reason>" in e. */
int http_check(const http_resp_t *resp, err_t *e);
/* The answer's body as JSON (a new reference), or NULL with e set. */
json_t *http_json(const http_resp_t *resp, err_t *e);
/* Percent-encode one path segment or query value; free() the result. */
char *http_escape(const char *s, err_t *e);

/* ---- output.c ---- */

typedef enum { COL_TEXT, COL_DATE } col_kind;

typedef struct {
    const char *key;    /* field of each object */
    const char *header; /* column title */
    col_kind kind;
} column_t;

/* An aligned table of the objects of `list`, one row each. */
int out_table(FILE *f, json_t *list, const column_t *cols, err_t *e);
/* One "key: value" line per field of `o`, keys aligned. */
int out_object(FILE *f, json_t *o, err_t *e);
/* The body of an answer as received, ending with a newline. */
int out_raw(FILE *f, const http_resp_t *resp, err_t *e);
/* A value as text: strings as they are, lists joined by `sep`, null as
 * `null_text`.  free() the result. */
char *out_value(json_t *v, const char *sep, const char *null_text);

/* ---- admin.c / call.c ---- */

/* argv starts after the word "admin" / "call". */
int admin_main(cli_t *cli, int argc, char **argv, err_t *e);
int call_main(cli_t *cli, int argc, char **argv, err_t *e);
/* Every admin command; with `verbose`, each with what it does. */
void admin_help(FILE *f, bool verbose);
void call_help(FILE *f);

/* ---- distro_build.c ---- */

extern const opt_spec distro_build_opts[];
/* `admin distro build NAME` with its parsed options; prints the new id. */
int distro_build(cli_t *cli, const char *name, json_t *opts, err_t *e);

/* ---- db.c ---- */

/* `admin db ACTION ...`: argv starts after the word "db". */
int db_main(cli_t *cli, int argc, char **argv, err_t *e);
/* The db commands, one line each; with `verbose`, each with what it does. */
void db_help(FILE *f, bool verbose);

/* ---- context.c: settings resolved from flags, environment and config file ---- */

/* Load the config file and settle the API base URL (flag > IMPERIUM_API >
 * config `api` > default); a malformed URL is a usage error. */
int cli_settle(cli_t *cli, err_t *e);
/* Read the admin token: --token-file > IMPERIUM_ADMIN_TOKEN >
 * IMPERIUM_ADMIN_TOKEN_FILE > config token_file > the default file.
 * Returns a fresh string. */
char *cli_admin_token(const cli_t *cli, err_t *e);
/* base + prefix + path, as a fresh string. */
char *cli_url(const cli_t *cli, const char *prefix, const char *path, err_t *e);

#endif
