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
 *        What the node runs; shown to customers as the container's "status".
 *   POST <node_prefix>/metrics  {"containers": [...], "domains": [...]}
 *   POST <node_prefix>/alarms   {"alarms": [{"ref", "uid", "unix", "class", "msg"}]}
 *   GET  <node_prefix>/alarms?after=ID
 *        The node's samples and system alarms, and the alarms raised with
 *        the API that it delivers (docs/NODE-CHANNEL.md; issue 16). */
#include "../common/clock.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "alarms.h"
#include "changes.h"
#include "container_model.h"
#include "metrics.h"
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
 * of every customer with a container here or on another member of one of
 * its legions (their cluster-domain subscriptions arrive from the members,
 * docs/CLUSTER.md), each with its owner's key. */
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
                     "(SELECT customer_id FROM containers WHERE server_id = $1 OR server_id IN "
                     "(SELECT n2.server_id FROM legion_nodes n1 JOIN legion_nodes n2 "
                     "USING (legion_id) WHERE n1.server_id = $1)) "
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
                             /* alarm_seq: the newest id of the alarms raised with
                              * the API for this server's containers (alarm_store_in
                              * keeps it), so that raising one wakes the node, which
                              * then asks GET alarms?after= and delivers it. */
                             "portmap_generation, purge_deleted_before, alarm_seq "
                             "FROM servers WHERE id = $1",
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
        out = json_pack("{s:{s:s,s:s,s:s,s:s,s:I,s:I,s:I},s:o,s:o,s:o,s:o}", "server",
                        "name", db_get(srv, 0, 0), "address", db_get(srv, 0, 1), "etc_hosts",
                        db_get(srv, 0, 2), "etc_resolv_conf", db_get(srv, 0, 3),
                        "portmap_generation", (json_int_t)db_get_int(srv, 0, 4),
                        "purge_deleted_before", (json_int_t)db_get_int(srv, 0, 5),
                        "alarm_seq", (json_int_t)db_get_int(srv, 0, 6), "containers",
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

/* Container `uid` of this node's server: its id (and its customer in
 * *customer), 0 when it is not one, -1 on failure. */
static long long node_container(req_t *r, err_t *e, long long uid, long long *customer)
{
    long long id = container_id_of_uid(uid);
    if (id < 0)
        return 0;
    db_res_t *res = db_query(r->db, e,
                             "SELECT customer_id FROM containers WHERE id = $1 AND "
                             "server_id = $2",
                             DB_ARGS(DB_INT(id), DB_INT(r->node_server_id)));
    if (!res)
        return -1;
    long long out = res->nrows == 1 ? id : 0;
    if (out && customer)
        *customer = db_get_int(res, 0, 0);
    db_res_free(res);
    return out;
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
    long long id = node_container(r, e, json_integer_value(uid), NULL);
    if (id <= 0)
        return id < 0 ? -1 : 0; /* deleted meanwhile or not this node's: ignore */
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

/* ---- the node's reports: metrics and system alarms (issue 16) ----
 *
 * A body is checked as it is stored, in one transaction: the first
 * malformed part answers 400 naming it (e.g. "containers[2].m.cpu must be
 * a non-negative integer") and rolls everything back.  What is well formed
 * but not storable (a uid of another server, an unknown metric, a domain
 * that is not of the container's customer) is skipped and counted: the
 * node cannot do better by sending it again. */

typedef struct {
    long long stored, skipped;
} tally_t;

/* The largest metric value taken: 2^53, exact as a JSON number everywhere
 * (a quota in bytes up to 8 PiB), and far from overflowing the sums and
 * roundings made of it. */
#define METRIC_VALUE_MAX (1LL << 53)

/* Whether unix time `t` is too far ahead of the API's clock. */
static bool too_far_ahead(long long t)
{
    return t > (long long)time(NULL) + REPORT_AHEAD_MAX_S;
}

/* `list`[i] as an object with an integer uid, a positive integer unix at
 * most a day ahead, and an object `m` of integers 0 to METRIC_VALUE_MAX;
 * ERR_INPUT naming the part. */
static int sample_entry_check(err_t *e, const char *list, size_t i, json_t *o)
{
    if (!json_is_object(o))
        return err_set(e, ERR_INPUT, "%s[%zu] must be an object", list, i);
    json_t *uid = json_object_get(o, "uid"), *at = json_object_get(o, "unix");
    json_t *m = json_object_get(o, "m");
    if (!json_is_integer(uid))
        return err_set(e, ERR_INPUT, "%s[%zu].uid must be an integer", list, i);
    if (!json_is_integer(at) || json_integer_value(at) <= 0)
        return err_set(e, ERR_INPUT, "%s[%zu].unix must be a positive integer (unix seconds)",
                       list, i);
    if (too_far_ahead(json_integer_value(at)))
        return err_set(e, ERR_INPUT,
                       "%s[%zu].unix is more than %d seconds ahead of the API's clock", list, i,
                       REPORT_AHEAD_MAX_S);
    if (!json_is_object(m))
        return err_set(e, ERR_INPUT, "%s[%zu].m must be an object of metrics", list, i);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > METRIC_VALUE_MAX)
            return err_set(e, ERR_INPUT,
                           "%s[%zu].m.%s must be a non-negative integer of at most 2^53", list,
                           i, k);
    }
    return 0;
}

