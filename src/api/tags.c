/* tags.c - /tags/ and the tag lists of containers, domains and loopboxes. */
#include "tags.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "fields.h"
#include "routes.h"
#include "rows.h"

#include <string.h>


static const struct {
    const char *list_sql;
    const char *clear_sql;
    const char *add_sql;
} tagged_sql[] = {
    [TAGGED_CONTAINER] = {
        "SELECT t.name FROM container_tags x JOIN tags t ON t.id = x.tag_id "
        "WHERE x.container_id = $1 ORDER BY t.name",
        "DELETE FROM container_tags WHERE container_id = $1",
        "INSERT INTO container_tags (container_id, tag_id) SELECT $1, id FROM tags "
        "WHERE customer_id = $2 AND name = $3 ON CONFLICT DO NOTHING",
    },
    [TAGGED_DOMAIN] = {
        "SELECT t.name FROM domain_tags x JOIN tags t ON t.id = x.tag_id "
        "WHERE x.domain_id = $1 ORDER BY t.name",
        "DELETE FROM domain_tags WHERE domain_id = $1",
        "INSERT INTO domain_tags (domain_id, tag_id) SELECT $1, id FROM tags "
        "WHERE customer_id = $2 AND name = $3 ON CONFLICT DO NOTHING",
    },
    [TAGGED_LOOPBOX] = {
        "SELECT t.name FROM loopbox_tags x JOIN tags t ON t.id = x.tag_id "
        "WHERE x.loopbox_id = $1 ORDER BY t.name",
        "DELETE FROM loopbox_tags WHERE loopbox_id = $1",
        "INSERT INTO loopbox_tags (loopbox_id, tag_id) SELECT $1, id FROM tags "
        "WHERE customer_id = $2 AND name = $3 ON CONFLICT DO NOTHING",
    },
};

json_t *tags_of(db_t *db, err_t *e, tagged_kind kind, long long obj_id)
{
    return rows_str_list(db, e, tagged_sql[kind].list_sql, obj_id);
}

int tags_set(db_t *db, err_t *e, tagged_kind kind, long long obj_id, long long customer_id,
             json_t *names)
{
    if (db_exec(db, e, tagged_sql[kind].clear_sql, DB_ARGS(DB_INT(obj_id))) < 0)
        return -1;
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n)
    {
        if (db_exec(db, e, tagged_sql[kind].add_sql,
                    DB_ARGS(DB_INT(obj_id), DB_INT(customer_id),
                            DB_TEXT(json_string_value(n)))) < 0)
            return -1;
    }
    return 0;
}

bool tags_match(const char *filter, json_t *tags)
{
    if (!filter)
        return true;
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t)
    {
        const char *name = json_string_value(t);
        size_t nlen = strlen(name);
        for (const char *p = filter; *p;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (len == nlen && strncmp(p, name, len) == 0)
                return true;
            p += len;
            if (*p == ',')
                p++;
        }
    }
    return false;
}

json_t *tags_filter(json_t *list, const char *filter)
{
    for (size_t i = 0; list && filter && i < json_array_size(list);)
        if (tags_match(filter, json_object_get(json_array_get(list, i), "tags")))
            i++;
        else
            json_array_remove(list, i);
    return list;
}

static json_t *tag_json(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s,s:s}", "id", (json_int_t)db_get_int(res, row, 0), "name",
                     db_get(res, row, 1), "note", db_get(res, row, 2));
}

static json_t *tag_row(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s}", "id", (json_int_t)db_get_int(res, row, 0), "name",
                     db_get(res, row, 1));
}

static void h_tags_list(req_t *r)
{
    reply_rows(r, tag_row,
               "SELECT id, name FROM tags WHERE customer_id = $1 ORDER BY name",
               DB_ARGS(DB_INT(r->me.id)));
}

static const field_spec tag_fields[] = {{"name", FT_STRING}, {"note", FT_STRING}, {NULL, 0}};

