/* Unit tests for the overlay (src/node/overlay.c): the MAC derived from an
 * underlay address, the settings' rules (agent_settings rows and the config
 * file: wireguard refused, the MTU handed to the containers), the peers a
 * state asks for (bad ones left out), the reconcile diff, the nft text; and,
 * as root, the real device in a network namespace of this test process's
 * own (unshare: nothing on the machine's namespace): created, adopted,
 * reconciled to each state, replaced when a setting changes, a foreign
 * device of the same name left alone, removed by stop-all's call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/common/log.h"
#include "../../src/node/agent.h"
#include "../../src/node/netpolicy.h"
#include "../../src/node/overlay.h"
#include "state_fixture.h"

static uint32_t ip4(const char *s)
{
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, s, &a), 1);
    return a.s_addr;
}

static net_cfg_t net_cfg(void)
{
    net_cfg_t n = {.on = true, .network_text = "10.0.0.0/8", .gateway_text = "10.0.0.1",
                   .prefix = "imp"};
    err_t e;
    err_clear(&e);
    assert_int_equal(net_cfg_parse(&n, &e), 0);
    return n;
}

static const overlay_cfg_t vx = {.mode = "vxlan", .dev = "imp-t-vx", .vni = 4242, .port = 4789,
                                 .mtu = 1450};

/* ---- MACs ------------------------------------------------------------------------- */

static void mac_is_the_address(void **st)
{
    (void)st;
    uint8_t mac[6], want[6] = {0x02, 0xcb, 0x00, 0x71, 0x02, 0x00};
    overlay_mac(ip4("203.0.113.2"), mac);
    assert_memory_equal(mac, want, 6);
    overlay_mac(ip4("10.1.2.3"), mac);
    uint8_t want2[6] = {0x02, 0x0a, 0x01, 0x02, 0x03, 0x00};
    assert_memory_equal(mac, want2, 6);
    assert_int_equal(ov_mac48(want), 0x02cb00710200ULL);
    uint8_t round[6];
    ov_mac_bytes(0x02cb00710200ULL, round);
    assert_memory_equal(round, want, 6);
}

/* ---- settings -------------------------------------------------------------------- */

static void set_fails(agent_cfg_t *c, const char *key, const char *value, const char *msg)
{
    err_t e;
    err_clear(&e);
    if (settings_set(agent_settings, c, key, value, &e) == 0)
        fail_msg("%s = %s was accepted", key, value);
    if (!strstr(e.msg, msg))
        fail_msg("%s = %s: '%s' does not say '%s'", key, value, e.msg, msg);
}

static void set_ok(agent_cfg_t *c, const char *key, const char *value)
{
    err_t e;
    err_clear(&e);
    if (settings_set(agent_settings, c, key, value, &e) < 0)
        fail_msg("%s = %s: %s", key, value, e.msg);
}

static void settings_rows(void **st)
{
    (void)st;
    agent_cfg_t c;
    memset(&c, 0, sizeof c);
    err_t e;
    err_clear(&e);
    assert_int_equal(settings_defaults(agent_settings, &c, &e), 0);
    assert_string_equal(c.overlay.mode, "off");
    assert_false(overlay_on(&c.overlay));
    assert_string_equal(c.overlay.dev, "vx-imperium");
    assert_int_equal(c.overlay.vni, 4242);
    assert_int_equal(c.overlay.port, 4789);
    assert_int_equal(c.overlay.mtu, 1450);
    assert_null(c.overlay.local);

    set_fails(&c, "overlay", "wireguard", "not available yet: see docs/NETWORK.md");
    set_fails(&c, "overlay", "gre", "overlay must be off or vxlan, not 'gre'");
    set_ok(&c, "overlay", "vxlan");
    assert_true(overlay_on(&c.overlay));
    set_fails(&c, "overlay_dev", "imperium-overlay", "overlay_dev must be an interface name");
    set_fails(&c, "overlay_dev", "a/b", "overlay_dev must be");
    set_fails(&c, "overlay_dev", "a b", "overlay_dev must be");
    set_fails(&c, "overlay_dev", "..", "overlay_dev must be");
    set_fails(&c, "overlay_dev", "", "overlay_dev must be");
    set_ok(&c, "overlay_dev", "vx-imperium0123"); /* 15: the most IFNAMSIZ holds */
    set_fails(&c, "vxlan_id", "0", "vxlan_id");
    set_fails(&c, "vxlan_id", "16777216", "vxlan_id");
    set_ok(&c, "vxlan_id", "16777215");
    set_fails(&c, "vxlan_port", "65536", "vxlan_port");
    set_fails(&c, "overlay_mtu", "500", "overlay_mtu");
    set_fails(&c, "overlay_local", "server-1", "overlay_local must be an IPv4 address");
    set_fails(&c, "overlay_local", "0.0.0.0", "overlay_local must be this server's");
    set_ok(&c, "overlay_local", "");
    set_ok(&c, "overlay_local", "192.0.2.7");
}

