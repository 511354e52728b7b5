/* main.c - `imperium`: usage and dispatch (the settings are context.c's).
 *
 * Exit codes: 0 done, 1 the API (or, for `admin db`, the database) refused
 * or could not be reached, 2 usage error.  Only this file prints errors and
 * decides the exit code. */
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
          "  admin db ACTION ...            migrate or copy the database (imperium admin db --help)\n"
          "  call METHOD PATH [JSON_BODY]   call the customer API as a customer\n"
          "  help                           this text\n"
          "\n"
          "Global options (accepted anywhere on the line):\n",
          f);
    settings_help_flags(f, cli_global_settings);
    fputc('\n', f);
    admin_help(f, false);
    fputc('\n', f);
    call_help(f);
    fputs("\nExit status: 0 done, 1 the API or the database refused or is unreachable, 2 usage "
          "error.\n",
          f);
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
