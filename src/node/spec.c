/* spec.c - the node state of the nodes' channel as typed structs (spec.h).
 *
 * Each object is described once by a table of its fields (name = member,
 * type, offset): one walker parses any of them, one frees any of them, and
 * a field missing from a table is what the unknown-field log reports. */
#include "spec.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/strutil.h"
#include "../common/validate.h"

typedef enum {
    F_STR,    /* char * */
    F_INT,    /* long long */
    F_BOOL,   /* bool (a JSON boolean) */
    F_OBJ,    /* an embedded struct of `shape` */
    F_ROOTFS, /* F_OBJ, or a plain path string (the debug CLI) */
    F_LIST,   /* an array of `shape` structs, its count at count_off */
    F_STRS,   /* char **, count at count_off */
    F_INTS,   /* long long *, count at count_off */
    F_SKIP,   /* known, parsed by its owner (the state's containers) */
} ftype_t;

struct shape;

typedef struct {
    const char *name;
    ftype_t type;
    size_t off, count_off;
    const struct shape *shape;
} field_t;

typedef struct shape {
    const char *path; /* in the unknown-field log: "containers[].alarms" */
    size_t size;
    const field_t *fields, *more; /* more: the debug CLI's extra fields, or NULL */
} shape_t;

#define STR(T, m) {#m, F_STR, offsetof(T, m), 0, NULL}
#define INT(T, m) {#m, F_INT, offsetof(T, m), 0, NULL}
#define BOOL(T, m) {#m, F_BOOL, offsetof(T, m), 0, NULL}
#define OBJ(T, m, sh) {#m, F_OBJ, offsetof(T, m), 0, &(sh)}
#define LIST(T, m, sh) {#m, F_LIST, offsetof(T, m), offsetof(T, n_##m), &(sh)}
#define STRS(T, m) {#m, F_STRS, offsetof(T, m), offsetof(T, n_##m), NULL}
#define INTS(T, m) {#m, F_INTS, offsetof(T, m), offsetof(T, n_##m), NULL}
#define END {NULL, 0, 0, 0, NULL}

/* ---- the contract: one table per object of node_channel.c ------------------ */

static const field_t known_fields[] = {
    INT(spec_known_t, uid), STR(spec_known_t, uuid), STR(spec_known_t, customer), END};
static const shape_t known_shape = {"server.all_containers[]", sizeof(spec_known_t),
                                    known_fields, NULL};

static const field_t server_fields[] = {
    STR(spec_server_t, name),         STR(spec_server_t, address),
    STR(spec_server_t, etc_hosts),    STR(spec_server_t, etc_resolv_conf),
    INT(spec_server_t, portmap_generation), INT(spec_server_t, purge_deleted_before),
    INT(spec_server_t, alarm_seq),
    LIST(spec_server_t, all_containers, known_shape), END};
static const shape_t server_shape = {"server", sizeof(spec_server_t), server_fields, NULL};

static const field_t rootfs_fields[] = {
    STR(spec_rootfs_t, kind),       INT(spec_rootfs_t, id),
    STR(spec_rootfs_t, path),       INT(spec_rootfs_t, holder_uid),
    STR(spec_rootfs_t, holder_customer), END};
static const shape_t rootfs_shape = {"containers[].rootfs", sizeof(spec_rootfs_t),
                                     rootfs_fields, NULL};

static const field_t loopbox_fields[] = {
    INT(spec_loopbox_t, id), STR(spec_loopbox_t, filename), STR(spec_loopbox_t, mountpoint),
    BOOL(spec_loopbox_t, ro), END};
static const shape_t loopbox_shape = {"containers[].loopboxes[]", sizeof(spec_loopbox_t),
                                      loopbox_fields, NULL};

