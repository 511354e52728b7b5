/* tags.h - tags shared by containers, domains and loopboxes. */
#ifndef IMP_TAGS_H
#define IMP_TAGS_H

#include "api.h"

typedef enum { TAGGED_CONTAINER, TAGGED_DOMAIN, TAGGED_LOOPBOX } tagged_kind;

/* The names of the tags on one object, sorted. */
json_t *tags_of(db_t *db, err_t *e, tagged_kind kind, long long obj_id);
/* Replace the object's tags by the customer's tags named in `names`
 * (unknown names are ignored). */
int tags_set(db_t *db, err_t *e, tagged_kind kind, long long obj_id, long long customer_id,
             json_t *names);
/* The ?tags=a,b filter: true when there is no filter or `tags` (a list of
 * names) holds one of the named tags. */
bool tags_match(const char *filter, json_t *tags);
/* `list` (objects with "tags") without those the filter rejects; NULL
 * stays NULL, so it wraps rows_json(). */
json_t *tags_filter(json_t *list, const char *filter);

#endif