static char conf_path[64];

static int load(agent_cfg_t *c, const char *extra, err_t *e)
{
    snprintf(conf_path, sizeof conf_path, "/tmp/imp-overlay-XXXXXX");
    int fd = mkstemp(conf_path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "api_url = http://127.0.0.1:1\nserver_name = s\nsecret = x\n"
            "state_dir = /tmp/imp-overlay-state\ncontainers_dir = /tmp/imp-overlay-homes\n%s",
            extra);
    fclose(f);
    err_clear(e);
    int rc = agent_cfg_load(c, conf_path, e);
    unlink(conf_path);
    return rc;
}

static void config_file_rules(void **st)
{
    (void)st;
    agent_cfg_t c;
    err_t e;
    /* The overlay off: the containers keep the kernel's MTU. */
    assert_int_equal(load(&c, "", &e), 0);
    assert_int_equal(c.node.net.mtu, 0);
    agent_cfg_free(&c);
    /* On: uwsgi0 gets the overlay's MTU (underlay minus 50). */
    assert_int_equal(load(&c, "overlay = vxlan\n", &e), 0);
    assert_int_equal(c.node.net.mtu, 1450);
    agent_cfg_free(&c);
    assert_int_equal(load(&c, "overlay = vxlan\noverlay_mtu = 8950\n", &e), 0);
    assert_int_equal(c.node.net.mtu, 8950);
    agent_cfg_free(&c);
    assert_int_equal(load(&c, "overlay = vxlan\nnetwork = off\n", &e), -1);
    assert_non_null(strstr(e.msg, "overlay = vxlan needs network = on"));
    assert_int_equal(load(&c, "overlay = wireguard\n", &e), -1);
    assert_non_null(strstr(e.msg, "not available yet: see docs/NETWORK.md"));
}

/* ---- the desired entries and the diff --------------------------------------------- */

static const char peers_text[] =
    "{\"version\": \"v\", \"server\": {\"name\": \"s\", \"address\": \"203.0.113.2\"},"
    " \"containers\": [],"
    " \"link_peers\": ["
    "  {\"ip\": \"10.0.0.6\", \"server\": \"203.0.113.3\", \"uid\": 30004},"
    "  {\"ip\": \"10.0.0.7\", \"server\": \"203.0.113.3\", \"uid\": 30005},"
    "  {\"ip\": \"10.0.0.9\", \"server\": \"203.0.113.4\", \"uid\": 30007}]}";

static uint64_t mac_of(const char *addr)
{
    uint8_t mac[6];
    overlay_mac(ip4(addr), mac);
    return ov_mac48(mac);
}

static void expect(const ov_list_t *l, size_t i, int kind, uint64_t key, uint64_t val)
{
    assert_true(i < l->n);
    assert_int_equal(l->v[i].kind, kind);
    assert_int_equal(l->v[i].key, key);
    assert_int_equal(l->v[i].val, val);
}

