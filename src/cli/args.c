/* args.c - option parsing for one command.
 *
 * Options are long only (`--name VALUE` or `--name=VALUE`), may come before,
 * between or after the positional arguments, and `--` ends them.  The global
 * options are accepted everywhere, so `imperium admin customer list --json`
 * and `imperium --json admin customer list` are the same. */
#include "../common/strutil.h"
#include "cli.h"

#include <stdlib.h>
#include <string.h>

enum { G_API, G_TOKEN_FILE, G_CONFIG, G_TIMEOUT, G_JSON, G_HELP };

static const struct {
    const char *name;
    bool has_arg;
} globals[] = {
    [G_API] = {"api", true},       [G_TOKEN_FILE] = {"token-file", true},
    [G_CONFIG] = {"config", true}, [G_TIMEOUT] = {"timeout", true},
    [G_JSON] = {"json", false},    [G_HELP] = {"help", false},
};

#define NGLOBALS ((int)(sizeof globals / sizeof globals[0]))

/* Split "--name" or "--name=value"; returns the name length. */
static size_t opt_name(const char *arg, const char **inline_value)
{
    const char *name = arg + 2, *eq = strchr(name, '=');
    *inline_value = eq ? eq + 1 : NULL;
    return eq ? (size_t)(eq - name) : strlen(name);
}

static bool name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncmp(name, want, len) == 0;
}

static int find_global(const char *name, size_t len)
{
    for (int g = 0; g < NGLOBALS; g++)
        if (name_is(name, len, globals[g].name))
            return g;
    return -1;
}

static int set_owned(char **slot, const char *v, err_t *e)
{
    char *copy = strdup(v);
    if (!copy)
        return err_set(e, ERR_INTERNAL, "out of memory");
    free(*slot);
    *slot = copy;
    return 0;
}

static int apply_global(cli_t *cli, int g, const char *v, err_t *e)
{
    switch (g) {
    case G_API: return set_owned(&cli->api, v, e);
    case G_TOKEN_FILE: return set_owned(&cli->token_file, v, e);
    case G_CONFIG: return set_owned(&cli->config, v, e);
    case G_TIMEOUT: {
        long long n;
        if (!str_to_ll(v, &n) || n < 1 || n > 86400)
            return err_set(e, ERR_INPUT,
                           "option --timeout needs a number of seconds (1 to 86400), not '%s'",
                           v);
        cli->timeout = (long)n;
        return 0;
    }
    case G_JSON: cli->json = true; return 0;
    case G_HELP: cli->help = true; return 0;
    }
    return 0;
}

/* The value of an option that takes one: inline or the next argument. */
static const char *opt_value(const char *inline_value, int argc, char **argv, int *i)
{
    if (inline_value)
        return inline_value;
    if (*i + 1 < argc)
        return argv[++*i];
    return NULL;
}

/* Apply the global option argv[*i] ("--name" or "--name=value"), whose name
 * (of `len` characters) is global number g; *i moves past its value. */
static int one_global(cli_t *cli, int g, int argc, char **argv, int *i, err_t *e)
{
    const char *inline_value;
    opt_name(argv[*i], &inline_value);
    if (!globals[g].has_arg && inline_value)
        return err_set(e, ERR_INPUT, "option --%s takes no value", globals[g].name);
    const char *v = globals[g].has_arg ? opt_value(inline_value, argc, argv, i) : "";
    if (!v)
        return err_set(e, ERR_INPUT, "option --%s needs a value", globals[g].name);
    return apply_global(cli, g, v, e);
}

