#include "fields.h"
#include "../common/strutil.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static const char *type_name(field_type t)
{
    switch (t) {
    case FT_STRING: return "a string";
    case FT_INT: return "an integer (a number or a string of decimal digits)";
    case FT_BOOL: return "a boolean (true/false, 1/0 or \"true\"/\"false\")";
    case FT_STRING_LIST: return "a list of strings";
    case FT_ANY_LIST: return "a list";
    case FT_INT_OR_NULL: return "an integer (a number or a string of decimal digits) or null";
    }
    return "?";
}

static bool type_ok(json_t *v, field_type t)
{
    switch (t) {
    case FT_STRING: return json_is_string(v);
    case FT_INT: return json_is_integer(v);
    case FT_BOOL:
        return json_is_boolean(v) ||
               (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1));
    case FT_INT_OR_NULL: return json_is_integer(v) || json_is_null(v);
    case FT_ANY_LIST: return json_is_array(v);
    case FT_STRING_LIST: {
        if (!json_is_array(v))
            return false;
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it) if (!json_is_string(it)) return false;
        return true;
    }
    }
    return false;
}

/* A string holding a decimal integer ("1000", "-5"): no spaces, no
 * fraction, no exponent, within long long. */
static bool decimal_string(const char *s, long long *out)
{
    const char *digits = (*s == '-' || *s == '+') ? s + 1 : s;
    return isdigit((unsigned char)*digits) && str_to_ll(s, out);
}

/* The string forms of a boolean (Django's BooleanField read them too). */
static json_t *boolean_of_string(const char *s)
{
    if (strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0)
        return json_true();
    if (strcasecmp(s, "false") == 0 || strcmp(s, "0") == 0)
        return json_false();
    return NULL;
}

/* The public platform coerced with int(): clients send "1000" for 1000 and
 * "true" for true.  A string of the right form is replaced in the body by
 * its value, so every getter and handler sees the one typed form.  Returns
 * -1 on out of memory, else 0 (a string of the wrong form stays, and the
 * type check then names the field). */
static int coerce_string(json_t *obj, const char *name, json_t *v, field_type t)
{
    const char *s = json_string_value(v);
    json_t *typed = NULL;
    long long n;
    if ((t == FT_INT || t == FT_INT_OR_NULL) && decimal_string(s, &n)) {
        if (!(typed = json_integer(n)))
            return -1;
    } else if (t == FT_BOOL) {
        typed = boolean_of_string(s);
    }
    return typed ? json_object_set_new(obj, name, typed) : 0;
}

int fields_check(req_t *r, const field_spec *spec)
{
    if (req_parse_object(r) < 0)
        return -1;
    for (const field_spec *f = spec; f->name; f++) {
        json_t *v = json_object_get(r->json, f->name);
        if (v && json_is_string(v) && coerce_string(r->json, f->name, v, f->type) < 0) {
            err_t e = {0};
            err_set(&e, ERR_INTERNAL, "fields: out of memory reading '%s'", f->name);
            reply_internal(r, &e);
            return -1;
        }
        v = json_object_get(r->json, f->name); /* coerce_string may replace it */
        if (v && !type_ok(v, f->type)) {
            reply_bad_request(r, "'%s' must be %s", f->name, type_name(f->type));
            return -1;
        }
    }
    return 0;
}

int fields_require(req_t *r, const char *const *required)
{
    for (const char *const *n = required; *n; n++) {
        json_t *v = json_object_get(r->json, *n);
        if (!v || json_is_null(v)) {
            reply_bad_request(r, "'%s' is required", *n);
            return -1;
        }
    }
    return 0;
}

bool field_has(req_t *r, const char *name) { return json_object_get(r->json, name) != NULL; }

const char *field_str(req_t *r, const char *name)
{
    return json_string_value(json_object_get(r->json, name));
}

long long field_int(req_t *r, const char *name)
{
    return json_integer_value(json_object_get(r->json, name));
}

bool field_bool(req_t *r, const char *name)
{
    json_t *v = json_object_get(r->json, name);
    return json_is_true(v) || (json_is_integer(v) && json_integer_value(v) != 0);
}

bool field_is_null(req_t *r, const char *name)
{
    return json_is_null(json_object_get(r->json, name));
}

json_t *field_list(req_t *r, const char *name) { return json_object_get(r->json, name); }