static void desired_entries(void **st)
{
    (void)st;
    net_cfg_t net = net_cfg();
    spec_state_t *s = state_of(peers_text);
    ov_list_t want = {0};
    err_t e, why;
    err_clear(&e);
    err_clear(&why);
    assert_int_equal(ov_desired(s->link_peers, s->n_link_peers, ip4("203.0.113.2"), &net, &want,
                                &why, &e),
                     0);
    /* One forwarding entry per remote node; a neighbour and a route per
     * remote container. */
    assert_int_equal(want.n, 2 + 3 + 3);
    uint64_t m3 = mac_of("203.0.113.3"), m4 = mac_of("203.0.113.4");
    expect(&want, 0, OV_FDB, m3, ip4("203.0.113.3"));
    expect(&want, 1, OV_FDB, m4, ip4("203.0.113.4"));
    size_t k = 2;
    for (int kind = OV_NEIGH; kind <= OV_ROUTE; kind++) {
        /* sorted by the key's value as stored (network order) */
        const char *ips[] = {"10.0.0.6", "10.0.0.7", "10.0.0.9"};
        uint64_t macs[] = {m3, m3, m4};
        ov_list_t sorted = {0};
        for (int i = 0; i < 3; i++)
            assert_int_equal(ov_list_add(&sorted, kind, ip4(ips[i]), kind == OV_NEIGH ? macs[i] : 0,
                                         &e),
                             0);
        ov_list_sort(&sorted);
        for (size_t i = 0; i < 3; i++, k++)
            expect(&want, k, kind, sorted.v[i].key, sorted.v[i].val);
        ov_list_free(&sorted);
    }
    ov_list_free(&want);
    spec_free(s);
}

static void bad_peers_are_left_out(void **st)
{
    (void)st;
    net_cfg_t net = net_cfg();
    spec_state_t *s = state_of(
        "{\"version\": \"v\", \"containers\": [], \"link_peers\": ["
        "  {\"ip\": \"192.168.1.5\", \"server\": \"203.0.113.3\", \"uid\": 1},"
        "  {\"ip\": \"10.0.0.1\", \"server\": \"203.0.113.3\", \"uid\": 2},"
        "  {\"ip\": \"10.0.0.8\", \"server\": \"server-3\", \"uid\": 3},"
        "  {\"ip\": \"10.0.0.8\", \"server\": \"0.0.0.0\", \"uid\": 3},"
        "  {\"ip\": \"10.0.0.8\", \"server\": \"203.0.113.2\", \"uid\": 4},"
        "  {\"ip\": \"10.0.0.8\", \"server\": \"10.9.9.9\", \"uid\": 5},"
        "  {\"ip\": \"10.0.0.8\", \"server\": \"203.0.113.3\", \"uid\": 6},"
        "  {\"ip\": \"10.0.0.8\", \"server\": \"203.0.113.4\", \"uid\": 7}]}");
    ov_list_t want = {0};
    err_t e, why;
    err_clear(&e);
    err_clear(&why);
    /* outside the network, the gateway, a server name, no server, this
     * server, a server inside the container network: 6 left out; the ip
     * given twice keeps its first server. */
    assert_int_equal(ov_desired(s->link_peers, s->n_link_peers, ip4("203.0.113.2"), &net, &want,
                                &why, &e),
                     6);
    assert_non_null(strstr(why.msg, "192.168.1.5"));
    assert_int_equal(want.n, 3);
    expect(&want, 0, OV_FDB, mac_of("203.0.113.3"), ip4("203.0.113.3"));
    expect(&want, 1, OV_NEIGH, ip4("10.0.0.8"), mac_of("203.0.113.3"));
    expect(&want, 2, OV_ROUTE, ip4("10.0.0.8"), 0);
    ov_list_free(&want);
    spec_free(s);
}