int args_globals(cli_t *cli, int argc, char **argv, int *i, err_t *e)
{
    for (; *i < argc; ++*i) {
        const char *a = argv[*i];
        if (!strcmp(a, "-h")) {
            cli->help = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
            return 0;
        const char *inline_value;
        size_t len = opt_name(a, &inline_value);
        int g = find_global(a + 2, len);
        if (g < 0)
            return err_set(e, ERR_INPUT, "unknown option '%.*s' (see imperium --help)",
                           (int)len + 2, a);
        if (one_global(cli, g, argc, argv, i, e) < 0)
            return -1;
    }
    return 0;
}

static int store(const opt_spec *o, const char *v, const char *cmd, json_t *opts, err_t *e)
{
    json_t *val = NULL;
    switch (o->kind) {
    case OPT_STR: val = json_string(v); break;
    case OPT_FLAG: val = json_true(); break;
    case OPT_INT: {
        long long n;
        if (!str_to_ll(v, &n))
            return err_set(e, ERR_INPUT, "%s: option --%s needs an integer, not '%s'", cmd,
                           o->name, v);
        val = json_integer(n);
        break;
    }
    case OPT_LIST: {
        json_t *list = json_object_get(opts, o->field);
        if (!list) {
            if (!(list = json_array()) || json_object_set_new(opts, o->field, list) < 0)
                return err_set(e, ERR_INTERNAL, "out of memory");
        }
        if (!*v) /* `--node ''` gives an empty list: it clears */
            return 0;
        if (json_array_append_new(list, json_string(v)) < 0)
            return err_set(e, ERR_INTERNAL, "out of memory");
        return 0;
    }
    }
    if (!val)
        return err_set(e, ERR_INPUT, "%s: option --%s: the value is not valid UTF-8", cmd,
                       o->name);
    if (json_object_set_new(opts, o->field, val) < 0)
        return err_set(e, ERR_INTERNAL, "out of memory");
    return 0;
}

int args_parse(cli_t *cli, const opt_spec *spec, const char *cmd, int argc, char **argv,
               args_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    out->opts = json_object();
    out->pos = calloc((size_t)argc + 1, sizeof *out->pos);
    if (!out->opts || !out->pos) {
        args_free(out);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            out->pos[out->npos++] = argv[i];
            continue;
        }
        if (!strcmp(a, "--")) {
            only_pos = true;
            continue;
        }
        if (!strcmp(a, "-h")) {
            cli->help = true;
            continue;
        }
        if (a[1] != '-') {
            args_free(out);
            return err_set(e, ERR_INPUT, "%s: unknown option '%s' (see imperium %s --help)", cmd, a,
                           cmd);
        }
        const char *inline_value;
        size_t len = opt_name(a, &inline_value);
        const opt_spec *o = NULL;
        for (const opt_spec *s = spec; s && s->name; s++)
            if (name_is(a + 2, len, s->name))
                o = s;
        int rc;
        if (o) {
            const char *v = o->kind == OPT_FLAG ? "" : opt_value(inline_value, argc, argv, &i);
            if (o->kind == OPT_FLAG && inline_value)
                rc = err_set(e, ERR_INPUT, "%s: option --%s takes no value", cmd, o->name);
            else if (!v)
                rc = err_set(e, ERR_INPUT, "%s: option --%s needs a value", cmd, o->name);
            else
                rc = store(o, v, cmd, out->opts, e);
        } else {
            /* Not the command's: maybe a global option. */
            int g = find_global(a + 2, len);
            if (g < 0)
                rc = err_set(e, ERR_INPUT, "%s: unknown option '%.*s' (see imperium %s --help)",
                             cmd, (int)len + 2, a, cmd);
            else
                rc = one_global(cli, g, argc, argv, &i, e);
        }
        if (rc < 0) {
            args_free(out);
            return -1;
        }
    }
    if (cli->help)
        return 0;
    for (const opt_spec *s = spec; s && s->name; s++) {
        if (s->required && !json_object_get(out->opts, s->field)) {
            args_free(out);
            return err_set(e, ERR_INPUT,
                           "%s: missing required option --%s (see imperium %s --help)", cmd,
                           s->name, cmd);
        }
    }
    return 0;
}

void args_free(args_t *a)
{
    json_decref(a->opts);
    free(a->pos);
    memset(a, 0, sizeof *a);
}

int args_opt_usage(const opt_spec *o, char *out, size_t len)
{
    const char *meta = o->kind == OPT_FLAG ? "" : o->meta ? o->meta : "VALUE";
    int n = snprintf(out, len, "%s--%s%s%s%s%s", o->required ? "" : "[", o->name,
                     *meta ? " " : "", meta, o->required ? "" : "]",
                     o->kind == OPT_LIST ? "..." : "");
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int args_int(const char *s, const char *what, const char *cmd, long long *out, err_t *e)
{
    if (!str_to_ll(s, out))
        return err_set(e, ERR_INPUT, "%s: %s must be an integer, not '%s'", cmd, what, s);
    return 0;
}
