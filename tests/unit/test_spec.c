/* Unit tests for the node's spec module (src/node/spec.c), fed with exactly
 * what the API's node_channel.c emits for a database holding one of every
 * object the nodes' channel carries.  The one-owner check of the API->node
 * contract: a field the API starts sending without the node knowing it is
 * an unknown field here, and fails test_every_field_lands. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/api/node_channel.h"
#include "../../src/node/spec.h"
#include "db_fixture.h"

static int setup(void **state) { return db_fixture_setup(state); }
static int teardown(void **state) { return db_fixture_teardown(state); }

static void exec_ok(db_t *db, const char *sql)
{
    err_t e = {0};
    if (db_exec(db, &e, sql, DB_NOARGS) < 0)
        fail_msg("%s: %s", sql, e.msg);
}

/* One server with a startable container on a distro (1, uid 30001), one
 * on a custom distro held by the first (2, uid 30002), one without keys
 * (3: in all_containers only), and one of everything around them. */
static void fill(db_t *db)
{
    static const char *const sql[] = {
        "INSERT INTO customers (id, username, password_hash, uuid, rsa_key, rsa_pubkey, created) "
        "VALUES (1, 'kratos', 'x', 'cust-1', 'PRIV-1', 'PUB-1', 0)",
        "INSERT INTO servers (id, name, address, memory, storage, etc_hosts, etc_resolv_conf, "
        "portmap_generation, purge_deleted_before) VALUES (1, 'node1', '10.0.0.1', 4096, "
        "100000, 'HOSTS', 'RESOLV', 3, 1234)",
        "INSERT INTO servers (id, name, address, memory, storage) "
        "VALUES (2, 'node2', '10.0.0.2', 4096, 100000)",
        "INSERT INTO distros (id, name, path) VALUES (1, 'bookworm', '/srv/distros/bookworm')",
        "INSERT INTO containers (id, customer_id, server_id, name, memory, storage, distro_id, "
        "uuid, secret_uuid, quota_threshold, jid, jid_secret, jid_destinations, pushover_user, "
        "pushover_token, pushover_sound, pushbullet_token, slack_webhook, alarm_freq, nofollow, "
        "custom_distros_storage, max_alarms, generation, ssh_generation, created) VALUES "
        "(1, 1, 1, 'web', 512, 2048, 1, 'uuid-1', 'secret-1', 80, 'j@x', 'js', 'd@x', 'pu', "
        "'pt', 'ps', 'pb', 'https://slack', 30, 1, 1, 50, 7, 4, 0)",
        "INSERT INTO custom_distros (id, container_id, name, path, uuid) "
        "VALUES (1, 1, 'mine', 'mine', 'cd-1')",
        "INSERT INTO containers (id, customer_id, server_id, name, memory, storage, "
        "custom_distro_id, uuid, secret_uuid, created) "
        "VALUES (2, 1, 1, 'db', 256, 1024, 1, 'uuid-2', 'secret-2', 0)",
        "INSERT INTO containers (id, customer_id, server_id, name, memory, storage, distro_id, "
        "uuid, secret_uuid, created) VALUES (3, 1, 1, 'idle', 128, 512, 1, 'uuid-3', 's3', 0)",
        "INSERT INTO ssh_keys (container_id, pos, key) VALUES (1, 0, 'ssh-ed25519 AAAA one'), "
        "(1, 1, 'ssh-ed25519 AAAA two'), (2, 0, 'ssh-ed25519 AAAA three')",
        /* 4 and 5 live on node2: 4 is linked both ways with 1, 5 one way. */
        "INSERT INTO containers (id, customer_id, server_id, name, memory, storage, distro_id, "
        "uuid, secret_uuid, created) VALUES (4, 1, 2, 'far', 128, 512, 1, 'uuid-4', 's4', 0), "
        "(5, 1, 2, 'far2', 128, 512, 1, 'uuid-5', 's5', 0)",
        "INSERT INTO links (container_id, to_id) VALUES (1, 2), (2, 1), (1, 3), (1, 4), (4, 1), "
        "(5, 1)",
        "INSERT INTO tags (id, customer_id, name) VALUES (1, 1, 'prod')",
        "INSERT INTO container_tags (container_id, tag_id) VALUES (1, 1)",
        "INSERT INTO loopboxes (id, container_id, filename, mountpoint, ro) "
        "VALUES (1, 1, 'disk.img', 'mnt/disk', 1)",
        "INSERT INTO alarms (id, container_id, level, unix, msg) VALUES (1, 1, 1, 0, 'hi'), "
        "(2, 2, 1, 0, 'ho')",
        "INSERT INTO alarms (id, container_id, level, unix, msg, node_ref) "
        "VALUES (3, 1, 0, 0, 'oom', 'boot-1')",
        /* What alarm_store_in keeps for 1 and 2 (raised with the API). */
        "UPDATE servers SET alarm_seq = 2 WHERE id = 1",
        "INSERT INTO portmappings (id, server_id, container_id, proto, public_port, "
        "private_port) VALUES (1, 1, 1, 'tcp', 8080, 80)",
        "INSERT INTO legions (id, name, address, key, quorum) "
        "VALUES (1, 'leg', '10.0.0.100', 'lkey', 2)",
        "INSERT INTO legion_nodes (legion_id, server_id) VALUES (1, 1), (1, 2)",
        "INSERT INTO domains (id, customer_id, name, uuid, created) "
        "VALUES (1, 1, 'example.com', 'dom-1', 0)",
        /* zeus has a container only on node2, a member of node1's legion:
         * its cluster-domain subscriptions reach node1's router, which needs
         * its key.  hades is only on node3, in no legion with node1. */
        "INSERT INTO customers (id, username, password_hash, uuid, rsa_key, rsa_pubkey, created) "
        "VALUES (2, 'zeus', 'x', 'cust-2', 'PRIV-2', 'PUB-2', 0), "
        "(3, 'hades', 'x', 'cust-3', 'PRIV-3', 'PUB-3', 0)",
        "INSERT INTO servers (id, name, address, memory, storage) "
        "VALUES (3, 'node3', '10.0.0.3', 4096, 100000)",
        "INSERT INTO containers (id, customer_id, server_id, name, memory, storage, distro_id, "
        "uuid, secret_uuid, created) VALUES (6, 2, 2, 'olympus', 128, 512, 1, 'uuid-6', 's6', "
        "0), (7, 3, 3, 'under', 128, 512, 1, 'uuid-7', 's7', 0)",
        "INSERT INTO domains (id, customer_id, name, uuid, created) "
        "VALUES (2, 2, 'zeus.org', 'dom-2', 0), (3, 3, 'hades.org', 'dom-3', 0)",
    };
    for (size_t i = 0; i < sizeof sql / sizeof *sql; i++)
        exec_ok(db, sql[i]);
}

