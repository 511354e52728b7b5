/* main.c - `imperium`: global options, settings and dispatch.
 *
 * Exit codes: 0 done, 1 the API refused or could not be reached, 2 usage
 * error.  Only this file prints errors and decides the exit code. */
#include "../common/strutil.h"
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fputs("usage: imperium [global options] COMMAND ...\n"
          "\n"
          "Commands:\n"
          "  admin OBJECT ACTION ...        the supplier's commands (imperium admin --help)\n"
          "  call METHOD PATH [JSON_BODY]   call the customer API as a customer\n"
          "  help                           this text\n"
          "\n"
          "Global options (accepted anywhere on the line):\n"
          "  --api URL          the API base URL (env IMPERIUM_API, default " CLI_DEFAULT_API
          ");\n"
          "                     the admin API is under " CLI_ADMIN_PREFIX
          ", the customer API under " CLI_CUSTOMER_PREFIX "\n"
          "  --token-file FILE  the admin token file (env IMPERIUM_ADMIN_TOKEN_FILE, default\n"
          "                     " CLI_DEFAULT_TOKEN_FILE
          "); env IMPERIUM_ADMIN_TOKEN gives the token itself\n"
          "  --config FILE      `key = value` settings: api, token, token_file, user, password\n"
          "                     (env IMPERIUM_CONFIG); flags and environment override it\n"
          "  --timeout SECONDS  give up on a request after this long (default 120)\n"
          "  --json             print the API's JSON answers as they are\n"
          "  -h, --help         help (also after any command)\n"
          "\n",
          f);
    admin_help(f, false);
    fputc('\n', f);
    call_help(f);
    fputs("\nExit status: 0 done, 1 the API refused or is unreachable, 2 usage error.\n", f);
}

void cli_free(cli_t *cli)
{
    free(cli->api);
    free(cli->token_file);
    free(cli->config);
    if (cli->conf_loaded)
        conf_free(&cli->conf);
    memset(cli, 0, sizeof *cli);
}

static const char *const conf_keys[] = {"api", "token", "token_file", "user", "password",
                                        NULL};

int cli_settle(cli_t *cli, err_t *e)
{
    const char *path = cli->config ? cli->config : getenv("IMPERIUM_CONFIG");
    if (path && *path && !cli->conf_loaded) {
        if (conf_load(&cli->conf, path, e) < 0)
            return -1;
        cli->conf_loaded = true;
        if (conf_check_keys(&cli->conf, conf_keys, e) < 0)
            return -1;
    }
    const char *api = cli->api;
    if (!api || !*api)
        api = getenv("IMPERIUM_API");
    if (!api || !*api)
        api = cli_conf(cli, "api");
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

const char *cli_conf(const cli_t *cli, const char *key)
{
    return cli->conf_loaded ? conf_get(&cli->conf, key) : NULL;
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
        direct = file && *file ? NULL : cli_conf(cli, "token");
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
        file = cli_conf(cli, "token_file");
    return read_token_file(file && *file ? file : CLI_DEFAULT_TOKEN_FILE, e);
}

char *cli_url(const cli_t *cli, const char *prefix, const char *path, err_t *e)
{
    char *url = str_printf("%s%s%s%s", cli->api, prefix, path[0] == '/' ? "" : "/", path);
    if (!url)
        err_set(e, ERR_INTERNAL, "out of memory");
    return url;
}

static int run(cli_t *cli, int argc, char **argv, err_t *e)
{
    int i = 1;
    if (args_globals(cli, argc, argv, &i, e) < 0)
        return -1;
    if (i >= argc || !strcmp(argv[i], "help")) {
        if (cli->help || i < argc) {
            usage(stdout);
            return 0;
        }
        return err_set(e, ERR_INPUT, "a command is needed (see imperium --help)");
    }
    const char *cmd = argv[i];
    if (!strcmp(cmd, "admin"))
        return admin_main(cli, argc - i - 1, argv + i + 1, e);
    if (!strcmp(cmd, "call"))
        return call_main(cli, argc - i - 1, argv + i + 1, e);
    return err_set(e, ERR_INPUT, "unknown command '%s' (see imperium --help)", cmd);
}

int main(int argc, char **argv)
{
    cli_t cli = {0};
    err_t e = {0};
    if (http_init(&e) < 0) {
        fprintf(stderr, "imperium: %s\n", e.msg);
        return 1;
    }
    int rc = run(&cli, argc, argv, &e);
    cli_free(&cli);
    http_cleanup();
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "imperium: cannot write the output: %s\n", strerror(errno));
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "imperium: %s\n", e.msg[0] ? e.msg : "failed");
        return e.kind == ERR_INPUT ? 2 : 1;
    }
    return 0;
}