static int check_tag_name(req_t *r)
{
    const char *name = field_str(r, "name");
    if (!name)
        return 0;
    size_t len = str_chars(name);
    if (len == 0 || len > FIELD_TEXT_MAX || strchr(name, ',')) {
        reply_bad_request(r, "'name' must be 1 to %d characters, without commas",
                          FIELD_TEXT_MAX);
        return -1;
    }
    return 0;
}

static void reply_tag(req_t *r, int status, long long id)
{
    err_t e = {0};
    db_res_t *res = db_query(r->db, &e, "SELECT id, name, note FROM tags WHERE id = $1",
                             DB_ARGS(DB_INT(id)));
    if (!res)
        return reply_internal(r, &e);
    if (res->nrows == 1)
        reply(r, status, tag_json(res, 0));
    else
        reply_error(r, 404, NULL);
    db_res_free(res);
}

static void h_tag_create(req_t *r)
{
    static const char *const required[] = {"name", NULL};
    if (fields_check(r, tag_fields) < 0 || fields_require(r, required) < 0 ||
        check_tag_name(r) < 0)
        return;
    const char *note = field_str(r, "note");
    err_t e = {0};
    db_res_t *res = db_query(r->db, &e,
                             "INSERT INTO tags (customer_id, name, note) VALUES ($1, $2, $3) "
                             "RETURNING id",
                             DB_ARGS(DB_INT(r->me.id), DB_TEXT(field_str(r, "name")),
                                     DB_TEXT(note ? note : "")));
    if (!res) {
        if (e.kind == ERR_CONSTRAINT)
            return reply_conflict(r, "you already have a tag named '%s'",
                                  field_str(r, "name"));
        return reply_internal(r, &e);
    }
    long long id = db_get_int(res, 0, 0);
    db_res_free(res);
    reply_tag(r, 201, id);
}

/* The id of the caller's tag named by the path, or -1 after answering 404. */
static long long own_tag(req_t *r)
{
    return req_owned(r, "SELECT id FROM tags WHERE id = $1 AND customer_id = $2",
                     parse_id(r->segs[1]), 404);
}

static void h_tag_get(req_t *r)
{
    long long id = own_tag(r);
    if (id > 0)
        reply_tag(r, 200, id);
}

static void h_tag_post(req_t *r)
{
    long long id = own_tag(r);
    if (id < 0 || fields_check(r, tag_fields) < 0 || check_tag_name(r) < 0)
        return;
    err_t e = {0};
    const char *name = field_str(r, "name"), *note = field_str(r, "note");
    if (name && db_exec(r->db, &e, "UPDATE tags SET name = $1 WHERE id = $2",
                        DB_ARGS(DB_TEXT(name), DB_INT(id))) < 0) {
        if (e.kind == ERR_CONSTRAINT)
            return reply_conflict(r, "you already have a tag named '%s'", name);
        return reply_internal(r, &e);
    }
    if (note && db_exec(r->db, &e, "UPDATE tags SET note = $1 WHERE id = $2",
                        DB_ARGS(DB_TEXT(note), DB_INT(id))) < 0)
        return reply_internal(r, &e);
    reply_tag(r, 200, id);
}

static void h_tag_delete(req_t *r)
{
    long long id = own_tag(r);
    if (id < 0)
        return;
    err_t e = {0};
    /* ON DELETE CASCADE takes the tag off every object carrying it. */
    if (db_exec(r->db, &e, "DELETE FROM tags WHERE id = $1", DB_ARGS(DB_INT(id))) < 0)
        return reply_internal(r, &e);
    reply_ok(r);
}

const route_t tag_routes[] = {
    {"GET", "tags", h_tags_list, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "tags", h_tag_create, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"GET", "tags/*", h_tag_get, AUTH_CUSTOMER, CACHE_UNTIL_WRITE, WAKE_NONE},
    {"POST", "tags/*", h_tag_post, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {"DELETE", "tags/*", h_tag_delete, AUTH_CUSTOMER, CACHE_NONE, WAKE_NODES},
    {NULL, NULL, NULL, 0, 0, 0},
};
