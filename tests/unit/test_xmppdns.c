/* Unit tests for where the node may connect for a jid's own XMPP server
 * (src/node/xmppdns.c, docs/ALARMS.md "No SSRF"): the address rule (public
 * unicast, ports 5222/5223, none of the container network and nat_deny),
 * the deny lists, the jid's domain, and a jid whose domain is an IP literal
 * (decided without DNS).  Nothing here touches the network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/node/xmppdns.h"

/* The rule for a textual address; NULL when allowed, else e's message. */
static const char *rule(const char *ip, int port, const xmppdns_net4_t *deny, size_t n)
{
    static err_t e;
    unsigned char b[16];
    int fam = inet_pton(AF_INET, ip, b) == 1 ? AF_INET : AF_INET6;
    assert_int_equal(inet_pton(fam, ip, b), 1);
    memset(&e, 0, sizeof e);
    return xmppdns_check(fam, b, port, deny, n, &e) == 0 ? NULL : e.msg;
}

static void refused_because(const char *ip, int port, const char *why)
{
    const char *msg = rule(ip, port, NULL, 0);
    if (!msg || !strstr(msg, why))
        fail_msg("%s:%d: expected a refusal with '%s', got '%s'", ip, port, why,
                 msg ? msg : "(allowed)");
}

static void test_public_addresses_are_allowed(void **state)
{
    (void)state;
    const char *ok[] = {"1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.1",
                        "172.15.0.1", "172.32.0.1", "192.0.1.1", "193.0.0.1",
                        "223.255.255.254", "2a01:4f8::1", "2001:4860:4860::8888",
                        "::ffff:8.8.8.8", "2001:200::1"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        const char *msg = rule(ok[i], 5222, NULL, 0);
        if (msg)
            fail_msg("%s refused: %s", ok[i], msg);
    }
    assert_null(rule("8.8.8.8", 5223, NULL, 0));
}

static void test_what_is_not_public_unicast_is_refused(void **state)
{
    (void)state;
    refused_because("127.0.0.1", 5222, "127.0.0.1 is a loopback address (127.0.0.0/8)");
    refused_because("127.9.9.9", 5222, "loopback");
    refused_because("0.0.0.0", 5222, "\"this network\"");
    refused_because("10.1.2.3", 5222, "private address (10.0.0.0/8)");
    refused_because("172.16.0.1", 5222, "private address (172.16.0.0/12)");
    refused_because("172.31.255.255", 5222, "private");
    refused_because("192.168.1.1", 5222, "private address (192.168.0.0/16)");
    refused_because("100.64.0.1", 5222, "carrier-grade NAT");
    refused_because("100.127.255.255", 5222, "carrier-grade NAT");
    refused_because("169.254.169.254", 5222, "link-local");
    refused_because("192.0.2.1", 5222, "documentation");
    refused_because("198.18.0.1", 5222, "benchmarking");
    refused_because("224.0.0.1", 5222, "multicast");
    refused_because("239.255.255.250", 5222, "multicast");
    refused_because("240.0.0.1", 5222, "reserved");
    refused_because("255.255.255.255", 5222, "reserved");
    refused_because("::1", 5222, "the loopback address (::1)");
    refused_because("::", 5222, "unspecified");
    refused_because("fd00::1", 5222, "unique local");
    refused_because("fc12::1", 5222, "unique local");
    refused_because("fe80::1", 5222, "link-local");
    refused_because("ff02::1", 5222, "multicast");
    refused_because("2001:db8::1", 5222, "documentation");
    refused_because("2001::1", 5222, "Teredo");
    refused_because("2002:7f00:1::1", 5222, "6to4");
    refused_because("64:ff9b::7f00:1", 5222, "not a global unicast");
    refused_because("::7f00:1", 5222, "not a global unicast");
    /* v4-mapped: the connection is IPv4, judged as such. */
    refused_because("::ffff:127.0.0.1", 5222, "loopback address (127.0.0.0/8)");
    refused_because("::ffff:10.0.0.5", 5222, "private");
}

static void test_only_the_xmpp_client_ports(void **state)
{
    (void)state;
    refused_because("8.8.8.8", 22, "port 22 of 8.8.8.8 is not an XMPP client port");
    refused_because("8.8.8.8", 5269, "not an XMPP client port");
    refused_because("2a01:4f8::1", 80, "not an XMPP client port");
    refused_because("8.8.8.8", 0, "not an XMPP client port");
}

