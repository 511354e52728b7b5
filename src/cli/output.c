/* output.c - how answers are shown: aligned tables for lists, "key: value"
 * lines for one object, or the raw JSON with --json. */
#include "../common/strutil.h"
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static int append_value(buf_t *b, json_t *v, const char *sep, const char *null_text)
{
    char num[64];
    switch (json_typeof(v)) {
    case JSON_STRING: return buf_append(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf_appends(b, num);
    case JSON_REAL:
        snprintf(num, sizeof num, "%g", json_real_value(v));
        return buf_appends(b, num);
    case JSON_TRUE: return buf_appends(b, "true");
    case JSON_FALSE: return buf_appends(b, "false");
    case JSON_NULL: return buf_appends(b, null_text);
    case JSON_ARRAY: {
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it)
        {
            if (json_is_object(it) || json_is_array(it)) {
                /* Lists of objects read best as JSON. */
                char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
                int rc = s ? buf_appends(b, s) : -1;
                free(s);
                return rc;
            }
        }
        json_array_foreach(v, i, it)
        {
            if ((i && buf_appends(b, sep) < 0) || append_value(b, it, sep, null_text) < 0)
                return -1;
        }
        return 0;
    }
    case JSON_OBJECT: {
        char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
        int rc = s ? buf_appends(b, s) : -1;
        free(s);
        return rc;
    }
    }
    return 0;
}

char *out_value(json_t *v, const char *sep, const char *null_text)
{
    buf_t b = {0};
    if (!v)
        v = json_null();
    if (append_value(&b, v, sep, null_text) < 0 || buf_append(&b, "", 0) < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* Characters on screen, counting a UTF-8 sequence as one. */
static size_t text_width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static char *cell_text(json_t *v, col_kind kind)
{
    if (kind == COL_DATE && json_is_integer(v)) {
        time_t t = (time_t)json_integer_value(v);
        struct tm tm;
        char when[32];
        if (gmtime_r(&t, &tm) && strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm))
            return strdup(when);
    }
    char *s = out_value(v, ",", "-");
    if (!s)
        return NULL;
    if (!*s) {
        free(s);
        return strdup("-");
    }
    /* A cell stays on one line. */
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < ' ')
            *p = ' ';
    return s;
}

int out_table(FILE *f, json_t *list, const column_t *cols, err_t *e)
{
    if (!json_is_array(list))
        return err_set(e, ERR_INTERNAL, "the API answered something that is not a list");
    size_t ncols = 0, nrows = json_array_size(list);
    while (cols[ncols].key)
        ncols++;
    char **cells = calloc((nrows + 1) * ncols, sizeof *cells);
    size_t *width = calloc(ncols, sizeof *width);
    int rc = -1;
    if (!cells || !width) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto out;
    }
    for (size_t c = 0; c < ncols; c++)
        if (!(cells[c] = strdup(cols[c].header)))
            goto oom;
    for (size_t r = 0; r < nrows; r++) {
        json_t *o = json_array_get(list, r);
        for (size_t c = 0; c < ncols; c++)
            if (!(cells[(r + 1) * ncols + c] = cell_text(json_object_get(o, cols[c].key),
                                                         cols[c].kind)))
                goto oom;
    }
    for (size_t i = 0; i < (nrows + 1) * ncols; i++) {
        size_t w = text_width(cells[i]);
        if (w > width[i % ncols])
            width[i % ncols] = w;
    }
    for (size_t r = 0; r <= nrows; r++) {
        for (size_t c = 0; c < ncols; c++) {
            const char *s = cells[r * ncols + c];
            if (c + 1 < ncols)
                fprintf(f, "%s%*s  ", s, (int)(width[c] - text_width(s)), "");
            else
                fprintf(f, "%s\n", s);
        }
    }
    rc = 0;
    goto out;
oom:
    err_set(e, ERR_INTERNAL, "out of memory");
out:
    for (size_t i = 0; cells && i < (nrows + 1) * ncols; i++)
        free(cells[i]);
    free(cells);
    free(width);
    return rc;
}

int out_object(FILE *f, json_t *o, err_t *e)
{
    if (!json_is_object(o))
        return err_set(e, ERR_INTERNAL, "the API answered something that is not an object");
    size_t width = 0;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) if (strlen(key) > width) width = strlen(key);
    json_object_foreach(o, key, v)
    {
        char *s = out_value(v, ", ", "-");
        if (!s)
            return err_set(e, ERR_INTERNAL, "out of memory");
        /* Multi-line values (/etc/hosts lines, keys) continue indented. */
        size_t n = strlen(s);
        while (n && s[n - 1] == '\n')
            s[--n] = '\0';
        if (!*s) {
            fprintf(f, "%s:\n", key);
            free(s);
            continue;
        }
        fprintf(f, "%s:%*s", key, (int)(width - strlen(key) + 1), "");
        for (char *line = s, *nl;; line = nl + 1) {
            nl = strchr(line, '\n');
            if (nl)
                *nl = '\0';
            fprintf(f, "%s\n", line);
            if (!nl)
                break;
            fprintf(f, "%*s", (int)width + 2, "");
        }
        free(s);
    }
    return 0;
}

int out_raw(FILE *f, const http_resp_t *resp, err_t *e)
{
    (void)e;
    if (resp->len) {
        fwrite(resp->body, 1, resp->len, f);
        if (resp->body[resp->len - 1] != '\n')
            fputc('\n', f);
    }
    return 0;
}
