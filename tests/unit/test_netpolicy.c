/* Unit tests for the node's nft table (src/node/netpolicy.c): the rendered
 * text for small states (links both orders, one-sided links absent, port
 * mappings and the bad ones left out, NAT on and off, the table and prefix
 * names), bad settings refused; and, as root, the apply in a network
 * namespace of this test process's own (unshare: nothing on the machine's
 * namespace), leaving another table alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/common/log.h"
#include "../../src/node/netpolicy.h"
#include "state_fixture.h"

static netpolicy_cfg_t cfg(const char *table, const char *prefix, const char *uplink, bool nat)
{
    netpolicy_cfg_t c = {.table = table, .prefix = prefix, .uplink = uplink, .nat = nat,
                         .prefixlen = 8};
    inet_pton(AF_INET, "10.0.0.0", &c.network);
    inet_pton(AF_INET, "10.0.0.1", &c.gateway);
    return c;
}

/* A state as node_channel.c sends it: 30001 (10.0.0.3) and 30002 (10.0.0.4)
 * linked both ways, 30003 (10.0.0.5) claiming a link 30002 never agreed
 * to, 30004 on another server linked with 30001 (link_peers). */
static const char state_text[] =
    "{\"version\": \"v1\", \"server\": {\"name\": \"s\", \"address\": \"203.0.113.2\"},"
    " \"containers\": ["
    "  {\"uid\": 30001, \"ip\": \"10.0.0.3\", \"links\": [30002, 30004]},"
    "  {\"uid\": 30002, \"ip\": \"10.0.0.4\", \"links\": [30001]},"
    "  {\"uid\": 30003, \"ip\": \"10.0.0.5\", \"links\": [30002]}],"
    " \"link_peers\": [{\"ip\": \"10.0.0.6\", \"server\": \"203.0.113.3\", \"uid\": 30004}],"
    " \"portmappings\": ["
    "  {\"id\": 1, \"proto\": \"tcp\", \"public_port\": 9000, \"container\": 30001,"
    "   \"container_ip\": \"10.0.0.3\", \"private_port\": 8000},"
    "  {\"id\": 2, \"proto\": \"udp\", \"public_port\": 9001, \"container\": 30001,"
    "   \"container_ip\": \"10.0.0.3\", \"private_port\": 8001},"
    "  {\"id\": 3, \"proto\": \"sctp\", \"public_port\": 9002, \"container\": 30001,"
    "   \"container_ip\": \"10.0.0.3\", \"private_port\": 8002},"
    "  {\"id\": 4, \"proto\": \"tcp\", \"public_port\": 70000, \"container\": 30001,"
    "   \"container_ip\": \"10.0.0.3\", \"private_port\": 8003},"
    "  {\"id\": 5, \"proto\": \"tcp\", \"public_port\": 9000, \"container\": 30002,"
    "   \"container_ip\": \"10.0.0.4\", \"private_port\": 8004},"
    "  {\"id\": 6, \"proto\": \"tcp\", \"public_port\": 9005, \"container\": 30002,"
    "   \"container_ip\": \"192.168.1.1\", \"private_port\": 8005}]}";

static char *render(const netpolicy_cfg_t *c, const char *text)
{
    spec_state_t *s = state_of(text);
    err_t e;
    err_clear(&e);
    char *out = netpolicy_render(c, s, &e);
    spec_free(s);
    if (!out)
        fail_msg("render: %s", e.msg);
    return out;
}

static void mutual_links_both_orders_one_sided_absent(void **st)
{
    (void)st;
    netpolicy_cfg_t c = cfg("imperium", "imp", "", false);
    char *t = render(&c, state_text);
    /* Sorted, each pair once, both orders; the remote peer 10.0.0.6 too. */
    has(t, "elements = { 10.0.0.3 . 10.0.0.4, 10.0.0.3 . 10.0.0.6, 10.0.0.4 . 10.0.0.3, "
           "10.0.0.6 . 10.0.0.3 }");
    lacks(t, "10.0.0.5 . ");
    lacks(t, ". 10.0.0.5");
    free(t);
}

static void the_replace_is_one_transaction_of_our_table(void **st)
{
    (void)st;
    netpolicy_cfg_t c = cfg("imperium", "imp", "", false);
    char *t = render(&c, state_text);
    assert_int_equal(strncmp(t, "table inet imperium\ndelete table inet imperium\n"
                                "table inet imperium {\n",
                             strlen("table inet imperium\ndelete table inet imperium\n"
                                    "table inet imperium {\n")),
                     0);
    lacks(t, "flush");
    free(t);
}