/* What GET /node/state answers for server 1. */
static json_t *channel_state(db_t *db)
{
    err_t e = {0};
    json_t *j = node_state_json(db, &e, 1);
    if (!j)
        fail_msg("node_state_json: %s", e.msg);
    json_object_set_new(j, "version", json_string("v1"));
    return j;
}

/* The fixture's database filled, and what it sends to server 1. */
static json_t *filled_state(void **state)
{
    db_fixture_t *f = *state;
    fill(f->db);
    return channel_state(f->db);
}

static spec_state_t *parse_ok(json_t *j)
{
    err_t e = {0};
    spec_state_t *s = spec_parse(j, &e);
    if (!s)
        fail_msg("spec_parse: %s", e.msg);
    return s;
}

static void check_server(const spec_state_t *s)
{
    assert_string_equal(s->version, "v1");
    assert_string_equal(s->server.name, "node1");
    assert_string_equal(s->server.address, "10.0.0.1");
    assert_string_equal(s->server.etc_hosts, "HOSTS");
    assert_string_equal(s->server.etc_resolv_conf, "RESOLV");
    assert_int_equal(s->server.portmap_generation, 3);
    assert_int_equal(s->server.purge_deleted_before, 1234);
    assert_int_equal(s->server.alarm_seq, 2); /* 1 and 2 raised with the API; 3 a node's */
    assert_true(s->server.has_all_containers);
    assert_int_equal(s->server.n_all_containers, 3);
    assert_int_equal(s->server.all_containers[2].uid, 30003);
    assert_string_equal(s->server.all_containers[2].uuid, "uuid-3");
    assert_string_equal(s->server.all_containers[2].customer, "cust-1");
}

