/* node_channel.c - the nodes' side of the API.
 *
 * A node (server) authenticates with HTTP Basic: its server name and the
 * secret `imperium admin server add` printed.  It can only read its own
 * desired state:
 *
 *   GET  <node_prefix>/state?version=V&wait=S
 *        The startable containers of that server with everything needed to
 *        run them, the router keys of their customers' domains, the port
 *        mappings and legions, plus a `version` (a digest of the rest).  When
 *        V equals the current version the request waits up to S seconds
 *        (at most 60) for a change: the node learns of a change within
 *        milliseconds and simply asks again after an outage.
 *   POST <node_prefix>/status  {"containers": [{"uid", "state", "since",
 *        "restarts", "last_error", "generation"}]}
 *        What the node runs; shown to customers as the container's "status". */
#include "../common/clock.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "changes.h"
#include "node_channel.h"
#include "fields.h"
#include "legions.h"
#include "routes.h"
#include "portmappings.h"
#include "rows.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_WAIT_S 60

enum {
    S_ID, S_NAME, S_MEMORY, S_STORAGE, S_UUID, S_QUOTA, S_NOFOLLOW, S_ALARM_FREQ, S_JID,
    S_JID_SECRET, S_JID_DEST, S_PO_USER, S_PO_TOKEN, S_PO_SOUND, S_PB_TOKEN, S_SLACK,
    S_GEN, S_SSH_GEN, S_CDS, S_MAX_ALARMS, S_DISTRO, S_DISTRO_PATH, S_CDISTRO,
    S_CDISTRO_PATH, S_CDISTRO_HOLDER, S_CUST_UUID, S_RSA_KEY, S_RSA_PUB, S_SECRET_UUID,
    S_CDISTRO_HOLDER_CUST,
};

/* A container is startable with a root filesystem and at least one key. */
static const char startable_sql[] =
    "SELECT c.id, c.name, c.memory, c.storage, c.uuid, c.quota_threshold, c.nofollow, "
    "c.alarm_freq, c.jid, c.jid_secret, c.jid_destinations, c.pushover_user, "
    "c.pushover_token, c.pushover_sound, c.pushbullet_token, c.slack_webhook, c.generation, "
    "c.ssh_generation, c.custom_distros_storage, c.max_alarms, d.id, d.path, cd.id, cd.path, "
    "cd.container_id, cu.uuid, cu.rsa_key, cu.rsa_pubkey, c.secret_uuid, hc.uuid "
    "FROM containers c JOIN customers cu ON cu.id = c.customer_id "
    "LEFT JOIN distros d ON d.id = c.distro_id "
    "LEFT JOIN custom_distros cd ON cd.id = c.custom_distro_id "
    "LEFT JOIN containers h ON h.id = cd.container_id "
    "LEFT JOIN customers hc ON hc.id = h.customer_id "
    "WHERE c.server_id = $1 AND (d.id IS NOT NULL OR cd.id IS NOT NULL) "
    "AND EXISTS (SELECT 1 FROM ssh_keys k WHERE k.container_id = c.id) ORDER BY c.id";

static json_t *rootfs_json(db_res_t *res, int i)
{
    if (!db_is_null(res, i, S_CDISTRO))
        /* A custom distro lives in another container's home: the node
         * resolves <home of holder>/distros/<path>, and checks that the
         * holder it knows is of this customer (holder_customer) before
         * trusting that tree. */
        return json_pack("{s:s,s:I,s:I,s:s,s:s}", "kind", "custom", "id",
                         (json_int_t)db_get_int(res, i, S_CDISTRO), "holder_uid",
                         (json_int_t)container_uid(db_get_int(res, i, S_CDISTRO_HOLDER)),
                         "holder_customer", db_get(res, i, S_CDISTRO_HOLDER_CUST), "path",
                         db_get(res, i, S_CDISTRO_PATH));
    return json_pack("{s:s,s:I,s:s}", "kind", "distro", "id",
                     (json_int_t)db_get_int(res, i, S_DISTRO), "path",
                     db_get(res, i, S_DISTRO_PATH));
}

static json_t *loopbox_state(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s,s:s,s:b}", "id", (json_int_t)db_get_int(res, row, 0), "filename",
                     db_get(res, row, 1), "mountpoint", db_get(res, row, 2), "ro",
                     (int)db_get_int(res, row, 3));
}