static void port_mappings_and_bad_ones_left_out(void **st)
{
    (void)st;
    netpolicy_cfg_t c = cfg("imperium", "imp", "", false);
    char *t = render(&c, state_text);
    /* A mapped flow is checked against its whole mapping: moving a port to
     * another container (or another private port) cuts the old flows. */
    has(t, "set pm_tcp {\n\t\ttype inet_service . ipv4_addr . inet_service\n"
           "\t\telements = { 9000 . 10.0.0.3 . 8000 }\n");
    has(t, "set pm_udp {\n\t\ttype inet_service . ipv4_addr . inet_service\n"
           "\t\telements = { 9001 . 10.0.0.3 . 8001 }\n");
    has(t, "ct status dnat ct direction original meta l4proto tcp ct original proto-dst . "
           "ip daddr . th dport @pm_tcp accept");
    has(t, "ct status dnat ct direction reply meta l4proto udp ct original proto-dst . "
           "ip saddr . th sport @pm_udp accept");
    /* The first tcp 9000 wins; sctp, port 70000 and 192.168.1.1 are out. */
    has(t, "elements = { tcp . 9000 : 10.0.0.3 . 8000, udp . 9001 : 10.0.0.3 . 8001 }");
    lacks(t, "9002");
    lacks(t, "8003");
    lacks(t, "8004");
    lacks(t, "192.168");
    has(t, "ip daddr 203.0.113.2 dnat ip to meta l4proto . th dport map @portmap");
    has(t, "type nat hook output priority -100; policy accept;\n\t\tip daddr 203.0.113.2 dnat");
    has(t, "ip saddr 127.0.0.0/8 oifname \"imp*\" snat ip to 10.0.0.1");
    free(t);
}

static void nat_on_and_off(void **st)
{
    (void)st;
    netpolicy_cfg_t off = cfg("imperium", "imp", "up0", false);
    char *t = render(&off, state_text);
    lacks(t, "masquerade");
    lacks(t, "up0");
    free(t);
    netpolicy_cfg_t on = cfg("imperium", "imp", "up0", true);
    t = render(&on, state_text);
    has(t, "ip saddr 10.0.0.0/8 oifname \"up0\" masquerade");
    has(t, "\t\toifname \"up0\" accept\n\t\treject with icmpx admin-prohibited\n");
    has(t, "iifname \"up0\" ct direction reply ct state established,related accept");
    lacks(t, "169.254"); /* nat_deny unset (the setting's default is the node's) */
    free(t);
    /* nat_deny: rejected before the uplink's accept, rewritten from numbers. */
    on.nat_deny = " 169.254.0.0/16,192.168.0.0/16  198.51.100.7,";
    t = render(&on, state_text);
    has(t, "\t\tip daddr { 169.254.0.0/16, 192.168.0.0/16, 198.51.100.7/32 } reject with "
           "icmpx admin-prohibited\n\t\toifname \"up0\" accept\n");
    free(t);
    off.nat_deny = "169.254.0.0/16"; /* no uplink accept: nothing to deny */
    t = render(&off, state_text);
    lacks(t, "169.254");
    free(t);
    /* nat on without an uplink: nothing to masquerade out of. */
    netpolicy_cfg_t none = cfg("imperium", "imp", "", true);
    t = render(&none, state_text);
    lacks(t, "masquerade");
    free(t);
}

static void isolation_rules_name_only_our_interfaces(void **st)
{
    (void)st;
    netpolicy_cfg_t c = cfg("imp_b2", "xb", "", false);
    char *t = render(&c, state_text);
    has(t, "table inet imp_b2 {");
    /* First of all: a container address only from where its route goes. */
    has(t, "type filter hook forward priority filter; policy accept;\n"
           "\t\tip saddr 10.0.0.0/8 fib saddr . iif oif missing drop\n");
    has(t, "iifname \"xb*\" jump from_container");
    has(t, "oifname \"xb*\" jump to_container");
    has(t, "ip daddr 10.0.0.0/8 reject with icmpx admin-prohibited");
    has(t, "iifname \"xb*\" ct state established,related accept\n"
           "\t\tiifname \"xb*\" reject with icmpx admin-prohibited");
    lacks(t, "\"imp*\"");
    lacks(t, "dport 53"); /* no DNS offered unless the setting says so */
    free(t);
    c.dns = true;
    t = render(&c, state_text);
    has(t, "iifname \"xb*\" ip daddr 10.0.0.1 meta l4proto { tcp, udp } th dport 53 accept");
    free(t);
}

