/* settings.c - one typed table of a program's settings (settings.h). */
#include "settings.h"

#include "log.h"
#include "strutil.h"

#include <stdint.h>
#include <string.h>

#define HELP_COLUMN 30 /* where the help text starts in --help */
#define HELP_WIDTH 79

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static const setting_t *find_key(const setting_t *t, const char *name)
{
    for (; t->name; t++)
        if (!strcmp(t->name, name))
            return t;
    return NULL;
}

/* The row whose flag is `flag` (the text after "--", up to its end or `len`). */
static const setting_t *find_flag(const setting_t *t, const char *flag, size_t len)
{
    for (; t->name; t++) {
        if (t->flags & SET_FILE || strlen(t->name) != len)
            continue;
        size_t k = 0;
        while (k < len && (t->name[k] == '_' ? '-' : t->name[k]) == flag[k])
            k++;
        if (k == len)
            return t;
    }
    return NULL;
}

static const setting_t *find_short(const setting_t *t, char c)
{
    for (; t->name; t++)
        if (c && t->short_flag == c && !(t->flags & SET_FILE))
            return t;
    return NULL;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcmp(v, yes[i]) || !strcmp(v, no[i])) {
            *out = !strcmp(v, yes[i]);
            return 0;
        }
    }
    return -1;
}

static int set_string(const setting_t *s, char *field, const char *v, err_t *e)
{
    size_t n = strlen(v);
    if (n >= s->size)
        return err_set(e, ERR_INPUT, "%s is too long", s->name);
    memcpy(field, v, n + 1);
    return 0;
}

static int set_int(const setting_t *s, int *field, const char *v, err_t *e)
{
    long long n;
    if (!str_to_ll(v, &n) || n < s->min || n > s->max)
        return err_set(e, ERR_INPUT, "%s must be an integer from %lld to %lld, not '%s'",
                       s->name, s->min, s->max, v);
    *field = (int)n;
    return 0;
}

/* Store `v` (already checked by the row's own rule) at the row's field. */
static int store(const setting_t *s, void *base, const char *v, err_t *e)
{
    char *field = (char *)base + s->offset;
    switch (s->type) {
    case SET_STR:
        return set_string(s, field, v, e);
    case SET_PATH:
        if (!*v)
            return 0;
        if (v[0] != '/')
            return err_set(e, ERR_INPUT, "%s must be an absolute path, not '%s'", s->name, v);
        /* fall through */
    case SET_STRP:
        *(const char **)(void *)field = v;
        return 0;
    case SET_INT:
        return set_int(s, (int *)(void *)field, v, e);
    case SET_BOOL:
        if (parse_bool(v, (bool *)field) < 0)
            return err_set(e, ERR_INPUT, "%s must be true or false, not '%s'", s->name, v);
        return 0;
    case SET_LOG_LEVEL:
        if (log_parse_level(v, (enum log_level *)(void *)field) < 0)
            return err_set(e, ERR_INPUT, "%s must be error, warn, info or debug", s->name);
        return 0;
    }
    return err_set(e, ERR_INTERNAL, "%s: unknown setting type", s->name);
}

static int set_row(const setting_t *s, void *base, const char *v, err_t *e)
{
    if (s->check && s->check(s, v, e) < 0)
        return -1;
    return store(s, base, v, e);
}

int settings_set(const setting_t *t, void *base, const char *name, const char *value,
                 err_t *e)
{
    const setting_t *s = find_key(t, name);
    if (!s)
        return err_set(e, ERR_INPUT, "unknown setting '%s'", name);
    return set_row(s, base, value, e);
}

int settings_defaults(const setting_t *t, void *base, err_t *e)
{
    for (; t->name; t++) {
        char *field = (char *)base + t->offset;
        switch (t->type) {
        case SET_STR:
            if (t->def && set_string(t, field, t->def, e) < 0)
                return -1;
            break;
        case SET_STRP:
        case SET_PATH:
            if (t->def)
                *(const char **)(void *)field = t->def;
            break;
        case SET_INT:
            *(int *)(void *)field = (int)t->idef;
            break;
        case SET_BOOL:
            *(bool *)field = t->idef != 0;
            break;
        case SET_LOG_LEVEL:
            *(enum log_level *)(void *)field = (enum log_level)t->idef;
            break;
        }
    }
    return 0;
}

int settings_load_file(const setting_t *t, void *base, conf_t *conf, const char *path,
                       err_t *e)
{
    if (conf_load(conf, path, e) < 0)
        return -1;
    for (size_t i = 0; i < conf->n; i++) {
        const conf_entry_t *c = &conf->entries[i];
        const setting_t *s = find_key(t, c->key);
        if (!s || s->flags & SET_CMDLINE)
            return err_set(e, ERR_INPUT, "%s:%d: unknown setting '%s'", path, c->line, c->key);
        err_t why = {0};
        if (set_row(s, base, c->value, &why) < 0)
            return err_set(e, why.kind, "%s:%d: %s", path, c->line, why.msg);
    }
    return 0;
}

/* The row of argv[i] (a flag) and where its value is: `*inline_v` for
 * --name=VALUE and -xVALUE, else NULL.  NULL when argv[i] is no known flag. */
static const setting_t *flag_row(const setting_t *t, const char *arg, const char **inline_v)
{
    *inline_v = NULL;
    if (arg[0] == '-' && arg[1] == '-') {
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (eq)
            *inline_v = eq + 1;
        return find_flag(t, name, len);
    }
    const setting_t *s = find_short(t, arg[1]);
    if (s && arg[2])
        *inline_v = arg + 2;
    return s;
}

