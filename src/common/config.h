/* config.h - `key = value` configuration files.
 *
 * One setting per line, `#` starts a comment, blank lines are ignored.
 * Daemons read theirs through a settings table (settings.h), which refuses
 * unknown keys and lets command-line flags override the file. */
#ifndef IMP_CONFIG_H
#define IMP_CONFIG_H

#include "err.h"

typedef struct {
    char *key;
    char *value;
    int line;
} conf_entry_t;

typedef struct {
    conf_entry_t *entries;
    size_t n;
    char *path;
} conf_t;

/* Parse `path` into `c`; -1 with a message naming the file and line. */
int conf_load(conf_t *c, const char *path, err_t *e);
void conf_free(conf_t *c);
/* The last value given for `key`, or NULL. */
const char *conf_get(const conf_t *c, const char *key);

#endif