static json_t *container_state(db_t *db, err_t *e, db_res_t *res, int i, void *ctx)
{
    (void)ctx;
    long long id = db_get_int(res, i, S_ID);
    char ip[32] = "", hostname[HOSTNAME_MAX + 1];
    container_ip(id, ip, sizeof ip);
    container_hostname(db_get(res, i, S_NAME), hostname, sizeof hostname);
    json_t *keys = rows_str_list(db, e, "SELECT key FROM ssh_keys WHERE container_id = $1 "
                                   "ORDER BY pos", id);
    /* Links work only when both sides agreed. */
    json_t *links = rows_uid_list(db, e,
                             "SELECT l.to_id FROM links l JOIN links b "
                             "ON b.container_id = l.to_id AND b.to_id = l.container_id "
                             "WHERE l.container_id = $1 ORDER BY l.to_id", id);
    json_t *loopboxes = rows_json(db, e, loopbox_state,
                                  "SELECT id, filename, mountpoint, ro FROM loopboxes "
                                  "WHERE container_id = $1 ORDER BY id", DB_ARGS(DB_INT(id)));
    if (!keys || !links || !loopboxes) {
        json_decref(keys);
        json_decref(links);
        json_decref(loopboxes);
        return NULL;
    }
    json_t *alarms = json_pack(
        "{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "freq",
        (json_int_t)db_get_int(res, i, S_ALARM_FREQ), "jid", db_get(res, i, S_JID),
        "jid_secret", db_get(res, i, S_JID_SECRET), "jid_destinations",
        db_get(res, i, S_JID_DEST), "pushover_user", db_get(res, i, S_PO_USER),
        "pushover_token", db_get(res, i, S_PO_TOKEN), "pushover_sound",
        db_get(res, i, S_PO_SOUND), "pushbullet_token", db_get(res, i, S_PB_TOKEN),
        "slack_webhook", db_get(res, i, S_SLACK), "max_alarms",
        (json_int_t)db_get_int(res, i, S_MAX_ALARMS));
    return json_pack(
        "{s:I,s:I,s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:I,s:b,s:b,s:I,s:I,s:o,s:o,s:o,s:o,s:o,"
        "s:{s:s,s:s,s:s}}",
        "uid", (json_int_t)container_uid(id), "id", (json_int_t)id, "name",
        db_get(res, i, S_NAME), "hostname", hostname, "ip", ip, "memory",
        (json_int_t)db_get_int(res, i, S_MEMORY), "storage",
        (json_int_t)db_get_int(res, i, S_STORAGE), "uuid", db_get(res, i, S_UUID),
        "secret_uuid", db_get(res, i, S_SECRET_UUID), "quota_threshold",
        (json_int_t)db_get_int(res, i, S_QUOTA), "nofollow",
        (int)db_get_int(res, i, S_NOFOLLOW), "custom_distros_storage",
        (int)db_get_int(res, i, S_CDS), "generation", (json_int_t)db_get_int(res, i, S_GEN),
        "ssh_generation", (json_int_t)db_get_int(res, i, S_SSH_GEN), "rootfs",
        rootfs_json(res, i), "ssh_keys", keys, "links", links, "loopboxes", loopboxes,
        "alarms", alarms, "customer", "uuid", db_get(res, i, S_CUST_UUID), "rsa_key",
        db_get(res, i, S_RSA_KEY), "rsa_pubkey", db_get(res, i, S_RSA_PUB));
}

static json_t *containers_state(db_t *db, err_t *e, long long server_id)
{
    return rows_query_json(db, e, container_state, NULL, startable_sql,
                           DB_ARGS(DB_INT(server_id)));
}

/* The domains the router of this node must accept subscriptions for: those
 * of every customer with a container here, each with its owner's key. */
static json_t *domain_state(db_res_t *res, int row)
{
    return json_pack("{s:s,s:s,s:s}", "name", db_get(res, row, 0), "customer",
                     db_get(res, row, 1), "pubkey", db_get(res, row, 2));
}

static json_t *domains_state(db_t *db, err_t *e, long long server_id)
{
    return rows_json(db, e, domain_state,
                     "SELECT d.name, cu.uuid, cu.rsa_pubkey FROM domains d "
                     "JOIN customers cu ON cu.id = d.customer_id WHERE d.customer_id IN "
                     "(SELECT customer_id FROM containers WHERE server_id = $1) "
                     "ORDER BY d.name",
                     DB_ARGS(DB_INT(server_id)));
}

static json_t *portmappings_state(db_t *db, err_t *e, long long server_id)
{
    return rows_json(db, e, portmapping_json, PORTMAPPING_SELECT "WHERE server_id = $1 ORDER BY id",
                     DB_ARGS(DB_INT(server_id)));
}

/* The containers on OTHER servers that a container of this server is linked
 * with both ways: the node routes their /32s over the overlay to their
 * server's address (docs/NETWORK.md) and lets only these pairs through. */
static json_t *link_peer_state(db_res_t *res, int row)
{
    long long id = db_get_int(res, row, 0);
    char ip[32] = "";
    container_ip(id, ip, sizeof ip);
    return json_pack("{s:s,s:s,s:I}", "ip", ip, "server", db_get(res, row, 1), "uid",
                     (json_int_t)container_uid(id));
}

