/* spec.h - the API->node contract: the node state of the nodes' channel
 * (GET <node_prefix>/state, built by src/api/node_channel.c, described in
 * docs/NODE-CHANNEL.md) as typed C structs.  This is the one place the node
 * reads that JSON: the channel parses every answer here, the daemon and the
 * runtime only see the structs (the runtime's container_spec_t is filled
 * from a spec_container_t by spec_runtime).
 *
 * Member names are the JSON names.  An absent (or null) field is 0 / NULL /
 * an empty list.  A field of the wrong type is an error naming it.  Only
 * what the node cannot work without refuses the whole state: not an object,
 * a version that is not a string, containers that are not a list.  For one
 * container the container keeps its `error` and the others are used; a
 * wrongly typed element of domains[], portmappings[] or legions[], or field
 * of the server, is dropped (a log_warn once per message for the life of
 * the process) and the rest applies; server.all_containers is used whole or
 * not at all (then no home is retired).  A container whose ip an earlier
 * one holds keeps an error and no ip (a /32 each).  A field this
 * node does not know is logged once per name for the life of the process
 * (log_warn, on the daemon's stderr) and otherwise ignored: an API newer
 * than the node.  tests/unit/test_spec.c feeds this with exactly what
 * node_channel.c emits and fails on any unknown field. */
#ifndef IMP_NODE_SPEC_H
#define IMP_NODE_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "../common/err.h"
#include "../runtime/container.h"

/* server.all_containers[]: every container of the server, startable or not. */
typedef struct {
    long long uid;
    char *uuid;
    char *customer; /* the customer's uuid */
} spec_known_t;

typedef struct {
    char *name, *address;
    char *etc_hosts, *etc_resolv_conf; /* "" or absent: the runtime's defaults */
    long long portmap_generation;
    long long purge_deleted_before; /* unix time; 0: purge nothing */
    /* The newest id of the alarms raised with the API for this server's
     * containers (0: none): it moves when one is raised; the node then
     * asks GET alarms?after=<last delivered> (docs/NODE-CHANNEL.md). */
    long long alarm_seq;
    spec_known_t *all_containers;
    size_t n_all_containers;
    bool has_all_containers; /* false: an older API; no home is retired */
} spec_server_t;

/* "rootfs": {"kind": "distro", "id", "path"} or {"kind": "custom", "id",
 * "holder_uid", "holder_customer", "path"}; the debug CLI may also give a
 * plain path or "host" (kind NULL, path set). */
typedef struct {
    char *kind;
    long long id;
    char *path;
    long long holder_uid;
    char *holder_customer;
} spec_rootfs_t;

typedef struct {
    long long id;
    char *filename, *mountpoint;
    bool ro;
} spec_loopbox_t;

typedef struct {
    long long freq, max_alarms;
    char *jid, *jid_secret, *jid_destinations;
    char *pushover_user, *pushover_token, *pushover_sound;
    char *pushbullet_token, *slack_webhook;
} spec_alarms_t;

typedef struct {
    char *uuid;
    char *rsa_key, *rsa_pubkey; /* PEM */
} spec_customer_t;

/* containers[]: one startable container. */
typedef struct {
    long long uid, id;
    char *name, *hostname, *ip;
    long long memory, storage; /* MB */
    char *uuid, *secret_uuid;
    long long quota_threshold;
    bool nofollow, custom_distros_storage;
    long long generation, ssh_generation;
    spec_rootfs_t rootfs;
    char **ssh_keys;
    size_t n_ssh_keys;
    long long *links; /* uids of the containers linked both ways */
    size_t n_links;
    spec_loopbox_t *loopboxes;
    size_t n_loopboxes;
    spec_alarms_t alarms;
    spec_customer_t customer;
    char *error; /* NULL, or why this object cannot be used (the rest is partial) */
} spec_container_t;

/* domains[]: what the router accepts subscriptions for. */
typedef struct {
    char *name;
    char *customer; /* uuid */
    char *pubkey;   /* PEM */
} spec_domain_t;

typedef struct {
    long long id;
    char *proto; /* "tcp" | "udp" */
    long long public_port;
    long long container; /* uid */
    char *container_ip;
    long long private_port;
} spec_portmapping_t;

/* link_peers[]: a container on ANOTHER server that a container of this one
 * is linked with both ways (the overlay's remote ends, issue 15 stage D). */
typedef struct {
    char *ip;     /* its 10.x address */
    char *server; /* its server's address */
    long long uid;
} spec_link_peer_t;

typedef struct {
    long long id; /* the API's: the legion's UDP port is legion_port + id */
    char *name, *address, *key;
    long long quorum;
    char **nodes; /* the servers' addresses */
    size_t n_nodes;
} spec_legion_t;

typedef struct {
    char *version;
    spec_server_t server;
    spec_container_t *containers;
    size_t n_containers;
    spec_domain_t *domains;
    size_t n_domains;
    spec_portmapping_t *portmappings;
    size_t n_portmappings;
    spec_legion_t *legions;
    size_t n_legions;
    spec_link_peer_t *link_peers;
    size_t n_link_peers;
    json_t *json; /* the object parsed (a reference): saved as is for the next daemon */
} spec_state_t;

/* The whole state (takes its own reference to j); NULL with e set when it
 * is not a node state: not an object, no version string, no containers
 * list (or out of memory).  Other wrongly typed parts are dropped. */
spec_state_t *spec_parse(json_t *j, err_t *e);
void spec_free(spec_state_t *s);

/* The runtime's spec of container c: the server's etc files, the
 * customer's keys, the distro resolved (a custom distro is
 * <containers_dir>/<holder_uid>/distros/<path>), the home always
 * <containers_dir>/<uid>.  -1 with e set ("spec: ..."). */
int spec_runtime(const spec_container_t *c, const spec_server_t *server, const node_cfg_t *cfg,
                 container_spec_t *out, err_t *e);

/* The debug CLI's spec file (docs/NODE.md): a container object plus the
 * optional "home", "rsa_key", "rsa_pubkey", "etc_hosts", "etc_resolv_conf";
 * "rootfs" may be a path or "host". */
int spec_cli_parse(const json_t *j, const node_cfg_t *cfg, container_spec_t *out, err_t *e);

/* How many distinct unknown field names were logged (the unit test's
 * one-owner check), and a reset for tests. */
size_t spec_unknown_count(void);
size_t spec_dropped_count(void); /* wrongly typed parts dropped (messages logged) */
void spec_unknown_reset(void);   /* forgets both: unknown fields and dropped parts */

#endif