static void check_first(const spec_container_t *c)
{
    assert_null(c->error);
    assert_int_equal(c->uid, 30001);
    assert_int_equal(c->id, 1);
    assert_string_equal(c->name, "web");
    assert_non_null(c->hostname);
    assert_non_null(c->ip);
    assert_true(c->ip[0] != '\0');
    assert_int_equal(c->memory, 512);
    assert_int_equal(c->storage, 2048);
    assert_string_equal(c->uuid, "uuid-1");
    assert_string_equal(c->secret_uuid, "secret-1");
    assert_int_equal(c->quota_threshold, 80);
    assert_true(c->nofollow);
    assert_true(c->custom_distros_storage);
    assert_int_equal(c->generation, 7);
    assert_int_equal(c->ssh_generation, 4);
    assert_string_equal(c->rootfs.kind, "distro");
    assert_int_equal(c->rootfs.id, 1);
    assert_string_equal(c->rootfs.path, "/srv/distros/bookworm");
    assert_int_equal(c->n_ssh_keys, 2);
    assert_string_equal(c->ssh_keys[1], "ssh-ed25519 AAAA two");
    assert_int_equal(c->n_links, 2); /* 1 -> 3 is not agreed both ways, nor 5 -> 1 */
    assert_int_equal(c->links[0], 30002);
    assert_int_equal(c->links[1], 30004); /* on node2: also in link_peers */
    assert_int_equal(c->n_loopboxes, 1);
    assert_int_equal(c->loopboxes[0].id, 1);
    assert_string_equal(c->loopboxes[0].filename, "disk.img");
    assert_string_equal(c->loopboxes[0].mountpoint, "mnt/disk");
    assert_true(c->loopboxes[0].ro);
    const spec_alarms_t *a = &c->alarms;
    assert_int_equal(a->freq, 30);
    assert_int_equal(a->max_alarms, 50);
    assert_string_equal(a->jid, "j@x");
    assert_string_equal(a->jid_secret, "js");
    assert_string_equal(a->jid_destinations, "d@x");
    assert_string_equal(a->pushover_user, "pu");
    assert_string_equal(a->pushover_token, "pt");
    assert_string_equal(a->pushover_sound, "ps");
    assert_string_equal(a->pushbullet_token, "pb");
    assert_string_equal(a->slack_webhook, "https://slack");
    assert_string_equal(c->customer.uuid, "cust-1");
    assert_string_equal(c->customer.rsa_key, "PRIV-1");
    assert_string_equal(c->customer.rsa_pubkey, "PUB-1");
}

static void check_second(const spec_container_t *c)
{
    assert_null(c->error);
    assert_int_equal(c->uid, 30002);
    assert_string_equal(c->rootfs.kind, "custom");
    assert_int_equal(c->rootfs.id, 1);
    assert_int_equal(c->rootfs.holder_uid, 30001);
    assert_string_equal(c->rootfs.holder_customer, "cust-1");
    assert_string_equal(c->rootfs.path, "mine");
    assert_int_equal(c->n_links, 1);
    assert_int_equal(c->links[0], 30001);
    assert_int_equal(c->n_loopboxes, 0);
}

static void check_lists(const spec_state_t *s)
{
    assert_int_equal(s->n_domains, 2);
    assert_string_equal(s->domains[0].name, "example.com");
    assert_string_equal(s->domains[0].customer, "cust-1");
    assert_string_equal(s->domains[0].pubkey, "PUB-1");
    /* A legion member's customer's, not hades.org (node3 is in no legion). */
    assert_string_equal(s->domains[1].name, "zeus.org");
    assert_string_equal(s->domains[1].customer, "cust-2");
    assert_string_equal(s->domains[1].pubkey, "PUB-2");
    assert_int_equal(s->n_portmappings, 1);
    const spec_portmapping_t *p = &s->portmappings[0];
    assert_int_equal(p->id, 1);
    assert_string_equal(p->proto, "tcp");
    assert_int_equal(p->public_port, 8080);
    assert_int_equal(p->container, 30001);
    assert_non_null(p->container_ip);
    assert_int_equal(p->private_port, 80);
    /* The remote end of 1 <-> 4 (node2's address); not 5, one-sided. */
    assert_int_equal(s->n_link_peers, 1);
    assert_int_equal(s->link_peers[0].uid, 30004);
    assert_string_equal(s->link_peers[0].ip, "10.0.0.6");
    assert_string_equal(s->link_peers[0].server, "10.0.0.2");
    assert_int_equal(s->n_legions, 1);
    const spec_legion_t *l = &s->legions[0];
    assert_int_equal(l->id, 1);
    assert_string_equal(l->name, "leg");
    assert_string_equal(l->address, "10.0.0.100");
    assert_string_equal(l->key, "lkey");
    assert_int_equal(l->quorum, 2);
    assert_int_equal(l->n_nodes, 2);
    assert_string_equal(l->nodes[1], "10.0.0.2");
}

