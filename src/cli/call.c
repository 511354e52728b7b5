/* call.c - `imperium call METHOD PATH [JSON_BODY]`: one request to the
 * customer API with a customer's credentials, printing the JSON answer. */
#include "../common/strutil.h"
#include "cli.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static const opt_spec call_opts[] = {
    {"user", OPT_STR, "user", "USERNAME", false},
    {"password", OPT_STR, "password", "P", false},
    {NULL, 0, NULL, NULL, false},
};

void call_help(FILE *f)
{
    fputs("Customer commands:\n"
          "  imperium call METHOD PATH [JSON_BODY] [--user USERNAME] [--password P]\n"
          "      call the customer API: PATH is relative to " CLI_CUSTOMER_PREFIX
          " (e.g. /me/), JSON_BODY\n"
          "      is sent as the body ('-' reads it from stdin); credentials default to env\n"
          "      IMPERIUM_USER / IMPERIUM_PASSWORD.  Prints the JSON answer.\n"
          "      e.g. imperium call POST /containers/30001 '{\"distro\": 1}' --user kratos "
          "--password deimos\n",
          f);
}

/* The body argument: as given, or read from stdin for "-"; checked to be
 * JSON so a typo is a usage error instead of a 400 from the API. */
static char *call_body(const char *arg, err_t *e)
{
    buf_t b = {0};
    if (!strcmp(arg, "-")) {
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
            if (buf_append(&b, chunk, n) < 0) {
                buf_free(&b);
                err_set(e, ERR_INTERNAL, "out of memory");
                return NULL;
            }
        if (ferror(stdin)) {
            buf_free(&b);
            err_set(e, ERR_INTERNAL, "cannot read the body from stdin");
            return NULL;
        }
    } else if (buf_appends(&b, arg) < 0) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (!b.data && buf_append(&b, "", 0) < 0) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(b.data, b.len, JSON_DECODE_ANY, &je);
    if (!j) {
        err_set(e, ERR_INPUT, "call: JSON_BODY is not valid JSON: %s (line %d, column %d)",
                je.text, je.line, je.column);
        buf_free(&b);
        return NULL;
    }
    json_decref(j);
    return b.data;
}

/* Indented for people; as received with --json (or when it is not JSON). */
static int print_json(const cli_t *cli, const http_resp_t *resp, err_t *e)
{
    json_t *j = cli->json ? NULL : json_loadb(resp->body, resp->len, JSON_DECODE_ANY, NULL);
    if (!j)
        return out_raw(stdout, resp, e);
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    json_decref(j);
    if (!s)
        return err_set(e, ERR_INTERNAL, "out of memory");
    printf("%s\n", s);
    free(s);
    return 0;
}

int call_main(cli_t *cli, int argc, char **argv, err_t *e)
{
    static const char name[] = "call";
    args_t a;
    if (args_parse(cli, call_opts, name, argc, argv, &a, e) < 0)
        return -1;
    int rc = -1;
    char method[16], *body = NULL, *url = NULL;
    http_resp_t resp = {0};
    if (cli->help) {
        call_help(stdout);
        rc = 0;
        goto out;
    }
    if (a.npos < 2) {
        err_set(e, ERR_INPUT, "%s: missing %s (usage: imperium call METHOD PATH [JSON_BODY])",
                name, a.npos ? "PATH" : "METHOD and PATH");
        goto out;
    }
    if (a.npos > 3) {
        err_set(e, ERR_INPUT, "%s: unexpected argument '%s'", name, a.pos[3]);
        goto out;
    }
    size_t mlen = strlen(a.pos[0]);
    if (mlen == 0 || mlen >= sizeof method) {
        err_set(e, ERR_INPUT, "%s: bad METHOD '%s'", name, a.pos[0]);
        goto out;
    }
    for (size_t k = 0; k <= mlen; k++) {
        if (k < mlen && !isalpha((unsigned char)a.pos[0][k])) {
            err_set(e, ERR_INPUT, "%s: bad METHOD '%s'", name, a.pos[0]);
            goto out;
        }
        method[k] = (char)toupper((unsigned char)a.pos[0][k]);
    }
    const char *user = json_string_value(json_object_get(a.opts, "user"));
    const char *password = json_string_value(json_object_get(a.opts, "password"));
    if (a.npos == 3 && !(body = call_body(a.pos[2], e)))
        goto out;
    if (cli_settle(cli, e) < 0)
        goto out;
    if (!user)
        user = getenv("IMPERIUM_USER");
    if (!user)
        user = cli->file.user;
    if (!password)
        password = getenv("IMPERIUM_PASSWORD");
    if (!password)
        password = cli->file.password;
    if (user && *user && !password) {
        err_set(e, ERR_INPUT, "%s: a password is needed for '%s': give --password or set "
                              "IMPERIUM_PASSWORD",
                name, user);
        goto out;
    }
    if (!(url = cli_url(cli, CLI_CUSTOMER_PREFIX, a.pos[1], e)))
        goto out;
    http_req_t rq = {.method = method, .url = url, .body = body,
                     .user = user && *user ? user : NULL, .password = password,
                     .timeout = cli->timeout};
    if (http_request(&rq, &resp, e) < 0)
        goto out;
    if (http_check(&resp, e) < 0) {
        if (resp.status == 401) {
            char msg[sizeof e->msg];
            snprintf(msg, sizeof msg, "%s", e->msg);
            err_set(e, ERR_INTERNAL, "%s: %s", msg,
                    rq.user ? "wrong username or password"
                            : "give --user/--password or set IMPERIUM_USER/IMPERIUM_PASSWORD");
        }
        goto out;
    }
    if (print_json(cli, &resp, e) < 0)
        goto out;
    rc = 0;
out:
    http_resp_free(&resp);
    free(body);
    free(url);
    args_free(&a);
    return rc;
}