static const field_t alarms_fields[] = {
    INT(spec_alarms_t, freq),           INT(spec_alarms_t, max_alarms),
    STR(spec_alarms_t, jid),            STR(spec_alarms_t, jid_secret),
    STR(spec_alarms_t, jid_destinations), STR(spec_alarms_t, pushover_user),
    STR(spec_alarms_t, pushover_token), STR(spec_alarms_t, pushover_sound),
    STR(spec_alarms_t, pushbullet_token), STR(spec_alarms_t, slack_webhook), END};
static const shape_t alarms_shape = {"containers[].alarms", sizeof(spec_alarms_t),
                                     alarms_fields, NULL};

static const field_t customer_fields[] = {
    STR(spec_customer_t, uuid), STR(spec_customer_t, rsa_key),
    STR(spec_customer_t, rsa_pubkey), END};
static const shape_t customer_shape = {"containers[].customer", sizeof(spec_customer_t),
                                       customer_fields, NULL};

static const field_t container_fields[] = {
    INT(spec_container_t, uid),
    INT(spec_container_t, id),
    STR(spec_container_t, name),
    STR(spec_container_t, hostname),
    STR(spec_container_t, ip),
    INT(spec_container_t, memory),
    INT(spec_container_t, storage),
    STR(spec_container_t, uuid),
    STR(spec_container_t, secret_uuid),
    INT(spec_container_t, quota_threshold),
    BOOL(spec_container_t, nofollow),
    BOOL(spec_container_t, custom_distros_storage),
    INT(spec_container_t, generation),
    INT(spec_container_t, ssh_generation),
    {"rootfs", F_ROOTFS, offsetof(spec_container_t, rootfs), 0, &rootfs_shape},
    STRS(spec_container_t, ssh_keys),
    INTS(spec_container_t, links),
    LIST(spec_container_t, loopboxes, loopbox_shape),
    OBJ(spec_container_t, alarms, alarms_shape),
    OBJ(spec_container_t, customer, customer_shape),
    END};
static const shape_t container_shape = {"containers[]", sizeof(spec_container_t),
                                        container_fields, NULL};

static const field_t domain_fields[] = {
    STR(spec_domain_t, name), STR(spec_domain_t, customer), STR(spec_domain_t, pubkey), END};
static const shape_t domain_shape = {"domains[]", sizeof(spec_domain_t), domain_fields, NULL};

static const field_t portmapping_fields[] = {
    INT(spec_portmapping_t, id),          STR(spec_portmapping_t, proto),
    INT(spec_portmapping_t, public_port), INT(spec_portmapping_t, container),
    STR(spec_portmapping_t, container_ip), INT(spec_portmapping_t, private_port), END};
static const shape_t portmapping_shape = {"portmappings[]", sizeof(spec_portmapping_t),
                                          portmapping_fields, NULL};

static const field_t legion_fields[] = {
    INT(spec_legion_t, id), STR(spec_legion_t, name), STR(spec_legion_t, address),
    STR(spec_legion_t, key),
    INT(spec_legion_t, quorum), STRS(spec_legion_t, nodes), END};
static const shape_t legion_shape = {"legions[]", sizeof(spec_legion_t), legion_fields, NULL};

static const field_t link_peer_fields[] = {
    STR(spec_link_peer_t, ip), STR(spec_link_peer_t, server), INT(spec_link_peer_t, uid), END};
static const shape_t link_peer_shape = {"link_peers[]", sizeof(spec_link_peer_t),
                                        link_peer_fields, NULL};

static const field_t state_fields[] = {
    STR(spec_state_t, version),
    OBJ(spec_state_t, server, server_shape),
    {"containers", F_SKIP, 0, 0, NULL},
    LIST(spec_state_t, domains, domain_shape),
    LIST(spec_state_t, portmappings, portmapping_shape),
    LIST(spec_state_t, legions, legion_shape),
    LIST(spec_state_t, link_peers, link_peer_shape),
    END};
static const shape_t state_shape = {"", sizeof(spec_state_t), state_fields, NULL};

