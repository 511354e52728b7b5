/* context.c - the settings of one `imperium` run: the global flags and the
 * config file, each one settings table (settings.h), then the API URL and
 * the admin token resolved from flags, environment and file. */
#include "../common/strutil.h"
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define AT(field) SETTING_AT(cli_t, field)

/* Accepted anywhere on the line (args.c); `imperium --help` lists them. */
const setting_t cli_global_settings[] = {
    {"api", 0, SET_STRP, AT(api_flag), .flags = SET_CMDLINE, .meta = "URL",
     .help = "the API base URL (env IMPERIUM_API, default " CLI_DEFAULT_API "); the admin "
             "API is under " CLI_ADMIN_PREFIX ", the customer API under " CLI_CUSTOMER_PREFIX},
    {"token_file", 0, SET_STRP, AT(token_file), .flags = SET_CMDLINE, .meta = "FILE",
     .help = "the admin token file (env IMPERIUM_ADMIN_TOKEN_FILE, default "
             CLI_DEFAULT_TOKEN_FILE "); env IMPERIUM_ADMIN_TOKEN gives the token itself"},
    {"config", 0, SET_STRP, AT(config), .flags = SET_CMDLINE, .meta = "FILE",
     .help = "`key = value` settings: api, token, token_file, user, password (env "
             "IMPERIUM_CONFIG); flags and environment override it"},
    {"timeout", 0, SET_INT, AT(timeout), .min = 1, .max = 86400, .flags = SET_CMDLINE,
     .meta = "SECONDS", .help = "give up on a request after this long (default 120)"},
    {"json", 0, SET_BOOL, AT(json), .flags = SET_CMDLINE,
     .help = "print the API's JSON answers as they are"},
    {"help", 'h', SET_BOOL, AT(help), .flags = SET_CMDLINE,
     .help = "help (also after any command)"},
    {NULL},
};

/* The config file's keys (--config or IMPERIUM_CONFIG). */
static const setting_t cli_file_settings[] = {
    {"api", 0, SET_STRP, AT(file.api), .meta = "URL", .help = "the API base URL"},
    {"token", 0, SET_STRP, AT(file.token), .meta = "TOKEN", .help = "the admin token"},
    {"token_file", 0, SET_STRP, AT(file.token_file), .meta = "FILE",
     .help = "the admin token file"},
    {"user", 0, SET_STRP, AT(file.user), .meta = "NAME",
     .help = "the customer of `imperium call`"},
    {"password", 0, SET_STRP, AT(file.password), .meta = "PASSWORD",
     .help = "the customer's password"},
    {NULL},
};

#undef AT

void cli_free(cli_t *cli)
{
    free(cli->api);
    if (cli->conf_loaded)
        conf_free(&cli->conf);
    memset(cli, 0, sizeof *cli);
}

static int load_config(cli_t *cli, err_t *e)
{
    const char *path = cli->config ? cli->config : getenv("IMPERIUM_CONFIG");
    if (!path || !*path || cli->conf_loaded)
        return 0;
    cli->conf_loaded = true; /* cli_free frees it, also after an error */
    return settings_load_file(cli_file_settings, cli, &cli->conf, path, e);
}

int cli_settle(cli_t *cli, err_t *e)
{
    if (load_config(cli, e) < 0)
        return -1;
    const char *api = cli->api_flag;
    if (!api || !*api)
        api = getenv("IMPERIUM_API");
    if (!api || !*api)
        api = cli->file.api;
    if (!api || !*api)
        api = CLI_DEFAULT_API;
    if (!str_starts_with(api, "http://") && !str_starts_with(api, "https://"))
        return err_set(e, ERR_INPUT, "the API URL must start with http:// or https://: '%s'",
                       api);
    char *copy = strdup(api);
    if (!copy)
        return err_set(e, ERR_INTERNAL, "out of memory");
    size_t n = strlen(copy);
    while (n > 0 && copy[n - 1] == '/')
        copy[--n] = '\0';
    free(cli->api);
    cli->api = copy;
    return 0;
}

static char *read_token_file(const char *path, err_t *e)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        err_set(e, ERR_INTERNAL,
                "cannot read the admin token file %s: %s (give --token-file or set "
                "IMPERIUM_ADMIN_TOKEN_FILE)",
                path, strerror(errno));
        return NULL;
    }
    char line[512];
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    char *token = str_trim(line);
    char *out = NULL;
    if (!*token)
        err_set(e, ERR_INTERNAL, "the admin token file %s is empty", path);
    else if (!(out = strdup(token)))
        err_set(e, ERR_INTERNAL, "out of memory");
    memset(line, 0, sizeof line);
    return out;
}

char *cli_admin_token(const cli_t *cli, err_t *e)
{
    if (cli->token_file)
        return read_token_file(cli->token_file, e);
    const char *direct = getenv("IMPERIUM_ADMIN_TOKEN");
    const char *file = getenv("IMPERIUM_ADMIN_TOKEN_FILE");
    if (!direct || !*direct)
        direct = file && *file ? NULL : cli->file.token;
    if (direct) {
        char *copy = strdup(direct);
        if (!copy) {
            err_set(e, ERR_INTERNAL, "out of memory");
            return NULL;
        }
        char *t = str_trim(copy);
        memmove(copy, t, strlen(t) + 1);
        if (!*copy) {
            free(copy);
            err_set(e, ERR_INTERNAL, "the admin token is empty");
            return NULL;
        }
        return copy;
    }
    if (!file || !*file)
        file = cli->file.token_file;
    return read_token_file(file && *file ? file : CLI_DEFAULT_TOKEN_FILE, e);
}

char *cli_url(const cli_t *cli, const char *prefix, const char *path, err_t *e)
{
    char *url = str_printf("%s%s%s%s", cli->api, prefix, path[0] == '/' ? "" : "/", path);
    if (!url)
        err_set(e, ERR_INTERNAL, "out of memory");
    return url;
}