/* The id of domain `name` when it is customer `customer`'s, else 0. */
static long long customer_domain(req_t *r, err_t *e, const char *name, long long customer)
{
    return db_scalar_int(r->db, e, 0, "SELECT id FROM domains WHERE name = $1 AND "
                                      "customer_id = $2",
                         DB_ARGS(DB_TEXT(name), DB_INT(customer)));
}

/* Store one entry of containers[] (domain_name NULL) or domains[]. */
static int sample_entry_store(req_t *r, err_t *e, json_t *o, const char *domain_name,
                              tally_t *t)
{
    json_t *m = json_object_get(o, "m");
    long long customer = 0, domain = 0;
    long long cid = node_container(r, e, json_integer_value(json_object_get(o, "uid")),
                                   &customer);
    if (cid > 0 && domain_name)
        domain = customer_domain(r, e, domain_name, customer);
    if (cid < 0 || domain < 0)
        return -1;
    if (cid == 0 || (domain_name && domain == 0)) {
        t->skipped += (long long)json_object_size(m);
        return 0;
    }
    long long at = json_integer_value(json_object_get(o, "unix"));
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        bool known = domain_name ? metric_domain_known(k) : metric_container_known(k);
        if (!known) {
            t->skipped++;
            continue;
        }
        long long value = json_integer_value(v);
        if ((domain_name ? metrics_store_domain(r->db, e, domain, cid, k, at, value)
                         : metrics_store_container(r->db, e, cid, k, at, value)) < 0)
            return -1;
        t->stored++;
    }
    return 0;
}

/* Every entry of body list `list` (absent: none). */
static int sample_list_store(req_t *r, err_t *e, const char *list, tally_t *t)
{
    json_t *entries = json_object_get(r->json, list);
    if (!entries)
        return 0;
    if (!json_is_array(entries))
        return err_set(e, ERR_INPUT, "'%s' must be a list", list);
    bool domains = strcmp(list, "domains") == 0;
    size_t i;
    json_t *o;
    json_array_foreach(entries, i, o)
    {
        if (sample_entry_check(e, list, i, o) < 0)
            return -1;
        json_t *name = json_object_get(o, "name");
        if (domains && !json_is_string(name))
            return err_set(e, ERR_INPUT, "domains[%zu].name must be a string", i);
        if (sample_entry_store(r, e, o, domains ? json_string_value(name) : NULL, t) < 0)
            return -1;
    }
    return 0;
}

/* Answer {"stored": N, "skipped": M} after running `fn` in one transaction. */
static void store_report(req_t *r, int (*fn)(req_t *, err_t *, tally_t *))
{
    if (req_parse_object(r) < 0)
        return;
    err_t e = {0};
    tally_t t = {0};
    if (db_begin(r->db, &e) < 0)
        return reply_internal(r, &e);
    if (fn(r, &e, &t) < 0 || db_commit(r->db, &e) < 0) {
        db_rollback(r->db);
        return reply_err(r, &e);
    }
    reply(r, 200, json_pack("{s:I,s:I}", "stored", (json_int_t)t.stored, "skipped",
                            (json_int_t)t.skipped));
}

static int metrics_store_body(req_t *r, err_t *e, tally_t *t)
{
    return sample_list_store(r, e, "containers", t) < 0 ||
                   sample_list_store(r, e, "domains", t) < 0
               ? -1
               : 0;
}

static void h_node_metrics(req_t *r) { store_report(r, metrics_store_body); }

/* A text member of alarms[i]: a string of valid UTF-8, at most `max`
 * bytes (0: no bound but the body's), required or not. */
static int alarm_text(err_t *e, json_t *o, size_t i, const char *name, size_t max,
                      bool required, const char **out)
{
    json_t *v = json_object_get(o, name);
    *out = json_string_value(v);
    if (!v && !required)
        return 0;
    if (!*out || (max && strlen(*out) > max) || (required && !**out) ||
        !alarm_text_valid(*out, strlen(*out)))
        return max ? err_set(e, ERR_INPUT, "alarms[%zu].%s must be %sUTF-8 text of at most "
                                           "%zu bytes", i, name, required ? "non-empty " : "",
                             max)
                   : err_set(e, ERR_INPUT, "alarms[%zu].%s must be %sUTF-8 text", i, name,
                             required ? "non-empty " : "");
    return 0;
}

