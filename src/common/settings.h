/* settings.h - one typed table of a program's settings.
 *
 * Redis's standardConfig is the model: each setting is one row (name, type,
 * where it lands, bounds, default, help), and that one row reads it from a
 * `key = value` file (config.h), from the command line and prints it in
 * --help.  A row's name is its config key (`admin_prefix`); its flag is the
 * same name with '-' for '_' (`--admin-prefix VALUE`, `--admin-prefix=VALUE`,
 * plus the row's short flag: `-p VALUE`, `-pVALUE`).
 *
 * Precedence is the caller's order of calls: settings_defaults, then
 * settings_load_file, then settings_parse_flags (flags win over the file).
 * Tables end with a row whose name is NULL. */
#ifndef IMP_SETTINGS_H
#define IMP_SETTINGS_H

#include "config.h"
#include "err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    SET_STR,       /* char[size]: the value copied (longer: an error) */
    SET_STRP,      /* const char *: points at the value, which the caller keeps
                      alive (the conf_t of settings_load_file, or argv) */
    SET_PATH,      /* as SET_STRP, an absolute path; an empty value changes nothing */
    SET_INT,       /* int from min to max */
    SET_BOOL,      /* bool: true/yes/on/1 or false/no/off/0; a flag alone sets it */
    SET_LOG_LEVEL, /* enum log_level: error, warn, info or debug */
} setting_type;

enum {
    SET_CMDLINE = 1 << 0,  /* a flag only, never a config key (--config, --help) */
    SET_FILE = 1 << 1,     /* a config key only, no flag */
    SET_REQUIRED = 1 << 2, /* settings_check_required: must be given, not empty */
    SET_NO_DEFAULT = 1 << 3, /* --help shows no "(default ...)": the help says it */
};

typedef struct setting setting_t;

/* A rule of one setting beyond its type, run on the text before it is
 * stored: -1 with a sentence that names s->name. */
typedef int (*setting_check_fn)(const setting_t *s, const char *value, err_t *e);

struct setting {
    const char *name;       /* config key; the flag is --name with '-' for '_' */
    char short_flag;        /* 'p' for -p, or 0 */
    setting_type type;
    size_t offset;          /* where the value lands in the program's struct */
    size_t size;            /* its size (SET_STR: the array's) */
    long long min, max;     /* SET_INT */
    const char *def;        /* default of the string types (NULL: none) */
    long long idef;         /* default of SET_INT, SET_BOOL, SET_LOG_LEVEL */
    unsigned flags;         /* SET_CMDLINE, SET_FILE, ... */
    setting_check_fn check; /* NULL: the type's rules only */
    const char *meta;       /* the value's placeholder in --help: N, FILE */
    const char *help;       /* one line; --help appends "(default ...)" */
};

/* offset and size of a field of T: a row's 4th and 5th members. */
#define SETTING_AT(T, field) offsetof(T, field), sizeof(((T *)0)->field)

/* Every row's default into `base` (a row without one is left alone). */
int settings_defaults(const setting_t *t, void *base, err_t *e);

/* Set the row named `name` (a config key) from its text.  Errors name the
 * key, e.g. "port must be an integer from 1 to 65535, not 'x'". */
int settings_set(const setting_t *t, void *base, const char *name, const char *value,
                 err_t *e);

/* Read `path` into `conf` and set each line's setting.  A key with no row
 * (or a command-line-only one) is an error "FILE:LINE: unknown setting
 * 'KEY'", and any error is prefixed with "FILE:LINE: ".  `conf` stays the
 * caller's (SET_STRP and SET_PATH values point into it): conf_free it when
 * done, also after an error. */
int settings_load_file(const setting_t *t, void *base, conf_t *conf, const char *path,
                       err_t *e);

/* The value of the row named `name` as a flag anywhere in argv[1..argc)
 * (e.g. the config file, read before the other flags), or NULL; a boolean
 * flag without "=value" is "true" (e.g. --help, checked before anything). */
const char *settings_find_flag(const setting_t *t, const char *name, int argc, char **argv);

/* Parse flags from argv[*i] on.  Stops (leaving *i there) at the first word
 * that is not a flag, after "--" or at argc.  An unknown flag is an error
 * "unknown option '--x'"; a bad value names the flag, e.g. "--port: port must
 * be an integer from 1 to 65535, not 'x'". */
int settings_parse_flags(const setting_t *t, void *base, int argc, char **argv, int *i,
                         err_t *e);

/* The one flag argv[*i], for programs that mix their own options with the
 * table's: 1 when it is the table's (set; *i is left on its last word), 0
 * when it is not (nothing done), -1 on a bad value. */
int settings_parse_flag(const setting_t *t, void *base, int argc, char **argv, int *i,
                        err_t *e);

/* Every SET_REQUIRED row that is still unset (or empty): "KEY is required
 * (HELP)", prefixed with "WHERE: " when `where` is not NULL. */
int settings_check_required(const setting_t *t, const void *base, const char *where,
                            err_t *e);

/* The flags, one per line: "  -p, --port N    TCP port (default 8080)". */
void settings_help_flags(FILE *f, const setting_t *t);
/* The config keys, one per line: "  port = N    TCP port (default 8080)". */
void settings_help_keys(FILE *f, const setting_t *t);

#endif