static bool is_flag(const char *arg)
{
    return arg[0] == '-' && arg[1] && strcmp(arg, "--") != 0;
}

const char *settings_find_flag(const setting_t *t, const char *name, int argc, char **argv)
{
    const char *found = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        const setting_t *s = is_flag(argv[i]) ? flag_row(t, argv[i], &v) : NULL;
        if (!s || strcmp(s->name, name) != 0)
            continue;
        if (!v && s->type == SET_BOOL)
            v = "true"; /* --help, as settings_parse_flag reads it */
        else if (!v && i + 1 < argc)
            v = argv[++i];
        found = v ? v : found;
    }
    return found;
}

int settings_parse_flag(const setting_t *t, void *base, int argc, char **argv, int *i,
                        err_t *e)
{
    const char *arg = argv[*i], *v;
    const setting_t *s = is_flag(arg) ? flag_row(t, arg, &v) : NULL;
    if (!s)
        return 0;
    if (!v && s->type == SET_BOOL)
        v = "true"; /* --migrate-only */
    if (!v && *i + 1 >= argc)
        return err_set(e, ERR_INPUT, "%s needs a value", arg);
    if (!v)
        v = argv[++*i];
    err_t why = {0};
    if (set_row(s, base, v, &why) < 0) /* as a file's errors name FILE:LINE */
        return err_set(e, why.kind, "%.*s: %s", (int)strcspn(arg, "="), arg, why.msg);
    return 1;
}

int settings_parse_flags(const setting_t *t, void *base, int argc, char **argv, int *i,
                         err_t *e)
{
    for (; *i < argc && is_flag(argv[*i]); (*i)++) {
        int rc = settings_parse_flag(t, base, argc, argv, i, e);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return err_set(e, ERR_INPUT, "unknown option '%s'", argv[*i]);
    }
    if (*i < argc && !strcmp(argv[*i], "--"))
        (*i)++;
    return 0;
}

static bool is_unset(const setting_t *s, const void *base)
{
    const char *field = (const char *)base + s->offset;
    if (s->type == SET_STR)
        return !*field;
    if (s->type == SET_STRP || s->type == SET_PATH) {
        const char *v = *(const char *const *)(const void *)field;
        return !v || !*v;
    }
    return false;
}

int settings_check_required(const setting_t *t, const void *base, const char *where,
                            err_t *e)
{
    for (; t->name; t++)
        if (t->flags & SET_REQUIRED && is_unset(t, base))
            return err_set(e, ERR_INPUT, "%s%s%s is required (%s)", where ? where : "",
                           where ? ": " : "", t->name, t->help);
    return 0;
}

/* ---- --help ------------------------------------------------------------ */

/* " (default X)" for the row, or "" when it has none to show. */
static void default_text(const setting_t *s, char *out, size_t len)
{
    out[0] = '\0';
    if (s->flags & (SET_NO_DEFAULT | SET_CMDLINE))
        return;
    if (s->type == SET_INT)
        snprintf(out, len, " (default %lld)", s->idef);
    else if (s->type == SET_BOOL)
        snprintf(out, len, " (default %s)", s->idef ? "true" : "false");
    else if (s->type == SET_LOG_LEVEL && s->idef >= 0 && s->idef < 4)
        snprintf(out, len, " (default %s)", level_names[s->idef]);
    else if (s->def && *s->def)
        snprintf(out, len, " (default %s)", s->def);
}

/* `left`, then the row's help and default wrapped at HELP_WIDTH, every line
 * after the first indented to HELP_COLUMN. */
static void help_line(FILE *f, const char *left, const setting_t *s)
{
    char def[160], text[1024];
    default_text(s, def, sizeof def);
    snprintf(text, sizeof text, "%s%s", s->help ? s->help : "", def);
    int col = fprintf(f, "%s", left);
    if (col >= HELP_COLUMN - 1) {
        fputc('\n', f);
        col = 0;
    }
    const char *p = text;
    while (*p) {
        fprintf(f, "%*s", HELP_COLUMN - col, "");
        size_t room = HELP_WIDTH - HELP_COLUMN, n = strlen(p);
        if (n > room) {
            n = room;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0)
                n = strcspn(p, " ");
        }
        fprintf(f, "%.*s\n", (int)n, p);
        p += n;
        while (*p == ' ')
            p++;
        col = 0;
    }
    if (!*text)
        fputc('\n', f);
}

void settings_help_flags(FILE *f, const setting_t *t)
{
    for (; t->name; t++) {
        if (t->flags & SET_FILE)
            continue;
        char flag[96];
        size_t n = 0;
        n += (size_t)snprintf(flag, sizeof flag, "  %c%c%s--", t->short_flag ? '-' : ' ',
                              t->short_flag ? t->short_flag : ' ', t->short_flag ? ", " : "  ");
        for (const char *c = t->name; *c && n + 1 < sizeof flag; c++)
            flag[n++] = *c == '_' ? '-' : *c;
        flag[n] = '\0';
        if (t->meta && t->type != SET_BOOL)
            snprintf(flag + n, sizeof flag - n, " %s", t->meta);
        help_line(f, flag, t);
    }
}

void settings_help_keys(FILE *f, const setting_t *t)
{
    for (; t->name; t++) {
        if (t->flags & SET_CMDLINE)
            continue;
        char key[96];
        snprintf(key, sizeof key, "  %s = %s", t->name, t->meta ? t->meta : "VALUE");
        help_line(f, key, t);
    }
}
