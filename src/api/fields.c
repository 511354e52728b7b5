#include "fields.h"

#include <string.h>

static const char *type_name(field_type t)
{
    switch (t) {
    case FT_STRING: return "a string";
    case FT_INT: return "an integer";
    case FT_BOOL: return "a boolean";
    case FT_STRING_LIST: return "a list of strings";
    case FT_ANY_LIST: return "a list";
    case FT_INT_OR_NULL: return "an integer or null";
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

int fields_check(req_t *r, const field_spec *spec)
{
    if (req_parse_object(r) < 0)
        return -1;
    for (const field_spec *f = spec; f->name; f++) {
        json_t *v = json_object_get(r->json, f->name);
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