static void test_every_field_lands(void **state)
{
    json_t *j = filled_state(state);
    spec_unknown_reset();
    spec_state_t *s = parse_ok(j);
    assert_ptr_equal(s->json, j);
    check_server(s);
    assert_int_equal(s->n_containers, 2); /* 3 has no key: not startable */
    check_first(&s->containers[0]);
    check_second(&s->containers[1]);
    check_lists(s);
    if (spec_unknown_count() != 0)
        fail_msg("node_channel.c sends a field spec.c does not know (see the log above)");
    if (spec_dropped_count() != 0)
        fail_msg("node_channel.c sends a field of a type spec.c does not read (see the log)");
    spec_free(s);
    json_decref(j);
}

/* The runtime's spec: the server's files, the customer's keys, the
 * custom distro in its holder's home, the home the node's own. */
static void test_runtime_spec(void **state)
{
    json_t *j = filled_state(state);
    spec_state_t *s = parse_ok(j);
    node_cfg_t cfg = {.containers_dir = "/srv/homes"};
    container_spec_t r;
    err_t e = {0};
    assert_int_equal(spec_runtime(&s->containers[1], &s->server, &cfg, &r, &e), 0);
    assert_int_equal(r.uid, 30002);
    assert_int_equal(r.memory_mb, 256);
    assert_string_equal(r.rootfs, "/srv/homes/30001/distros/mine");
    assert_int_equal(r.rootfs_holder, 30001); /* booted from the holder's home */
    assert_string_equal(r.rootfs_custom, "mine");
    assert_false(r.nofollow);
    assert_string_equal(r.home, "/srv/homes/30002");
    assert_string_equal(r.etc_hosts, "HOSTS");
    assert_string_equal(r.etc_resolv_conf, "RESOLV");
    assert_string_equal(r.rsa_key, "PRIV-1");
    assert_string_equal(r.rsa_pubkey, "PUB-1");
    assert_int_equal(r.n_ssh_keys, 1);
    container_spec_free(&r);
    spec_free(s);
    json_decref(j);
}

/* nofollow reaches the runtime; a plain distro has no holder. */
static void test_runtime_nofollow_and_plain_distro(void **state)
{
    json_t *j = filled_state(state);
    spec_state_t *s = parse_ok(j);
    node_cfg_t cfg = {.containers_dir = "/srv/homes"};
    container_spec_t r;
    err_t e = {0};
    assert_int_equal(spec_runtime(&s->containers[0], &s->server, &cfg, &r, &e), 0);
    assert_true(r.nofollow);
    assert_int_equal(r.rootfs_holder, 0);
    assert_null(r.rootfs_custom);
    assert_string_equal(r.rootfs, "/srv/distros/bookworm");
    container_spec_free(&r);
    spec_free(s);
    json_decref(j);
}

/* A custom distro path that climbs out is refused with a clear error. */
static void test_runtime_custom_distro_refusals(void **state)
{
    json_t *j = filled_state(state);
    spec_state_t *s = parse_ok(j);
    node_cfg_t cfg = {.containers_dir = "/srv/homes"};
    container_spec_t r;
    err_t e = {0};
    spec_rootfs_t *rf = &s->containers[1].rootfs;
    free(rf->path);
    rf->path = strdup("../30002");
    assert_int_equal(spec_runtime(&s->containers[1], &s->server, &cfg, &r, &e), -1);
    if (!strstr(e.msg, "bad custom distro"))
        fail_msg("'%s'", e.msg);
    spec_free(s);
    json_decref(j);
}

/* A wrong type: a server field is dropped (the rest used), the one
 * container (with its error, the others used) for a container field. */