static void empty_state_renders_empty_sets(void **st)
{
    (void)st;
    netpolicy_cfg_t c = cfg("imperium", "imp", "", false);
    char *t = render(&c, "{\"version\": \"v\", \"containers\": []}");
    has(t, "set links {\n\t\ttype ipv4_addr . ipv4_addr\n\t}\n");
    lacks(t, "elements");
    lacks(t, "dnat ip to"); /* no server address: no DNAT rule */
    free(t);
}

static netpolicy_cfg_t deny(const char *list)
{
    netpolicy_cfg_t c = cfg("imperium", "imp", "up0", true);
    c.nat_deny = list;
    return c;
}

static void bad_settings_are_refused(void **st)
{
    (void)st;
    spec_state_t *s = state_of("{\"version\": \"v\", \"containers\": []}");
    const struct {
        netpolicy_cfg_t c;
        const char *msg;
    } bad[] = {
        {cfg("bad-name", "imp", "", false), "nft_table must be"},
        {cfg("", "imp", "", false), "nft_table must be"},
        {cfg("1abc", "imp", "", false), "nft_table must be"},
        {cfg("imperium", "imp\"", "", false), "veth_prefix must be"},
        {cfg("imperium", "toolong", "", false), "veth_prefix must be"},
        {cfg("imperium", "imp", "eth0\" accept", true), "uplink must be"},
        {cfg("imperium", "imp", "a23456789012345x", true), "uplink must be"},
        {deny("169.254.0.0/16; drop"), "nat_deny"},
        {deny("169.254.0.0/16 } accept"), "nat_deny"},
        {deny("10.0.0.0/33"), "nat_deny"},
        {deny("10.1.0.0/8"), "nat_deny: '10.1.0.0/8' has host bits set"},
        {deny("metadata"), "nat_deny"},
        {deny("169.254.169.254.169.254.169.254.169.254"), "nat_deny"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_t e;
        err_clear(&e);
        assert_null(netpolicy_render(&bad[i].c, s, &e));
        has(e.msg, bad[i].msg);
        err_clear(&e);
        assert_null(netpolicy_new(&bad[i].c, &e));
    }
    spec_free(s);
    err_t e;
    err_clear(&e);
    assert_int_equal(netpolicy_check_ifname("", &e), 0);
    assert_int_equal(netpolicy_check_ifname("eth0.100", &e), 0);
    assert_int_equal(netpolicy_check_table("Imperium_2", &e), 0);
    assert_int_equal(netpolicy_check_nat_deny("", &e), 0);
    assert_int_equal(netpolicy_check_nat_deny("169.254.0.0/16, 10.20.0.0/16 192.0.2.9", &e), 0);
}

/* ---- apply, in a network namespace of this process's own ---- */

static bool in_own_netns;

static int own_netns(void **st)
{
    (void)st;
    /* Root only; a new, empty namespace that dies with this process. */
    in_own_netns = geteuid() == 0 && unshare(CLONE_NEWNET) == 0;
    return 0;
}

static char *nft_list(const char *cmd)
{
    struct nft_ctx *n = nft_ctx_new(NFT_CTX_DEFAULT);
    assert_non_null(n);
    nft_ctx_buffer_output(n);
    nft_ctx_buffer_error(n);
    char *out = NULL;
    if (nft_run_cmd_from_buffer(n, cmd) == 0)
        out = strdup(nft_ctx_get_output_buffer(n));
    nft_ctx_free(n);
    return out;
}

static void apply_replaces_only_on_change(void **st)
{
    (void)st;
    if (!in_own_netns)
        skip();
    char *other = nft_list("add table inet other\nadd set inet other s { type ipv4_addr; "
                           "elements = { 192.0.2.1 } }\n");
    assert_non_null(other);
    free(other);
    netpolicy_cfg_t c = cfg("imp_unit", "imp", "", false);
    err_t e;
    err_clear(&e);
    netpolicy_t *np = netpolicy_new(&c, &e);
    assert_non_null(np);
    assert_false(netpolicy_in_force(np));
    spec_state_t *s = state_of(state_text);
    if (netpolicy_apply(np, s, &e) != 1)
        fail_msg("apply: %s", e.msg);
    assert_true(netpolicy_in_force(np));
    assert_int_equal(netpolicy_retry(np, &e), 0); /* nothing pending */
    assert_int_equal(netpolicy_apply(np, s, &e), 0); /* same text: not applied again */
    spec_free(s);
    char *links = nft_list("list set inet imp_unit links");
    assert_non_null(links);
    has(links, "10.0.0.3 . 10.0.0.4");
    free(links);
    /* Unlink (and the mappings gone): the elements go. */
    s = state_of("{\"version\": \"v2\", \"containers\": [{\"uid\": 30001, \"ip\": "
                 "\"10.0.0.3\"}, {\"uid\": 30002, \"ip\": \"10.0.0.4\"}]}");
    assert_int_equal(netpolicy_apply(np, s, &e), 1);
    spec_free(s);
    links = nft_list("list set inet imp_unit links");
    assert_non_null(links);
    lacks(links, "10.0.0.3");
    free(links);
    netpolicy_free(np);
    /* The table outlives the daemon's object; delete removes it, twice is fine. */
    char *t = nft_list("list table inet imp_unit");
    assert_non_null(t);
    free(t);
    assert_int_equal(netpolicy_delete("imp_unit", &e), 0);
    assert_null(nft_list("list table inet imp_unit"));
    assert_int_equal(netpolicy_delete("imp_unit", &e), 0);
    other = nft_list("list table inet other");
    assert_non_null(other);
    has(other, "192.0.2.1");
    free(other);
}

/* The table's handle: a whole replace makes a new table, an update of
 * elements keeps it. */
static long table_handle(const char *table)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "list table inet %s", table);
    struct nft_ctx *n = nft_ctx_new(NFT_CTX_DEFAULT);
    assert_non_null(n);
    nft_ctx_output_set_flags(n, NFT_CTX_OUTPUT_HANDLE);
    nft_ctx_buffer_output(n);
    nft_ctx_buffer_error(n);
    long h = -1;
    if (nft_run_cmd_from_buffer(n, cmd) == 0) {
        const char *at = strstr(nft_ctx_get_output_buffer(n), "# handle ");
        if (at)
            h = atol(at + 9);
    }
    nft_ctx_free(n);
    return h;
}