static void diff_adds_and_deletes_the_difference(void **st)
{
    (void)st;
    err_t e;
    err_clear(&e);
    ov_list_t want = {0}, have = {0}, add = {0}, del = {0};
    /* Same everywhere: nothing to do. */
    ov_list_add(&want, OV_ROUTE, 1, 0, &e);
    ov_list_add(&have, OV_ROUTE, 1, 0, &e);
    assert_int_equal(ov_diff(&want, &have, &add, &del, &e), 0);
    assert_int_equal(add.n + del.n, 0);
    /* A route to add, one to delete, a neighbour whose MAC changed, an
     * entry of a node no link needs any more. */
    ov_list_add(&want, OV_ROUTE, 3, 0, &e);
    ov_list_add(&have, OV_ROUTE, 2, 0, &e);
    ov_list_add(&want, OV_NEIGH, 3, 0xaa, &e);
    ov_list_add(&have, OV_NEIGH, 3, 0xbb, &e);
    ov_list_add(&have, OV_FDB, 0xbb, 9, &e);
    ov_list_add(&want, OV_FDB, 0xaa, 8, &e);
    ov_list_add(&have, OV_FDB, 0xaa, 8, &e);
    ov_list_sort(&want);
    ov_list_sort(&have);
    assert_int_equal(ov_diff(&want, &have, &add, &del, &e), 0);
    assert_int_equal(add.n, 2);
    expect(&add, 0, OV_NEIGH, 3, 0xaa);
    expect(&add, 1, OV_ROUTE, 3, 0);
    assert_int_equal(del.n, 3);
    expect(&del, 0, OV_FDB, 0xbb, 9);
    expect(&del, 1, OV_NEIGH, 3, 0xbb);
    expect(&del, 2, OV_ROUTE, 2, 0);
    ov_list_free(&add);
    ov_list_free(&del);
    /* Nothing wanted: everything goes; nothing there: everything comes. */
    ov_list_t none = {0};
    assert_int_equal(ov_diff(&none, &have, &add, &del, &e), 0);
    assert_int_equal(add.n, 0);
    assert_int_equal(del.n, have.n);
    ov_list_free(&del);
    assert_int_equal(ov_diff(&want, &none, &add, &del, &e), 0);
    assert_int_equal(add.n, want.n);
    assert_int_equal(del.n, 0);
    ov_list_free(&add);
    /* Sorting removes duplicates. */
    ov_list_add(&want, OV_ROUTE, 3, 0, &e);
    size_t before = want.n;
    ov_list_sort(&want);
    assert_int_equal(want.n, before - 1);
    ov_list_free(&want);
    ov_list_free(&have);
}

/* ---- nft text --------------------------------------------------------------------- */

static char *part(overlay_nft_part_t p, const overlay_cfg_t *c, const spec_state_t *s)
{
    buf_t b = {0};
    assert_int_equal(overlay_nft(&b, p, c, s, "links"), 0);
    if (!b.data)
        return strdup("");
    return b.data;
}

static void nft_text(void **st)
{
    (void)st;
    spec_state_t *s = state_of(peers_text);
    char *t = part(OVERLAY_NFT_DECLS, &vx, s);
    assert_string_equal(t, "\tset overlay_peers {\n\t\ttype ipv4_addr\n"
                           "\t\telements = { 203.0.113.3, 203.0.113.4 }\n\t}\n"
                           "\tchain overlay_in {\n"
                           "\t\tip saddr . ip daddr @links accept\n"
                           "\t\tdrop\n\t}\n");
    free(t);
    t = part(OVERLAY_NFT_FORWARD, &vx, s);
    assert_string_equal(t, "\t\tiifname \"imp-t-vx\" jump overlay_in\n");
    free(t);
    t = part(OVERLAY_NFT_INPUT, &vx, s);
    assert_string_equal(t, "\t\tiifname \"imp-t-vx\" drop\n"
                           "\t\tip daddr 203.0.113.2 udp dport 4789 ip saddr != @overlay_peers "
                           "drop\n");
    free(t);
    /* overlay_local wins over the server's address. */
    overlay_cfg_t local = vx;
    local.local = "192.0.2.7";
    t = part(OVERLAY_NFT_INPUT, &local, s);
    assert_non_null(strstr(t, "ip daddr 192.0.2.7 udp dport 4789"));
    free(t);
    /* The overlay off: nothing at all. */
    overlay_cfg_t off = vx;
    off.mode = "off";
    for (int p = OVERLAY_NFT_DECLS; p <= OVERLAY_NFT_INPUT; p++) {
        t = part((overlay_nft_part_t)p, &off, s);
        assert_string_equal(t, "");
        free(t);
    }
    spec_free(s);
    /* No peers: an empty set (no elements line, which nft refuses empty). */
    s = state_of("{\"version\": \"v\", \"server\": {\"address\": \"203.0.113.2\"},"
                 " \"containers\": []}");
    t = part(OVERLAY_NFT_DECLS, &vx, s);
    assert_non_null(strstr(t, "\tset overlay_peers {\n\t\ttype ipv4_addr\n\t}\n"));
    assert_null(strstr(t, "elements"));
    free(t);
    spec_free(s);
}