/* The debug CLI's spec file: a container plus what the channel sends
 * elsewhere (the server's etc files, the customer's keys) and a home. */
typedef struct {
    spec_container_t c; /* first: the container's offsets hold */
    char *home, *rsa_key, *rsa_pubkey, *etc_hosts, *etc_resolv_conf;
} cli_spec_t;

static const field_t cli_fields[] = {
    STR(cli_spec_t, home),      STR(cli_spec_t, rsa_key),         STR(cli_spec_t, rsa_pubkey),
    STR(cli_spec_t, etc_hosts), STR(cli_spec_t, etc_resolv_conf), END};
static const shape_t cli_shape = {"spec", sizeof(cli_spec_t), container_fields, cli_fields};

/* ---- unknown fields and dropped parts: logged once per name ----------------- */

/* A set of names kept for the process's life (a log line each, not one per
 * poll). */
typedef struct {
    char **names;
    size_t n, cap;
} name_set_t;

static pthread_mutex_t unknown_mu = PTHREAD_MUTEX_INITIALIZER;
static name_set_t unknown_set; /* unknown fields */
static name_set_t dropped_set; /* wrongly typed parts of the state, dropped */

/* Whether name is new to set (then kept); name is taken over either way.
 * Out of memory: true (a line too many rather than none). */
static bool set_add(name_set_t *set, char *name)
{
    pthread_mutex_lock(&unknown_mu);
    bool fresh = true;
    for (size_t i = 0; i < set->n && fresh; i++)
        fresh = strcmp(set->names[i], name) != 0;
    if (fresh && set->n == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 8;
        char **n = realloc(set->names, cap * sizeof *n);
        if (n) {
            set->names = n;
            set->cap = cap;
        }
    }
    if (fresh && set->n < set->cap) {
        set->names[set->n++] = name;
        name = NULL;
    }
    pthread_mutex_unlock(&unknown_mu);
    free(name);
    return fresh;
}

static void set_clear(name_set_t *set)
{
    for (size_t i = 0; i < set->n; i++)
        free(set->names[i]);
    free(set->names);
    memset(set, 0, sizeof *set);
}

static void unknown_field(const shape_t *sh, const char *key)
{
    char *name = str_printf("%s%s%s", sh->path, *sh->path ? "." : "", key);
    if (name && set_add(&unknown_set, name))
        log_warn("node state: unknown field %s%s%s ignored (an API newer than this node?); "
                 "logged once",
                 sh->path, *sh->path ? "." : "", key);
}

/* A wrongly typed part of the state that the node can do without: why (the
 * error naming the field) and what is left out, logged once per message. */
static void dropped(const char *why, const char *what)
{
    char *name = strdup(why);
    if (!name || set_add(&dropped_set, name))
        log_warn("%s: %s, the rest of the state is used; logged once", why, what);
}

size_t spec_unknown_count(void)
{
    pthread_mutex_lock(&unknown_mu);
    size_t n = unknown_set.n;
    pthread_mutex_unlock(&unknown_mu);
    return n;
}

size_t spec_dropped_count(void)
{
    pthread_mutex_lock(&unknown_mu);
    size_t n = dropped_set.n;
    pthread_mutex_unlock(&unknown_mu);
    return n;
}

void spec_unknown_reset(void)
{
    pthread_mutex_lock(&unknown_mu);
    set_clear(&unknown_set);
    set_clear(&dropped_set);
    pthread_mutex_unlock(&unknown_mu);
}

/* ---- free ------------------------------------------------------------------- */

static void free_obj(const shape_t *sh, void *base);