static void apply(netpolicy_t *np, const char *text, int want)
{
    spec_state_t *s = state_of(text);
    err_t e;
    err_clear(&e);
    int rc = netpolicy_apply(np, s, &e);
    spec_free(s);
    if (rc != want)
        fail_msg("apply gave %d, not %d: %s", rc, want, e.msg);
}

#define C3 "{\"uid\": 30001, \"ip\": \"10.0.0.3\", \"links\": [%s]}, "
#define C4 "{\"uid\": 30002, \"ip\": \"10.0.0.4\", \"links\": [%s]}, "
#define C5 "{\"uid\": 30003, \"ip\": \"10.0.0.5\", \"links\": []}"
#define PM(ip, port) \
    "{\"id\": 1, \"proto\": \"tcp\", \"public_port\": 9000, \"container\": 30001, " \
    "\"container_ip\": \"" ip "\", \"private_port\": " port "}"

static char *state_text2(const char *l3, const char *l4, const char *addr, const char *pm)
{
    char *t = NULL;
    assert_true(asprintf(&t,
                         "{\"version\": \"v\", \"server\": {\"address\": \"%s\"}, "
                         "\"containers\": [" C3 C4 C5 "], \"portmappings\": [%s]}",
                         addr, l3, l4, pm) > 0);
    return t;
}

