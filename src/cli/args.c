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

/* The value of an option that takes one: inline or the next argument. */
static const char *opt_value(const char *inline_value, int argc, char **argv, int *i)
{
    if (inline_value)
        return inline_value;
    if (*i + 1 < argc)
        return argv[++*i];
    return NULL;
}

/* argv[*i] as one of the global options (cli_global_settings): 1 when it
 * was one (*i on its last word), 0 when it is not, -1 on a bad value. */
static int global_opt(cli_t *cli, int argc, char **argv, int *i, err_t *e)
{
    return settings_parse_flag(cli_global_settings, cli, argc, argv, i, e);
}

/* The length of the option's name with its dashes, without "=value". */
static int opt_len(const char *a)
{
    return (int)strcspn(a, "=");
}

int args_globals(cli_t *cli, int argc, char **argv, int *i, err_t *e)
{
    for (; *i < argc; ++*i) {
        const char *a = argv[*i];
        if (a[0] != '-' || a[1] == '\0' || !strcmp(a, "--"))
            return 0;
        int rc = global_opt(cli, argc, argv, i, e);
        if (rc < 0)
            return -1;
        if (rc == 0 && a[1] == '-')
            return err_set(e, ERR_INPUT, "unknown option '%.*s' (see imperium --help)",
                           opt_len(a), a);
        if (rc == 0)
            return 0;
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
        } else if ((rc = global_opt(cli, argc, argv, &i, e)) == 0) {
            /* Neither the command's nor a global option. */
            rc = err_set(e, ERR_INPUT, "%s: unknown option '%.*s' (see imperium %s --help)",
                         cmd, (int)len + 2, a, cmd);
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