static int alarm_entry_store(req_t *r, err_t *e, size_t i, json_t *o, tally_t *t)
{
    if (!json_is_object(o))
        return err_set(e, ERR_INPUT, "alarms[%zu] must be an object", i);
    json_t *uid = json_object_get(o, "uid"), *at = json_object_get(o, "unix");
    alarm_t a = {.level = ALARM_LEVEL_SYSTEM, .line = -1};
    if (alarm_text(e, o, i, "ref", ALARM_TEXT_MAX, true, &a.node_ref) < 0 ||
        alarm_text(e, o, i, "class", ALARM_TEXT_MAX, false, &a.cls) < 0 ||
        alarm_text(e, o, i, "msg", 0, true, &a.msg) < 0)
        return -1;
    if (!json_is_integer(uid))
        return err_set(e, ERR_INPUT, "alarms[%zu].uid must be an integer", i);
    if (!json_is_integer(at) || json_integer_value(at) < 0)
        return err_set(e, ERR_INPUT, "alarms[%zu].unix must be an integer of at least 0", i);
    if (too_far_ahead(json_integer_value(at)))
        return err_set(e, ERR_INPUT,
                       "alarms[%zu].unix is more than %d seconds ahead of the API's clock", i,
                       REPORT_AHEAD_MAX_S);
    a.unix_time = json_integer_value(at);
    long long cid = node_container(r, e, json_integer_value(uid), NULL);
    if (cid <= 0) {
        t->skipped += cid == 0;
        return cid < 0 ? -1 : 0;
    }
    int rc = alarm_store_in(r->db, e, cid, &a);
    if (rc < 0 && e->kind == ERR_NOTFOUND) {
        /* Deleted since node_container looked (nothing was written): the
         * node cannot do better by sending it again, and the rest of the
         * batch must not be refused with it. */
        *e = (err_t){0};
        t->skipped++;
        return 0;
    }
    if (rc < 0)
        return -1;
    t->stored += rc;
    t->skipped += rc == 0;
    return 0;
}

static int alarms_store_body(req_t *r, err_t *e, tally_t *t)
{
    json_t *list = json_object_get(r->json, "alarms");
    if (!json_is_array(list))
        return err_set(e, ERR_INPUT, "'alarms' (a list) is required");
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o)
    {
        if (alarm_entry_store(r, e, i, o, t) < 0)
            return -1;
    }
    return 0;
}

static void h_node_alarms_post(req_t *r) { store_report(r, alarms_store_body); }

/* ---- GET <node_prefix>/alarms?after=ID: the alarms the node delivers ---- */

#define NODE_ALARMS_MAX 100

static json_t *node_alarm_json(db_res_t *res, int i)
{
    return json_pack("{s:I,s:I,s:I,s:s,s:s,s:s,s:I,s:s}", "id",
                     (json_int_t)db_get_int(res, i, 0), "uid",
                     (json_int_t)container_uid(db_get_int(res, i, 1)), "level",
                     (json_int_t)db_get_int(res, i, 2), "class", db_get(res, i, 3), "vassal",
                     db_get(res, i, 4), "msg", db_get(res, i, 5), "unix",
                     (json_int_t)db_get_int(res, i, 6), "color", db_get(res, i, 7));
}

static void h_node_alarms_get(req_t *r)
{
    const char *s = req_arg(r, "after");
    long long after = 0;
    if (s && (!str_to_ll(s, &after) || after < 0))
        return reply_bad_request(r, "'after' must be an alarm id (an integer, 0 or more)");
    err_t e = {0};
    long long seq = db_scalar_int(r->db, &e, 0, "SELECT alarm_seq FROM servers WHERE id = $1",
                                  DB_ARGS(DB_INT(r->node_server_id)));
    json_t *list = seq < 0 ? NULL
                           : rows_json(r->db, &e, node_alarm_json,
                                       "SELECT a.id, a.container_id, a.level, a.class, "
                                       "a.vassal, a.msg, a.unix, a.color FROM alarms a "
                                       "JOIN containers c ON c.id = a.container_id "
                                       "WHERE c.server_id = $1 AND a.node_ref IS NULL AND "
                                       "a.id > $2 ORDER BY a.id LIMIT $3",
                                       DB_ARGS(DB_INT(r->node_server_id), DB_INT(after),
                                               DB_INT(NODE_ALARMS_MAX)));
    if (!list)
        return reply_internal(r, &e);
    reply(r, 200, json_pack("{s:o,s:I}", "alarms", list, "alarm_seq", (json_int_t)seq));
}

const route_t node_routes[] = {
    {"GET", "state", h_node_state, AUTH_NODE, CACHE_NONE, WAKE_NONE},
    {"POST", "status", h_node_status, AUTH_NODE, CACHE_NONE, WAKE_NONE},
    {"POST", "metrics", h_node_metrics, AUTH_NODE, CACHE_NONE, WAKE_NONE},
    {"POST", "alarms", h_node_alarms_post, AUTH_NODE, CACHE_NONE, WAKE_NONE},
    {"GET", "alarms", h_node_alarms_get, AUTH_NODE, CACHE_NONE, WAKE_NONE},
    {NULL, NULL, NULL, 0, 0, 0},
};