static void free_fields(const field_t *f, char *base)
{
    for (; f && f->name; f++) {
        void *at = base + f->off;
        size_t n = f->count_off ? *(size_t *)(base + f->count_off) : 0;
        switch (f->type) {
        case F_STR:
            free(*(char **)at);
            break;
        case F_OBJ:
        case F_ROOTFS:
            free_obj(f->shape, at);
            break;
        case F_LIST:
            for (size_t i = 0; i < n; i++)
                free_obj(f->shape, *(char **)at + i * f->shape->size);
            free(*(void **)at);
            break;
        case F_STRS:
            for (size_t i = 0; i < n; i++)
                free((*(char ***)at)[i]);
            free(*(void **)at);
            break;
        case F_INTS:
            free(*(void **)at);
            break;
        case F_INT:
        case F_BOOL:
        case F_SKIP:
            break;
        }
    }
}

static void free_obj(const shape_t *sh, void *base)
{
    free_fields(sh->fields, base);
    free_fields(sh->more, base);
}

static void container_free(spec_container_t *c)
{
    free_obj(&container_shape, c);
    free(c->error);
}

void spec_free(spec_state_t *s)
{
    if (!s)
        return;
    free_obj(&state_shape, s);
    for (size_t i = 0; i < s->n_containers; i++)
        container_free(&s->containers[i]);
    free(s->containers);
    json_decref(s->json);
    free(s);
}

/* ---- parse ------------------------------------------------------------------ */

static int parse_obj(const json_t *j, const shape_t *sh, void *out, const char *where,
                     err_t *e);

static int wrong_type(err_t *e, const char *where, const char *name, const char *what)
{
    return err_set(e, ERR_INPUT, "%s%s must be %s", where, name, what);
}

static int oom(err_t *e) { return err_set(e, ERR_INTERNAL, "out of memory"); }

/* One element of a list: a struct, a string or an integer. */
static int parse_elem(const json_t *v, const field_t *f, void *at, const char *where, err_t *e)
{
    if (f->type == F_STRS) {
        if (!json_is_string(v))
            return wrong_type(e, where, f->name, "a list of strings");
        return (*(char **)at = strdup(json_string_value(v))) ? 0 : oom(e);
    }
    if (f->type == F_INTS) {
        if (!json_is_integer(v))
            return wrong_type(e, where, f->name, "a list of integers");
        *(long long *)at = (long long)json_integer_value(v);
        return 0;
    }
    if (!json_is_object(v))
        return wrong_type(e, where, f->name, "a list of objects");
    char sub[160];
    snprintf(sub, sizeof sub, "%s%s[].", where, f->name);
    return parse_obj(v, f->shape, at, sub, e);
}

static int parse_list(const json_t *v, const field_t *f, char *base, const char *where, err_t *e)
{
    static const char *const what[] = {[F_LIST] = "a list of objects",
                                       [F_STRS] = "a list of strings",
                                       [F_INTS] = "a list of integers"};
    if (!json_is_array(v))
        return wrong_type(e, where, f->name, what[f->type]);
    size_t size = f->type == F_LIST   ? f->shape->size
                  : f->type == F_STRS ? sizeof(char *)
                                      : sizeof(long long);
    size_t n = json_array_size(v);
    char *items = calloc(n ? n : 1, size);
    if (!items)
        return oom(e);
    *(char **)(base + f->off) = items;
    size_t *count = (size_t *)(base + f->count_off);
    for (size_t i = 0; i < n; i++) {
        *count = i + 1; /* freed with the rest even if it fails half-way */
        if (parse_elem(json_array_get(v, i), f, items + i * size, where, e) < 0)
            return -1;
    }
    return 0;
}