/* The node's table with the overlay: x (10.0.0.3, here) linked with
 * 10.0.0.6 on 203.0.113.3. */
static const char linked_text[] =
    "{\"version\": \"v\", \"server\": {\"name\": \"s\", \"address\": \"203.0.113.2\"},"
    " \"containers\": [{\"uid\": 30001, \"ip\": \"10.0.0.3\", \"links\": [30004]}],"
    " \"link_peers\": [{\"ip\": \"10.0.0.6\", \"server\": \"203.0.113.3\", \"uid\": 30004}]}";

static netpolicy_cfg_t policy_cfg(const overlay_cfg_t *ov)
{
    net_cfg_t n = net_cfg();
    return (netpolicy_cfg_t){.table = "imp_t_ov", .prefix = "imp", .uplink = "",
                             .network = n.network, .prefixlen = n.prefixlen,
                             .gateway = n.gateway, .overlay = ov};
}

static void in_the_nodes_table(void **st)
{
    (void)st;
    spec_state_t *s = state_of(linked_text);
    netpolicy_cfg_t c = policy_cfg(&vx);
    err_t e;
    err_clear(&e);
    char *t = netpolicy_render(&c, s, &e);
    assert_non_null(t);
    /* The cross-server pair in links, both orders; the overlay's set and
     * chain; its jump first in forward; the input drops. */
    assert_non_null(strstr(t, "10.0.0.3 . 10.0.0.6"));
    assert_non_null(strstr(t, "10.0.0.6 . 10.0.0.3"));
    assert_non_null(strstr(t, "\tset overlay_peers {\n\t\ttype ipv4_addr\n"
                              "\t\telements = { 203.0.113.3 }\n\t}\n"));
    assert_non_null(strstr(t, "\tchain overlay_in {\n\t\tip saddr . ip daddr @links accept\n"));
    /* (after netpolicy's anti-spoofing rule, the forward chain's first) */
    assert_non_null(strstr(t, "policy accept;\n\t\tip saddr 10.0.0.0/8 fib saddr . iif oif "
                              "missing drop\n\t\tiifname \"imp-t-vx\" jump overlay_in\n"
                              "\t\tiifname \"imp*\" jump from_container\n"));
    assert_non_null(strstr(t, "\t\tiifname \"imp-t-vx\" drop\n\t\tip daddr 203.0.113.2 udp "
                              "dport 4789 ip saddr != @overlay_peers drop\n"
                              "\t\tiifname \"imp*\" reject"));
    free(t);
    /* Off (or none): not a word of it. */
    overlay_cfg_t off = vx;
    off.mode = "off";
    const overlay_cfg_t *none[] = {&off, NULL};
    for (int i = 0; i < 2; i++) {
        c = policy_cfg(none[i]);
        t = netpolicy_render(&c, s, &e);
        assert_non_null(t);
        assert_null(strstr(t, "overlay"));
        assert_null(strstr(t, "imp-t-vx"));
        free(t);
    }
    spec_free(s);
}

/* ---- the device, for real (root, a namespace of our own) ------------------------------ */

static bool in_own_netns;

static int setup_netns(void **st)
{
    (void)st;
    in_own_netns = geteuid() == 0 && unshare(CLONE_NEWNET) == 0;
    if (in_own_netns && system("ip link set lo up") != 0)
        in_own_netns = false;
    return 0;
}

/* What `cmd` prints (this process's namespace: the children share it). */
static char *run(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose(p);
    return out;
}

static void apply_ok(overlay_t *ov, const char *text)
{
    spec_state_t *s = state_of(text);
    err_t e;
    err_clear(&e);
    if (overlay_apply(ov, s, &e) < 0)
        fail_msg("overlay_apply: %s", e.msg);
    spec_free(s);
}