static void test_the_container_network_and_nat_deny(void **state)
{
    (void)state;
    xmppdns_net4_t *deny = NULL;
    size_t n = 0;
    err_t e = {0};
    /* A container network in public space, and nat_deny's entries. */
    assert_int_equal(xmppdns_deny_add(&deny, &n, "44.0.0.0/16", "container_network", &e), 0);
    assert_int_equal(xmppdns_deny_add(&deny, &n, "203.1.0.0/24, 9.9.9.9 45.0.0.0/8", "nat_deny",
                                      &e),
                     0);
    assert_int_equal(xmppdns_deny_add(&deny, &n, "", "nat_deny", &e), 0);
    assert_int_equal(xmppdns_deny_add(&deny, &n, NULL, "nat_deny", &e), 0);
    assert_int_equal(n, 4);
    const char *msg = rule("44.0.3.4", 5222, deny, n);
    assert_non_null(msg);
    assert_string_equal(msg, "44.0.3.4 is in 44.0.0.0/16 (the container network or nat_deny)");
    assert_non_null(rule("203.1.0.77", 5222, deny, n));
    assert_non_null(rule("9.9.9.9", 5222, deny, n));
    assert_non_null(rule("45.200.0.1", 5222, deny, n));
    assert_non_null(rule("::ffff:9.9.9.9", 5222, deny, n));
    assert_null(rule("9.9.9.8", 5222, deny, n));
    assert_null(rule("44.1.0.1", 5222, deny, n));
    /* A bad entry: a clear error naming the setting (the node does not start). */
    assert_int_equal(xmppdns_deny_add(&deny, &n, "10.0.0.0/8, nonsense", "nat_deny", &e), -1);
    assert_non_null(strstr(e.msg, "nat_deny"));
    free(deny);
}

static void test_the_jid_domain(void **state)
{
    (void)state;
    char d[64];
    err_t e = {0};
    assert_int_equal(xmppdns_domain("alice@example.org", d, sizeof d, &e), 0);
    assert_string_equal(d, "example.org");
    assert_int_equal(xmppdns_domain("alice@example.org/phone", d, sizeof d, &e), 0);
    assert_string_equal(d, "example.org");
    assert_int_equal(xmppdns_domain("x@[::1]/r", d, sizeof d, &e), 0);
    assert_string_equal(d, "::1");
    assert_int_equal(xmppdns_domain("x@", d, sizeof d, &e), -1);
    char long_jid[80];
    snprintf(long_jid, sizeof long_jid, "x@%070d", 0); /* 70 > 63 characters */
    assert_int_equal(xmppdns_domain(long_jid, d, sizeof d, &e), -1);
}

/* A literal domain is judged at once, without DNS. */
static int literal(const char *domain, char *ip, int *port, bool *refused, err_t *e)
{
    xmppdns_net4_t deny = {.addr = htonl(0x2c000000), .len = 8}; /* 44.0.0.0/8 */
    xmppdns_t *r = xmppdns_start(domain, &deny, 1, XMPPDNS_TIMEOUT_MS, e);
    assert_non_null(r);
    int rc = xmppdns_step(r, ip, port, refused, e);
    xmppdns_free(r);
    return rc;
}

static void test_a_literal_domain(void **state)
{
    (void)state;
    char ip[64] = "";
    int port = 0;
    bool refused = false;
    err_t e = {0};
    assert_int_equal(literal("127.0.0.1", ip, &port, &refused, &e), -1);
    assert_true(refused);
    assert_non_null(strstr(e.msg, "127.0.0.1 is a loopback address"));
    assert_int_equal(literal("::1", ip, &port, &refused, &e), -1);
    assert_true(refused);
    assert_int_equal(literal("44.1.2.3", ip, &port, &refused, &e), -1);
    assert_true(refused);
    assert_int_equal(literal("8.8.4.4", ip, &port, &refused, &e), 1);
    assert_false(refused);
    assert_string_equal(ip, "8.8.4.4");
    assert_int_equal(port, 5222);
}

int main(void)
{
    err_t e = {0};
    if (xmppdns_init(&e) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public_addresses_are_allowed),
        cmocka_unit_test(test_what_is_not_public_unicast_is_refused),
        cmocka_unit_test(test_only_the_xmpp_client_ports),
        cmocka_unit_test(test_the_container_network_and_nat_deny),
        cmocka_unit_test(test_the_jid_domain),
        cmocka_unit_test(test_a_literal_domain),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    xmppdns_cleanup();
    return rc;
}