static json_t *link_peers_state(db_t *db, err_t *e, long long server_id)
{
    return rows_json(db, e, link_peer_state,
                     "SELECT DISTINCT o.id, s.address FROM containers c "
                     "JOIN links l ON l.container_id = c.id "
                     "JOIN links b ON b.container_id = l.to_id AND b.to_id = c.id "
                     "JOIN containers o ON o.id = l.to_id JOIN servers s ON s.id = o.server_id "
                     "WHERE c.server_id = $1 AND o.server_id != $1 ORDER BY o.id",
                     DB_ARGS(DB_INT(server_id)));
}

/* Every container of the server, startable or not, with its uuid and its
 * customer's: the node tells a deleted container (its home is moved out of
 * the customers' reach) from one that merely cannot start, and checks that
 * a custom distro's holder is a container of the same customer. */
static json_t *all_container_state(db_res_t *res, int row)
{
    return json_pack("{s:I,s:s,s:s}", "uid", (json_int_t)container_uid(db_get_int(res, row, 0)),
                     "uuid", db_get(res, row, 1), "customer", db_get(res, row, 2));
}

static json_t *all_containers_state(db_t *db, err_t *e, long long server_id)
{
    return rows_json(db, e, all_container_state,
                     "SELECT c.id, c.uuid, cu.uuid FROM containers c JOIN customers cu "
                     "ON cu.id = c.customer_id WHERE c.server_id = $1 ORDER BY c.id",
                     DB_ARGS(DB_INT(server_id)));
}

/* The whole desired state of one server, without its version. */
json_t *node_state_json(db_t *db, err_t *e, long long server_id)
{
    db_res_t *srv = db_query(db, e,
                             "SELECT name, address, etc_hosts, etc_resolv_conf, "
                             "portmap_generation, purge_deleted_before FROM servers "
                             "WHERE id = $1",
                             DB_ARGS(DB_INT(server_id)));
    if (!srv)
        return NULL;
    if (srv->nrows != 1) {
        db_res_free(srv);
        err_set(e, ERR_NOTFOUND, "server %lld vanished", server_id);
        return NULL;
    }
    json_t *containers = containers_state(db, e, server_id);
    json_t *domains = containers ? domains_state(db, e, server_id) : NULL;
    json_t *ports = domains ? portmappings_state(db, e, server_id) : NULL;
    json_t *legions = ports ? legions_of_server_json(db, e, server_id) : NULL;
    json_t *peers = legions ? link_peers_state(db, e, server_id) : NULL;
    json_t *out = NULL;
    if (peers)
        /* purge_deleted_before: the node removes the homes of containers
         * deleted before this unix time (imperium admin server purge-deleted). */
        out = json_pack("{s:{s:s,s:s,s:s,s:s,s:I,s:I},s:o,s:o,s:o,s:o}", "server", "name",
                        db_get(srv, 0, 0), "address", db_get(srv, 0, 1), "etc_hosts",
                        db_get(srv, 0, 2), "etc_resolv_conf", db_get(srv, 0, 3),
                        "portmap_generation", (json_int_t)db_get_int(srv, 0, 4),
                        "purge_deleted_before", (json_int_t)db_get_int(srv, 0, 5), "containers",
                        containers, "domains", domains, "portmappings", ports, "legions",
                        legions);
    else {
        json_decref(containers);
        json_decref(domains);
        json_decref(ports);
        json_decref(legions);
    }
    /* json_object_set_new takes peers even when it fails. */
    if (!out)
        json_decref(peers);
    else if (json_object_set_new(out, "link_peers", peers) < 0) {
        json_decref(out);
        out = NULL;
    }
    db_res_free(srv);
    json_t *all = out ? all_containers_state(db, e, server_id) : NULL;
    if (out && (!all || json_object_set_new(json_object_get(out, "server"), "all_containers",
                                            all) < 0)) {
        json_decref(out);
        out = NULL;
    }
    if (!out && e->kind == ERR_NONE)
        err_set(e, ERR_INTERNAL, "out of memory building the node state");
    return out;
}