static int parse_field(const json_t *v, const field_t *f, char *base, const char *where,
                       err_t *e)
{
    void *at = base + f->off;
    char sub[160];
    switch (f->type) {
    case F_STR:
        if (!json_is_string(v))
            return wrong_type(e, where, f->name, "a string");
        return (*(char **)at = strdup(json_string_value(v))) ? 0 : oom(e);
    case F_INT:
        if (!json_is_integer(v))
            return wrong_type(e, where, f->name, "an integer");
        *(long long *)at = (long long)json_integer_value(v);
        return 0;
    case F_BOOL:
        if (!json_is_boolean(v))
            return wrong_type(e, where, f->name, "true or false");
        *(bool *)at = json_is_true(v);
        return 0;
    case F_ROOTFS:
        if (json_is_string(v))
            return (((spec_rootfs_t *)at)->path = strdup(json_string_value(v))) ? 0 : oom(e);
        /* fall through */
    case F_OBJ:
        if (!json_is_object(v))
            return wrong_type(e, where, f->name, "an object");
        snprintf(sub, sizeof sub, "%s%s.", where, f->name);
        return parse_obj(v, f->shape, at, sub, e);
    case F_LIST:
    case F_STRS:
    case F_INTS:
        return parse_list(v, f, base, where, e);
    case F_SKIP:
        break;
    }
    return 0;
}

static const field_t *find_field(const shape_t *sh, const char *key)
{
    for (const field_t *f = sh->fields; f->name; f++)
        if (strcmp(f->name, key) == 0)
            return f;
    for (const field_t *f = sh->more; f && f->name; f++)
        if (strcmp(f->name, key) == 0)
            return f;
    return NULL;
}

/* Every member of j into out.  It goes on after a wrong field (the uid of a
 * container with a bad memory still lands) and returns the first error. */
static int parse_obj(const json_t *j, const shape_t *sh, void *out, const char *where, err_t *e)
{
    const char *key;
    const json_t *v;
    err_t first;
    err_clear(&first);
    json_object_foreach((json_t *)j, key, v) {
        const field_t *f = find_field(sh, key);
        err_t one;
        err_clear(&one);
        if (!f)
            unknown_field(sh, key);
        else if (!json_is_null(v) && parse_field(v, f, out, where, &one) < 0 &&
                 first.kind == ERR_NONE)
            first = one;
    }
    if (first.kind == ERR_NONE)
        return 0;
    if (e)
        *e = first;
    return -1;
}

/* A container of the state: a wrong field stays with it (c->error), the
 * other containers are used. */
static int parse_container(const json_t *j, spec_container_t *c, err_t *e)
{
    if (!json_is_object(j))
        return err_set(e, ERR_INPUT, "spec: not a JSON object");
    if (parse_obj(j, &container_shape, c, "spec: ", e) < 0)
        return -1;
    if (!json_object_get(j, "uid"))
        return err_set(e, ERR_INPUT, "spec: uid is required");
    if (c->uid <= UID_BASE || c->uid > INT_MAX)
        return err_set(e, ERR_INPUT, "spec: uid %lld is not a container uid (> %d)", c->uid,
                       UID_BASE);
    return 0;
}

/* Two containers with one ip: the second /32 would take the first's
 * traffic (and its links).  The later one gets the error and loses the ip,
 * so nothing of the network (table, links, routes) counts it. */
static int refuse_duplicate_ip(spec_state_t *s, size_t i, err_t *e)
{
    spec_container_t *c = &s->containers[i];
    for (size_t k = 0; c->ip && *c->ip && k < i; k++) {
        const spec_container_t *o = &s->containers[k];
        if (o->error || !o->ip || strcmp(o->ip, c->ip) != 0)
            continue;
        if (!(c->error = str_printf("spec: ip %s is container %lld's already: one address, "
                                    "one container (this one does not start)",
                                    c->ip, o->uid)))
            return oom(e);
        free(c->ip);
        c->ip = NULL;
        return 0;
    }
    return 0;
}

