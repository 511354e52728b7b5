/* fields.h - type checks for JSON request bodies.
 *
 * A handler first checks the types of every field it accepts (fields_check),
 * answering 400 with the field's name before anything is changed, and then
 * reads the values with the getters below. */
#ifndef IMP_FIELDS_H
#define IMP_FIELDS_H

#include "req.h"

/* The longest text field, in characters (not bytes): the public platform's
 * CharField(max_length=255), for names, tags and the alarm settings. */
#define FIELD_TEXT_MAX 255

/* As the public platform (Django's int()), integers may come as strings of
 * decimal digits ("1000") and booleans as "true"/"false"/"1"/"0":
 * fields_check replaces such a string by its value in the body, so the
 * getters below always see the typed form. */
typedef enum {
    FT_STRING,
    FT_INT,         /* an integer, or a string of decimal digits */
    FT_BOOL,        /* true/false, the integers 0/1, or "true"/"false"/"1"/"0" */
    FT_STRING_LIST,
    FT_ANY_LIST,    /* a list; the handler checks its items */
    FT_INT_OR_NULL, /* as FT_INT, or null */
} field_type;

typedef struct {
    const char *name;
    field_type type;
} field_spec;

/* Parse r's body as an object and check each present field listed in `spec`
 * (terminated by {NULL}).  Unknown keys are ignored, as the public API did.
 * Answers 400 itself and returns -1 on the first wrong field. */
int fields_check(req_t *r, const field_spec *spec);
/* As fields_check, and also require every field of `required` (a
 * NULL-terminated list of names) to be present and not null. */
int fields_require(req_t *r, const char *const *required);

bool field_has(req_t *r, const char *name);
const char *field_str(req_t *r, const char *name);
long long field_int(req_t *r, const char *name);
bool field_bool(req_t *r, const char *name);
bool field_is_null(req_t *r, const char *name);
json_t *field_list(req_t *r, const char *name);

#endif