static void test_wrong_type_is_a_clear_error(void **state)
{
    json_t *j = filled_state(state);
    json_t *server = json_object_get(j, "server");
    json_object_set_new(server, "purge_deleted_before", json_string("soon"));
    err_t e = {0};
    spec_unknown_reset();
    spec_state_t *s = parse_ok(j);
    assert_int_equal(s->server.purge_deleted_before, 0); /* purge nothing */
    assert_string_equal(s->server.etc_hosts, "HOSTS");
    assert_true(s->server.has_all_containers);
    assert_int_equal(spec_dropped_count(), 1);
    spec_free(s);
    json_object_set_new(server, "purge_deleted_before", json_integer(0));

    /* all_containers whole or not at all: a uid left out would retire a home. */
    json_t *all = json_object_get(server, "all_containers");
    json_t *saved = json_deep_copy(all);
    json_object_set_new(json_array_get(all, 0), "customer", json_integer(7));
    s = parse_ok(j);
    assert_false(s->server.has_all_containers);
    assert_int_equal(s->server.n_all_containers, 0);
    assert_null(s->server.all_containers);
    spec_free(s);
    json_object_set_new(server, "all_containers", saved);

    json_t *first = json_array_get(json_object_get(j, "containers"), 0);
    json_object_set_new(first, "memory", json_string("big"));
    json_object_set_new(json_object_get(first, "rootfs"), "holder_uid", json_true());
    s = parse_ok(j);
    assert_string_equal(s->containers[0].error, "spec: memory must be an integer");
    assert_int_equal(s->containers[0].uid, 30001); /* still known: its status says why */
    assert_null(s->containers[1].error);
    node_cfg_t cfg = {.containers_dir = "/srv/homes"};
    container_spec_t r;
    assert_int_equal(spec_runtime(&s->containers[0], &s->server, &cfg, &r, &e), -1);
    assert_string_equal(e.msg, "spec: memory must be an integer");
    spec_free(s);

    json_object_set_new(j, "version", json_integer(3));
    assert_null(spec_parse(j, &e));
    assert_string_equal(e.msg, "node state: version (a string) is required");
    json_object_del(j, "version");
    assert_null(spec_parse(j, &e));
    assert_string_equal(e.msg, "node state: version (a string) is required");
    json_object_set_new(j, "version", json_string("v"));
    json_object_set_new(j, "containers", json_object());
    assert_null(spec_parse(j, &e));
    assert_string_equal(e.msg, "node state: containers (a list of objects) is required");
    spec_unknown_reset();
    json_decref(j);
}

/* A wrongly typed element of domains[] (portmappings[], legions[]) is
 * dropped, logged once per message, and the rest of the state applies. */
static void test_a_bad_domain_is_dropped(void **state)
{
    json_t *j = filled_state(state);
    json_t *domains = json_object_get(j, "domains");
    json_array_insert_new(domains, 0, json_pack("{s:i, s:s}", "name", 5, "customer", "c"));
    json_array_append_new(domains, json_string("not-an-object"));
    json_object_set_new(j, "legions", json_string("none"));
    spec_unknown_reset();
    for (int poll = 0; poll < 3; poll++) {
        spec_state_t *s = parse_ok(j);
        assert_int_equal(s->n_domains, 2);
        assert_string_equal(s->domains[0].name, "example.com");
        assert_string_equal(s->domains[0].customer, "cust-1");
        assert_int_equal(s->n_legions, 0);
        assert_int_equal(s->n_portmappings, 1);
        assert_int_equal(s->n_containers, 2);
        assert_null(s->containers[0].error);
        assert_string_equal(s->version, json_string_value(json_object_get(j, "version")));
        spec_free(s);
    }
    /* domains[].name, domains (not objects), legions: once each, not per poll */
    assert_int_equal(spec_dropped_count(), 3);
    assert_int_equal(spec_unknown_count(), 0);
    spec_unknown_reset();
    json_decref(j);
}

/* An unknown field is logged once per name, not once per poll. */
static void test_unknown_fields_are_counted_once(void **state)
{
    json_t *j = filled_state(state);
    json_object_set_new(json_object_get(j, "server"), "future", json_true());
    json_t *list = json_object_get(j, "containers");
    for (size_t i = 0; i < json_array_size(list); i++)
        json_object_set_new(json_array_get(list, i), "ipv6", json_string("fd00::1"));
    spec_unknown_reset();
    for (int poll = 0; poll < 3; poll++) {
        spec_state_t *s = parse_ok(j);
        assert_null(s->containers[0].error);
        spec_free(s);
    }
    assert_int_equal(spec_unknown_count(), 2); /* server.future, containers[].ipv6 */
    spec_unknown_reset();
    json_decref(j);
}

