#include "config.h"
#include "strutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int conf_add(conf_t *c, const char *key, const char *value, int line, err_t *e)
{
    conf_entry_t *n = realloc(c->entries, (c->n + 1) * sizeof *n);
    if (!n)
        return err_set(e, ERR_INTERNAL, "out of memory");
    c->entries = n;
    n[c->n].key = strdup(key);
    n[c->n].value = strdup(value);
    n[c->n].line = line;
    if (!n[c->n].key || !n[c->n].value) {
        free(n[c->n].key);
        free(n[c->n].value);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    c->n++;
    return 0;
}

int conf_load(conf_t *c, const char *path, err_t *e)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(e, ERR_INPUT, "cannot open config file %s: %s", path, strerror(errno));
    if (!(c->path = strdup(path))) {
        fclose(f);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    char *buf = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (getline(&buf, &cap, f) >= 0) {
        lineno++;
        char *line = str_trim(buf);
        if (*line == '\0' || *line == '#')
            continue;
        char *eq = strchr(line, '=');
        if (!eq) {
            rc = err_set(e, ERR_INPUT, "%s:%d: expected `key = value`", path, lineno);
            break;
        }
        *eq = '\0';
        char *key = str_trim(line), *value = str_trim(eq + 1);
        if (*key == '\0') {
            rc = err_set(e, ERR_INPUT, "%s:%d: empty key", path, lineno);
            break;
        }
        if (conf_add(c, key, value, lineno, e) < 0) {
            rc = -1;
            break;
        }
    }
    free(buf);
    fclose(f);
    if (rc < 0)
        conf_free(c);
    return rc;
}

void conf_free(conf_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->entries[i].key);
        free(c->entries[i].value);
    }
    free(c->entries);
    free(c->path);
    memset(c, 0, sizeof *c);
}

const char *conf_get(const conf_t *c, const char *key)
{
    for (size_t i = c->n; i > 0; i--)
        if (strcmp(c->entries[i - 1].key, key) == 0)
            return c->entries[i - 1].value;
    return NULL;
}