static void elements_alone_change_in_place(void **st)
{
    (void)st;
    if (!in_own_netns)
        skip();
    netpolicy_cfg_t c = cfg("imp_el", "imp", "", false);
    err_t e;
    err_clear(&e);
    netpolicy_t *np = netpolicy_new(&c, &e);
    assert_non_null(np);
    char *t = state_text2("", "", "203.0.113.2", "");
    apply(np, t, 1);
    free(t);
    long h = table_handle("imp_el");
    assert_true(h > 0);
    /* A link, then a mapping, then the mapping moved: the same table. */
    t = state_text2("30002", "30001", "203.0.113.2", "");
    apply(np, t, 1);
    apply(np, t, 0);
    free(t);
    t = state_text2("30002", "30001", "203.0.113.2", PM("10.0.0.3", "8000"));
    apply(np, t, 1);
    free(t);
    t = state_text2("30002", "30001", "203.0.113.2", PM("10.0.0.5", "8001"));
    apply(np, t, 1);
    free(t);
    assert_int_equal(table_handle("imp_el"), h);
    char *l = nft_list("list table inet imp_el");
    assert_non_null(l);
    has(l, "10.0.0.3 . 10.0.0.4");
    has(l, "tcp . 9000 : 10.0.0.5 . 8001");
    lacks(l, "10.0.0.3 . 8000");
    free(l);
    /* Unlink and unmap: the elements go, still the same table. */
    t = state_text2("", "", "203.0.113.2", "");
    apply(np, t, 1);
    free(t);
    assert_int_equal(table_handle("imp_el"), h);
    l = nft_list("list table inet imp_el");
    lacks(l, "10.0.0.3 . 10.0.0.4");
    lacks(l, "9000");
    free(l);
    /* A rule changes (the server's address): the whole table is replaced. */
    t = state_text2("", "", "203.0.113.9", "");
    apply(np, t, 1);
    free(t);
    assert_true(table_handle("imp_el") != h);
    l = nft_list("list table inet imp_el");
    has(l, "ip daddr 203.0.113.9 dnat");
    free(l);
    netpolicy_free(np);
    assert_int_equal(netpolicy_delete("imp_el", &e), 0);
}

static int check(netpolicy_t *np)
{
    err_t e;
    err_clear(&e);
    int rc = netpolicy_check(np, &e);
    if (rc < 0)
        fail_msg("check: %s", e.msg);
    return rc;
}

/* `nft flush ruleset` (a firewall's reload) or a table of our name made
 * by someone else: the check notices, the whole table goes back. */
static void a_lost_table_is_noticed(void **st)
{
    (void)st;
    if (!in_own_netns)
        skip();
    netpolicy_cfg_t c = cfg("imp_ck", "imp", "", false);
    err_t e;
    err_clear(&e);
    netpolicy_t *np = netpolicy_new(&c, &e);
    assert_non_null(np);
    assert_int_equal(check(np), 0); /* nothing applied yet: nothing to lose */
    char *t = state_text2("30002", "30001", "203.0.113.2", "");
    apply(np, t, 1);
    free(t);
    assert_int_equal(check(np), 0);
    assert_int_equal(check(np), 0);
    char *out = nft_list("flush ruleset");
    assert_non_null(out);
    free(out);
    assert_int_equal(check(np), 1);
    assert_false(netpolicy_in_force(np));
    assert_int_equal(netpolicy_retry(np, &e), 1);
    assert_true(netpolicy_in_force(np));
    char *l = nft_list("list set inet imp_ck links");
    assert_non_null(l);
    has(l, "10.0.0.3 . 10.0.0.4");
    free(l);
    assert_int_equal(check(np), 0);
    /* An element change keeps the table: still ours. */
    t = state_text2("", "", "203.0.113.2", "");
    apply(np, t, 1);
    free(t);
    assert_int_equal(check(np), 0);
    /* Replaced by an empty one of the same name. */
    out = nft_list("delete table inet imp_ck\nadd table inet imp_ck\n");
    assert_non_null(out);
    free(out);
    assert_int_equal(check(np), 1);
    assert_int_equal(netpolicy_retry(np, &e), 1);
    l = nft_list("list table inet imp_ck");
    assert_non_null(l);
    has(l, "jump from_container");
    free(l);
    netpolicy_free(np);
    assert_int_equal(netpolicy_delete("imp_ck", &e), 0);
}

static void delete_refuses_a_bad_name(void **st)
{
    (void)st;
    err_t e;
    err_clear(&e);
    assert_int_equal(netpolicy_delete("bad-name", &e), -1);
    has(e.msg, "nft_table must be");
}

int main(void)
{
    log_set_level(LOG_ERROR); /* the left-out mappings' warnings are expected */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mutual_links_both_orders_one_sided_absent),
        cmocka_unit_test(the_replace_is_one_transaction_of_our_table),
        cmocka_unit_test(port_mappings_and_bad_ones_left_out),
        cmocka_unit_test(nat_on_and_off),
        cmocka_unit_test(isolation_rules_name_only_our_interfaces),
        cmocka_unit_test(empty_state_renders_empty_sets),
        cmocka_unit_test(bad_settings_are_refused),
        cmocka_unit_test(apply_replaces_only_on_change),
        cmocka_unit_test(elements_alone_change_in_place),
        cmocka_unit_test(a_lost_table_is_noticed),
        cmocka_unit_test(delete_refuses_a_bad_name),
    };
    return cmocka_run_group_tests(tests, own_netns, NULL);
}