/* The debug CLI's file: a container object plus its own home and files. */
static void test_cli_spec(void **state)
{
    (void)state;
    json_error_t je;
    json_t *j = json_loads("{\"uid\": 30009, \"hostname\": \"box\", \"memory\": 192, "
                           "\"rootfs\": \"host\", \"ssh_keys\": [\"k1\"], \"home\": \"/h\", "
                           "\"rsa_key\": \"K\", \"etc_hosts\": \"\", \"generation\": 2}",
                           0, &je);
    assert_non_null(j);
    node_cfg_t cfg = {.containers_dir = "/srv/homes"};
    container_spec_t r;
    err_t e = {0};
    assert_int_equal(spec_cli_parse(j, &cfg, &r, &e), 0);
    assert_string_equal(r.rootfs, "/");
    assert_string_equal(r.home, "/h");
    assert_string_equal(r.rsa_key, "K");
    assert_null(r.rsa_pubkey);
    assert_string_equal(r.etc_hosts, "");
    assert_int_equal(r.generation, 2);
    container_spec_free(&r);
    json_object_set_new(j, "ssh_keys", json_string("k1"));
    assert_int_equal(spec_cli_parse(j, &cfg, &r, &e), -1);
    assert_string_equal(e.msg, "spec: ssh_keys must be a list of strings");
    json_object_set_new(j, "ssh_keys", json_array());
    json_object_set_new(j, "uid", json_integer(12));
    assert_int_equal(spec_cli_parse(j, &cfg, &r, &e), -1);
    assert_string_equal(e.msg, "spec: uid 12 is not a container uid (> 30000)");
    json_decref(j);
}

/* Two containers with one ip: the later one is refused (its status says
 * why) and loses the ip, so its /32 cannot take the first's traffic. */
static void test_duplicate_ip_is_refused(void **state)
{
    json_t *j = filled_state(state);
    json_t *list = json_object_get(j, "containers");
    const char *ip = json_string_value(json_object_get(json_array_get(list, 0), "ip"));
    assert_non_null(ip);
    json_object_set_new(json_array_get(list, 1), "ip", json_string(ip));
    spec_state_t *s = parse_ok(j);
    assert_int_equal(s->n_containers, 2);
    assert_null(s->containers[0].error);
    assert_string_equal(s->containers[0].ip, ip);
    assert_non_null(s->containers[1].error);
    char want[128];
    snprintf(want, sizeof want, "spec: ip %s is container 30001's already", ip);
    if (!strstr(s->containers[1].error, want))
        fail_msg("'%s' does not say '%s'", s->containers[1].error, want);
    assert_null(s->containers[1].ip);
    node_cfg_t cfg = {.containers_dir = "/srv/homes"};
    container_spec_t r;
    err_t e = {0};
    assert_int_equal(spec_runtime(&s->containers[1], &s->server, &cfg, &r, &e), -1);
    assert_non_null(strstr(e.msg, want));
    spec_free(s);
    json_decref(j);
}

/* route_localnet on the host end only for a server on 127.x (make run). */
static void test_localnet_only_for_a_loopback_server(void **state)
{
    json_t *j = filled_state(state);
    spec_state_t *s = parse_ok(j);
    node_cfg_t cfg = {.containers_dir = "/srv/homes"};
    cfg.net = (net_cfg_t){.on = true, .network_text = "10.0.0.0/8", .gateway_text = "10.0.0.1",
                          .prefix = "imp"};
    err_t e = {0};
    assert_int_equal(net_cfg_parse(&cfg.net, &e), 0);
    const char *addrs[] = {"203.0.113.7", "127.0.0.2", NULL};
    const bool want[] = {false, true, false};
    for (size_t i = 0; i < 3; i++) {
        free(s->server.address);
        s->server.address = addrs[i] ? strdup(addrs[i]) : NULL;
        container_spec_t r;
        if (spec_runtime(&s->containers[0], &s->server, &cfg, &r, &e) < 0)
            fail_msg("spec_runtime: %s", e.msg);
        assert_true(r.net.on);
        assert_int_equal(r.net.localnet, want[i]);
        container_spec_free(&r);
    }
    spec_free(s);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_field_lands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_spec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_nofollow_and_plain_distro, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_custom_distro_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_type_is_a_clear_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_fields_are_counted_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_bad_domain_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_ip_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_localnet_only_for_a_loopback_server, setup,
                                        teardown),
        cmocka_unit_test(test_cli_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