static void device_follows_the_state(void **st)
{
    (void)st;
    if (!in_own_netns)
        skip();
    net_cfg_t net = net_cfg();
    err_t e;
    err_clear(&e);
    overlay_t *ov = overlay_new(&vx, &net, &e);
    assert_non_null(ov);
    apply_ok(ov, peers_text);
    unsigned index = if_nametoindex("imp-t-vx");
    assert_true(index > 0);
    char *t = run("ip -d link show imp-t-vx");
    has(t, "mtu 1450");
    has(t, "link/ether 02:cb:00:71:02:00");
    has(t, "vxlan id 4242 local 203.0.113.2");
    has(t, "dstport 4789");
    has(t, "nolearning");
    has(t, "state UNKNOWN"); /* up (a VXLAN device has no carrier state) */
    t = run("ip route show proto 73 dev imp-t-vx");
    has(t, "10.0.0.6 scope link");
    has(t, "10.0.0.7 scope link");
    has(t, "10.0.0.9 scope link");
    t = run("ip neigh show dev imp-t-vx");
    has(t, "10.0.0.6 lladdr 02:cb:00:71:03:00 PERMANENT");
    has(t, "10.0.0.9 lladdr 02:cb:00:71:04:00 PERMANENT");
    t = run("bridge fdb show dev imp-t-vx");
    has(t, "02:cb:00:71:03:00 dst 203.0.113.3 self permanent");
    has(t, "02:cb:00:71:04:00 dst 203.0.113.4 self permanent");
    lacks(t, "00:00:00:00:00:00"); /* no flood entry */
    /* What someone removed by hand comes back with the next state. */
    assert_int_equal(system("ip route del 10.0.0.7/32 dev imp-t-vx && "
                            "ip neigh del 10.0.0.6 dev imp-t-vx"),
                     0);
    apply_ok(ov, peers_text);
    has(run("ip route show proto 73 dev imp-t-vx"), "10.0.0.7 scope link");
    has(run("ip neigh show dev imp-t-vx"), "10.0.0.6 lladdr 02:cb:00:71:03:00 PERMANENT");

    /* Another route on the device not ours (no proto 73) is never touched;
     * one of ours no state wants goes. */
    assert_int_equal(system("ip route add 10.0.0.50/32 dev imp-t-vx proto 73 && "
                            "ip route add 192.0.2.99/32 dev imp-t-vx"),
                     0);
    /* 30005 unlinked, 30007 moved to 203.0.113.5: the entries follow. */
    overlay_t *again = overlay_new(&vx, &net, &e); /* a restarted daemon: adopts */
    assert_non_null(again);
    apply_ok(again,
             "{\"version\": \"v\", \"server\": {\"address\": \"203.0.113.2\"},"
             " \"containers\": [], \"link_peers\": ["
             "  {\"ip\": \"10.0.0.6\", \"server\": \"203.0.113.3\", \"uid\": 30004},"
             "  {\"ip\": \"10.0.0.9\", \"server\": \"203.0.113.5\", \"uid\": 30007}]}");
    assert_int_equal(if_nametoindex("imp-t-vx"), index); /* adopted, not re-created */
    t = run("ip route show dev imp-t-vx");
    has(t, "10.0.0.6 proto 73 scope link");
    has(t, "10.0.0.9 proto 73 scope link");
    lacks(t, "10.0.0.7");
    lacks(t, "10.0.0.50");
    has(t, "192.0.2.99 scope link");
    t = run("ip neigh show dev imp-t-vx");
    has(t, "10.0.0.9 lladdr 02:cb:00:71:05:00 PERMANENT");
    lacks(t, "10.0.0.7");
    t = run("bridge fdb show dev imp-t-vx");
    has(t, "02:cb:00:71:05:00 dst 203.0.113.5");
    lacks(t, "203.0.113.4");
    overlay_free(again);

    /* A changed setting (the VNI) replaces the device; no peers: empty. */
    overlay_cfg_t other = vx;
    other.vni = 77;
    overlay_t *changed = overlay_new(&other, &net, &e);
    apply_ok(changed, "{\"version\": \"v\", \"server\": {\"address\": \"203.0.113.2\"},"
                      " \"containers\": []}");
    has(run("ip -d link show imp-t-vx"), "vxlan id 77 ");
    assert_string_equal(run("ip route show proto 73 dev imp-t-vx"), "");
    overlay_free(changed);
    overlay_free(ov);

    /* stop-all: gone, and gone again is fine. */
    assert_int_equal(overlay_remove(&vx, &e), 0);
    assert_int_equal(if_nametoindex("imp-t-vx"), 0);
    assert_int_equal(overlay_remove(&vx, &e), 0);
}

/* nft takes the text: the whole table, then a change of elements only
 * (one more local link, the same peers), then a new peer (a replace). */