/* A digest of the state: equal digests mean nothing changed for the node. */
static int state_version(json_t *state, char out[33])
{
    char *text = json_dumps(state, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return -1;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)text, strlen(text), md);
    free(text);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static void h_node_state(req_t *r)
{
    const char *have = req_arg(r, "version"), *wait_s = req_arg(r, "wait");
    long long wait = 0;
    if (wait_s && (!str_to_ll(wait_s, &wait) || wait < 0 || wait > MAX_WAIT_S))
        return reply_bad_request(r, "'wait' must be 0 to %d seconds", MAX_WAIT_S);
    if (*r->poll_deadline_ms == 0)
        *r->poll_deadline_ms = now_ms() + wait * 1000;
    /* Read the sequence first: a change committed after this point wakes us.
     * The state's snapshot must be taken after it, so the request's read
     * transaction (taken for the authentication) starts anew. */
    db_read_end(r->db);
    unsigned long long seq = changes_seq(r->api->changes);
    err_t e = {0};
    if (db_read_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    json_t *state = node_state_json(r->db, &e, r->node_server_id);
    char version[33];
    if (!state || state_version(state, version) < 0) {
        json_decref(state);
        return reply_internal(r, &e);
    }
    if (have && strcmp(have, version) == 0 && now_ms() < *r->poll_deadline_ms &&
        changes_wait(r->api->changes, r->conn, seq)) {
        json_decref(state);
        r->suspended = true;
        return;
    }
    json_object_set_new(state, "version", json_string(version));
    reply(r, 200, state);
}

static const char *const states[] = {"running", "starting", "stopped", "failed", NULL};

static int status_one(req_t *r, json_t *c, err_t *e)
{
    json_t *uid = json_object_get(c, "uid"), *state = json_object_get(c, "state");
    json_t *since = json_object_get(c, "since"), *restarts = json_object_get(c, "restarts");
    json_t *last = json_object_get(c, "last_error"), *gen = json_object_get(c, "generation");
    bool known = false;
    for (const char *const *s = states; json_is_string(state) && *s; s++)
        known |= strcmp(*s, json_string_value(state)) == 0;
    if (!json_is_integer(uid) || !known || (since && !json_is_integer(since)) ||
        (restarts && !json_is_integer(restarts)) || (gen && !json_is_integer(gen)) ||
        (last && !json_is_null(last) && !json_is_string(last)))
        return err_set(e, ERR_INPUT,
                       "each container needs an integer uid, a state among running, starting, "
                       "stopped, failed, and optional integer since/restarts/generation and "
                       "string last_error");
    long long id = container_id_of_uid(json_integer_value(uid));
    long long mine = db_scalar_int(r->db, e, 0,
                                   "SELECT id FROM containers WHERE id = $1 AND server_id = $2",
                                   DB_ARGS(DB_INT(id), DB_INT(r->node_server_id)));
    if (mine <= 0)
        return mine < 0 ? -1 : 0; /* deleted meanwhile or not this node's: ignore */
    return db_exec(r->db, e,
                   "INSERT INTO container_status (container_id, state, since, restarts, "
                   "last_error, generation) VALUES ($1, $2, $3, $4, $5, $6) "
                   "ON CONFLICT (container_id) DO UPDATE SET state = excluded.state, "
                   "since = excluded.since, restarts = excluded.restarts, "
                   "last_error = excluded.last_error, generation = excluded.generation "
                   /* The periodic report mostly repeats what is stored: rewriting
                    * it would count as a change and empty the response cache. */
                   "WHERE container_status.state IS DISTINCT FROM excluded.state "
                   "OR container_status.since IS DISTINCT FROM excluded.since "
                   "OR container_status.restarts IS DISTINCT FROM excluded.restarts "
                   "OR container_status.last_error IS DISTINCT FROM excluded.last_error "
                   "OR container_status.generation IS DISTINCT FROM excluded.generation",
                   DB_ARGS(DB_INT(id), DB_TEXT(json_string_value(state)),
                           DB_INT(since ? json_integer_value(since) : (long long)time(NULL)),
                           DB_INT(restarts ? json_integer_value(restarts) : 0),
                           DB_TEXT(json_string_value(last)),
                           DB_INT(gen ? json_integer_value(gen) : 0))) < 0
               ? -1
               : 0;
}

static void h_node_status(req_t *r)
{
    static const field_spec spec[] = {{"containers", FT_ANY_LIST}, {NULL, 0}};
    static const char *const required[] = {"containers", NULL};
    if (fields_check(r, spec) < 0 || fields_require(r, required) < 0)
        return;
    err_t e = {0};
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    size_t i;
    json_t *c;
    json_array_foreach(field_list(r, "containers"), i, c)
    {
        if (status_one(r, c, &e) < 0) {
            db_rollback(r->db);
            return reply_err(r, &e);
        }
    }
    if (db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_internal(r, &e);
    }
    reply_ok(r);
}

const route_t node_routes[] = {
    {"GET", "state", h_node_state, AUTH_NODE, CACHE_NONE, WAKE_NONE},
    {"POST", "status", h_node_status, AUTH_NODE, CACHE_NONE, WAKE_NONE},
    {NULL, NULL, NULL, 0, 0, 0},
};