static int parse_containers(const json_t *list, spec_state_t *s, err_t *e)
{
    size_t n = json_array_size(list);
    if (!(s->containers = calloc(n ? n : 1, sizeof *s->containers)))
        return oom(e);
    for (size_t i = 0; i < n; i++) {
        spec_container_t *c = &s->containers[i];
        err_t one;
        err_clear(&one);
        s->n_containers = i + 1;
        if (parse_container(json_array_get(list, i), c, &one) < 0) {
            if (one.kind == ERR_INTERNAL)
                return err_set(e, ERR_INTERNAL, "%s", one.msg);
            if (!(c->error = strdup(one.msg)))
                return oom(e);
        } else if (refuse_duplicate_ip(s, i, e) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Frees what field f of base holds and zeroes it (a dropped field). */
static void drop_field(const field_t *f, char *base)
{
    const field_t one[] = {*f, END};
    free_fields(one, base);
    if (f->type == F_OBJ || f->type == F_ROOTFS)
        memset(base + f->off, 0, f->shape->size);
    else if (f->type == F_STR || f->type == F_LIST || f->type == F_STRS || f->type == F_INTS)
        *(void **)(base + f->off) = NULL;
    if (f->count_off)
        *(size_t *)(base + f->count_off) = 0;
}

/* A list of the state the node can do without (domains, portmappings,
 * legions): a wrongly typed element is dropped, the others kept; a value
 * that is not a list is an empty one.  -1 only when out of memory. */
static int parse_list_lenient(const json_t *v, const field_t *f, char *base, err_t *e)
{
    const char *where = "node state: ";
    if (!json_is_array(v)) {
        err_t one;
        err_clear(&one);
        wrong_type(&one, where, f->name, "a list of objects");
        dropped(one.msg, "ignored");
        return 0;
    }
    size_t size = f->shape->size, n = json_array_size(v);
    char *items = calloc(n ? n : 1, size);
    if (!items)
        return oom(e);
    *(char **)(base + f->off) = items;
    size_t *count = (size_t *)(base + f->count_off);
    for (size_t i = 0; i < n; i++) {
        char *at = items + *count * size;
        err_t one;
        err_clear(&one);
        if (parse_elem(json_array_get(v, i), f, at, where, &one) == 0) {
            (*count)++;
            continue;
        }
        free_obj(f->shape, at);
        memset(at, 0, size);
        if (one.kind == ERR_INTERNAL)
            return err_set(e, ERR_INTERNAL, "%s", one.msg);
        dropped(one.msg, "that element is dropped");
    }
    return 0;
}

/* The state's server: every field may be missing, so a wrongly typed one
 * is left out (logged).  all_containers goes whole or not at all: a uid
 * missing from it would retire that container's home, so a list with any
 * wrong element counts as absent (no home is retired). */
static int parse_server(const json_t *j, spec_server_t *out, err_t *e)
{
    const char *where = "node state: server.";
    if (!json_is_object(j)) {
        err_t one;
        err_clear(&one);
        wrong_type(&one, "node state: ", "server", "an object");
        dropped(one.msg, "ignored (no home is retired)");
        return 0;
    }
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)j, key, v) {
        const field_t *f = find_field(&server_shape, key);
        err_t one;
        err_clear(&one);
        if (!f) {
            unknown_field(&server_shape, key);
            continue;
        }
        if (json_is_null(v) || parse_field(v, f, (char *)out, where, &one) == 0) {
            if (f->off == offsetof(spec_server_t, all_containers))
                out->has_all_containers = json_is_array(v);
            continue;
        }
        drop_field(f, (char *)out);
        if (one.kind == ERR_INTERNAL)
            return err_set(e, ERR_INTERNAL, "%s", one.msg);
        dropped(one.msg, f->off == offsetof(spec_server_t, all_containers)
                             ? "the list is ignored (no home is retired)"
                             : "that field is ignored");
    }
    return 0;
}

/* What the node cannot do without refuses the state: an object, a version
 * string, a list of containers (each container then stands alone).  The
 * rest is read part by part: a wrongly typed part is dropped and logged. */
spec_state_t *spec_parse(json_t *j, err_t *e)
{
    if (!json_is_object(j)) {
        err_set(e, ERR_INPUT, "node state: not a JSON object");
        return NULL;
    }
    spec_state_t *s = calloc(1, sizeof *s);
    if (!s) {
        oom(e);
        return NULL;
    }
    s->json = json_incref(j);
    const json_t *version = json_object_get(j, "version");
    const json_t *list = json_object_get(j, "containers");
    if (!json_is_string(version)) {
        err_set(e, ERR_INPUT, "node state: version (a string) is required");
        goto fail;
    }
    if (!json_is_array(list)) {
        err_set(e, ERR_INPUT, "node state: containers (a list of objects) is required");
        goto fail;
    }
    const char *key;
    const json_t *v;
    json_object_foreach(j, key, v) {
        const field_t *f = find_field(&state_shape, key);
        int rc = 0;
        if (!f)
            unknown_field(&state_shape, key);
        else if (json_is_null(v) || f->type == F_SKIP)
            ;
        else if (f->type == F_STR) /* the version, checked above */
            rc = parse_field(v, f, (char *)s, "node state: ", e);
        else if (f->type == F_OBJ) /* the server */
            rc = parse_server(v, &s->server, e);
        else
            rc = parse_list_lenient(v, f, (char *)s, e);
        if (rc < 0)
            goto fail;
    }
    if (parse_containers(list, s, e) < 0)
        goto fail;
    return s;
fail:
    spec_free(s);
    return NULL;
}

/* ---- the runtime's spec ------------------------------------------------------ */

static const char *nonempty(const char *s) { return s && *s ? s : NULL; }

/* A copy of s, or NULL for NULL; -1 when out of memory. */
static int dup_opt(const char *s, char **out, err_t *e)
{
    if (!s)
        return 0;
    return (*out = strdup(s)) ? 0 : oom(e);
}

/* A custom distro lives in its holder's home, distros/<path>: the runtime
 * mounts that home for the start (container.h, rootfs_holder); rootfs is
 * the nominal host path, for messages.  Whose the holder is, the
 * supervisor checks (check_custom_distro). */
static int runtime_custom(const spec_rootfs_t *r, const node_cfg_t *cfg, container_spec_t *s,
                          err_t *e)
{
    char why[256] = "";
    if (r->holder_uid <= UID_BASE || r->holder_uid > INT_MAX || !r->path ||
        !custom_distro_path_valid(r->path, why, sizeof why))
        return err_set(e, ERR_INPUT, "spec: rootfs: bad custom distro %s", why);
    s->rootfs_holder = (int)r->holder_uid;
    if (!(s->rootfs_custom = strdup(r->path)) ||
        !(s->rootfs = str_printf("%s/%lld/distros/%s", cfg->containers_dir, r->holder_uid,
                                 r->path)))
        return oom(e);
    return 0;
}

/* The distro: a path, "host" (the node's own root), or the channel's object
 * (a custom one: runtime_custom). */
static int runtime_rootfs(const spec_rootfs_t *r, const node_cfg_t *cfg, container_spec_t *s,
                          err_t *e)
{
    const char *path = r->path;
    if (r->kind && strcmp(r->kind, "custom") == 0)
        return runtime_custom(r, cfg, s, e);
    if (r->kind && strcmp(r->kind, "host") == 0)
        path = "/";
    if (!path || !*path)
        return err_set(e, ERR_INPUT, "spec: rootfs (the distro directory) is required");
    if (strcmp(path, "host") == 0)
        path = "/"; /* the node's own root, read-only: cheap, for tests */
    return dup_opt(path, &s->rootfs, e);
}

static int runtime_keys(const spec_container_t *c, container_spec_t *s, err_t *e)
{
    if (c->n_ssh_keys && !(s->ssh_keys = calloc(c->n_ssh_keys, sizeof *s->ssh_keys)))
        return oom(e);
    for (size_t i = 0; i < c->n_ssh_keys; i++) {
        if (!(s->ssh_keys[i] = strdup(c->ssh_keys[i])))
            return oom(e);
        s->n_ssh_keys = i + 1;
    }
    return 0;
}

/* The fields of both sources: the container, and the files and keys the
 * caller chose (the channel's server and customer, or the CLI's file). */
static int runtime_fill(const spec_container_t *c, const cli_spec_t *files,
                        const node_cfg_t *cfg, container_spec_t *s, err_t *e)
{
    if (c->error)
        return err_set(e, ERR_INPUT, "%s", c->error);
    s->uid = (int)c->uid;
    s->memory_mb = c->memory;
    s->storage_mb = c->storage;
    s->generation = c->generation;
    s->ssh_generation = c->ssh_generation;
    if (dup_opt(c->hostname, &s->hostname, e) < 0 || dup_opt(files->home, &s->home, e) < 0 ||
        dup_opt(files->rsa_key, &s->rsa_key, e) < 0 ||
        dup_opt(files->rsa_pubkey, &s->rsa_pubkey, e) < 0 ||
        dup_opt(files->etc_hosts, &s->etc_hosts, e) < 0 ||
        dup_opt(files->etc_resolv_conf, &s->etc_resolv_conf, e) < 0 ||
        runtime_rootfs(&c->rootfs, cfg, s, e) < 0 || runtime_keys(c, s, e) < 0)
        return -1;
    s->nofollow = c->nofollow;
    /* uwsgi0's address: the API's ip, inside this node's container network. */
    if (cfg->net.on && net_spec_fill(&cfg->net, c->ip, &s->net, e) < 0)
        return -1;
    if (!s->home && !(s->home = str_printf("%s/%d", cfg->containers_dir, s->uid)))
        return oom(e);
    return 0;
}

static int runtime(const spec_container_t *c, const cli_spec_t *files, const node_cfg_t *cfg,
                   container_spec_t *out, err_t *e)
{
    err_t local;
    if (!e)
        e = &local;
    err_clear(e);
    memset(out, 0, sizeof *out);
    if (!cfg->containers_dir)
        return err_set(e, ERR_INPUT, "the containers directory is not configured");
    if (runtime_fill(c, files, cfg, out, e) < 0) {
        container_spec_free(out);
        return -1;
    }
    return 0;
}

int spec_runtime(const spec_container_t *c, const spec_server_t *server, const node_cfg_t *cfg,
                 container_spec_t *out, err_t *e)
{
    /* Homes are the node's business: always <containers_dir>/<uid>. */
    cli_spec_t files = {
        .rsa_key = (char *)nonempty(c->customer.rsa_key),
        .rsa_pubkey = (char *)nonempty(c->customer.rsa_pubkey),
        .etc_hosts = (char *)nonempty(server ? server->etc_hosts : NULL),
        .etc_resolv_conf = (char *)nonempty(server ? server->etc_resolv_conf : NULL),
    };
    if (runtime(c, &files, cfg, out, e) < 0)
        return -1;
    out->net.localnet = out->net.on && server && net_is_loopback(server->address);
    return 0;
}

int spec_cli_parse(const json_t *j, const node_cfg_t *cfg, container_spec_t *out, err_t *e)
{
    err_t local;
    if (!e)
        e = &local;
    err_clear(e);
    memset(out, 0, sizeof *out);
    cli_spec_t cli;
    memset(&cli, 0, sizeof cli);
    int rc = -1;
    if (!json_is_object(j))
        err_set(e, ERR_INPUT, "spec: not a JSON object");
    else if (parse_obj(j, &cli_shape, &cli, "spec: ", e) < 0)
        ;
    else if (!json_object_get(j, "uid"))
        err_set(e, ERR_INPUT, "spec: uid is required");
    else if (cli.c.uid <= UID_BASE || cli.c.uid > INT_MAX)
        err_set(e, ERR_INPUT, "spec: uid %lld is not a container uid (> %d)", cli.c.uid,
                UID_BASE);
    else
        rc = runtime(&cli.c, &cli, cfg, out, e);
    free_obj(&cli_shape, &cli);
    return rc;
}