static void the_kernel_takes_the_table(void **st)
{
    (void)st;
    if (!in_own_netns)
        skip();
    netpolicy_cfg_t c = policy_cfg(&vx);
    err_t e;
    err_clear(&e);
    netpolicy_t *np = netpolicy_new(&c, &e);
    assert_non_null(np);
    const char *states[] = {
        linked_text,
        "{\"version\": \"v\", \"server\": {\"address\": \"203.0.113.2\"},"
        " \"containers\": [{\"uid\": 30001, \"ip\": \"10.0.0.3\", \"links\": [30004, 30005]}],"
        " \"link_peers\": [{\"ip\": \"10.0.0.6\", \"server\": \"203.0.113.3\", \"uid\": 30004},"
        "  {\"ip\": \"10.0.0.7\", \"server\": \"203.0.113.3\", \"uid\": 30005}]}",
        "{\"version\": \"v\", \"server\": {\"address\": \"203.0.113.2\"},"
        " \"containers\": [{\"uid\": 30001, \"ip\": \"10.0.0.3\", \"links\": [30006]}],"
        " \"link_peers\": [{\"ip\": \"10.0.0.8\", \"server\": \"203.0.113.4\", \"uid\": 30006}]}",
    };
    for (int i = 0; i < 3; i++) {
        spec_state_t *s = state_of(states[i]);
        if (netpolicy_apply(np, s, &e) < 0)
            fail_msg("state %d: %s", i, e.msg);
        spec_free(s);
    }
    char *t = run("nft list table inet imp_t_ov");
    has(t, "jump overlay_in");
    has(t, "elements = { 203.0.113.4 }");
    has(t, "10.0.0.3 . 10.0.0.8");
    lacks(t, "10.0.0.6");
    netpolicy_free(np);
    assert_int_equal(netpolicy_delete("imp_t_ov", &e), 0);
}

static void foreign_device_is_left_alone(void **st)
{
    (void)st;
    if (!in_own_netns)
        skip();
    assert_int_equal(system("ip link add imp-t-vx type bridge"), 0);
    net_cfg_t net = net_cfg();
    err_t e;
    err_clear(&e);
    overlay_t *ov = overlay_new(&vx, &net, &e);
    spec_state_t *s = state_of(peers_text);
    assert_int_equal(overlay_apply(ov, s, &e), -1);
    assert_non_null(strstr(e.msg, "exists and is not a VXLAN device"));
    err_clear(&e);
    assert_int_equal(overlay_remove(&vx, &e), -1);
    assert_non_null(strstr(e.msg, "is not a VXLAN device: left alone"));
    has(run("ip -d link show imp-t-vx"), "bridge");
    /* Once the name is free, the retry (due a second after the failure)
     * makes the device with what the state asked for. */
    assert_true(overlay_retry_at(ov) > 0);
    assert_int_equal(system("ip link del imp-t-vx"), 0);
    err_clear(&e);
    assert_int_equal(overlay_retry(ov, &e), 0); /* not due yet: nothing done */
    assert_int_equal(if_nametoindex("imp-t-vx"), 0);
    usleep(OVERLAY_RETRY_MS * 1000 + 50000);
    if (overlay_retry(ov, &e) < 0)
        fail_msg("retry: %s", e.msg);
    assert_int_equal(overlay_retry_at(ov), -1);
    has(run("ip route show proto 73 dev imp-t-vx"), "10.0.0.9 scope link");
    spec_free(s);
    overlay_free(ov);
    assert_int_equal(overlay_remove(&vx, &e), 0);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mac_is_the_address),
        cmocka_unit_test(settings_rows),
        cmocka_unit_test(config_file_rules),
        cmocka_unit_test(desired_entries),
        cmocka_unit_test(bad_peers_are_left_out),
        cmocka_unit_test(diff_adds_and_deletes_the_difference),
        cmocka_unit_test(nft_text),
        cmocka_unit_test(in_the_nodes_table),
        cmocka_unit_test(the_kernel_takes_the_table),
        cmocka_unit_test(device_follows_the_state),
        cmocka_unit_test(foreign_device_is_left_alone),
    };
    return cmocka_run_group_tests(tests, setup_netns, NULL);
}
