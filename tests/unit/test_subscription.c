/* Unit tests for the subscription gate's policy (src/node/subscription.c):
 * packets built exactly as uWSGI 2.0 builds them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "subscription_packet.h"

static int check(const pkt_t *p, unsigned uid, char *why)
{
    subscription_t s;
    return subscription_check(p->b, p->len, uid, &s, why, 512);
}

static void own_run_socket_is_allowed(void **state)
{
    (void)state;
    char why[512] = "";
    pkt_t p = packet(0, "example.org", "/containers/30001/run/example.org_app.ini.socket");
    subscription_t s;
    assert_int_equal(subscription_check(p.b, p.len, 30001, &s, why, sizeof why), 0);
    assert_string_equal(s.key, "example.org");
    assert_string_equal(s.address, "/containers/30001/run/example.org_app.ini.socket");
    assert_false(s.unsubscribe);
    p = packet(1, ".example.org", "/containers/30001/run/.example.org_w.ini.socket");
    assert_int_equal(subscription_check(p.b, p.len, 30001, &s, why, sizeof why), 0);
    assert_true(s.unsubscribe);
}

static void other_containers_socket_is_refused(void **state)
{
    (void)state;
    char why[512] = "";
    pkt_t p = packet(0, "example.org", "/containers/30002/run/app.socket");
    assert_int_equal(check(&p, 30001, why), -1);
    assert_non_null(strstr(why, "/containers/30001/run/"));
    /* A longer uid sharing the prefix is another container too. */
    p = packet(0, "example.org", "/containers/300011/run/app.socket");
    assert_int_equal(check(&p, 30001, why), -1);
}

static void tcp_and_odd_addresses_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "127.0.0.1:3031",
        "10.0.0.5:80",
        "@abstract",
        "/var/run/postgresql/.s.PGSQL.5432",
        "/containers/30001/run/../../30002/run/app.socket",
        "/containers/30001/run/sub/app.socket",
        "/containers/30001/run/..",
        "/containers/30001/run/.",
        "/containers/30001/run/",
        "/containers/30001/run/a:80",
        "/containers/30001/run/a,5",
        "/containers/30001/etc/app.socket",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[512] = "";
        pkt_t p = packet(0, "example.org", bad[i]);
        if (check(&p, 30001, why) != -1)
            fail_msg("address \"%s\" was allowed", bad[i]);
        assert_true(why[0] != '\0');
    }
}

static void host_uids_are_refused(void **state)
{
    (void)state;
    char why[512] = "";
    pkt_t p = packet(0, "example.org", "/containers/0/run/app.socket");
    assert_int_equal(check(&p, 0, why), -1);
    p = packet(0, "example.org", "/containers/1000/run/app.socket");
    assert_int_equal(check(&p, 1000, why), -1);
}

static void malformed_packets_are_refused(void **state)
{
    (void)state;
    char why[512] = "";
    pkt_t p = packet(0, "example.org", "/containers/30001/run/a.socket");
    pkt_t q = p;
    q.b[0] = 0; /* not a subscription */
    assert_int_equal(check(&q, 30001, why), -1);
    q = p;
    q.b[1]++; /* size does not match */
    assert_int_equal(check(&q, 30001, why), -1);
    q = p;
    q.b[3] = 7; /* unknown command */
    assert_int_equal(check(&q, 30001, why), -1);
    q = p;
    q.len -= 3; /* truncated last value */
    q.b[1] = (unsigned char)((q.len - 4) & 0xff);
    q.b[2] = (unsigned char)((q.len - 4) >> 8);
    assert_int_equal(check(&q, 30001, why), -1);
    assert_non_null(strstr(why, "truncated"));
    q = packet(0, NULL, "/containers/30001/run/a.socket"); /* no key */
    assert_int_equal(check(&q, 30001, why), -1);
    q = packet(0, "example.org", NULL); /* no address */
    assert_int_equal(check(&q, 30001, why), -1);
    assert_int_equal(subscription_check(p.b, 3, 30001, &(subscription_t){0}, why, sizeof why), -1);
}

static void repeated_or_rooted_fields_are_refused(void **state)
{
    (void)state;
    char why[512] = "";
    /* A second address after an allowed one must not slip through. */
    pkt_t p = packet(0, "example.org", "/containers/30001/run/a.socket");
    item(&p, "address", "127.0.0.1:22");
    p.b[1] = (unsigned char)((p.len - 4) & 0xff);
    p.b[2] = (unsigned char)((p.len - 4) >> 8);
    assert_int_equal(check(&p, 30001, why), -1);
    /* The router would open or send to these. */
    const char *rooted[] = {"notify", "sni_key", "sni_crt", "sni_ca"};
    for (size_t i = 0; i < 4; i++) {
        p = packet(0, "example.org", "/containers/30001/run/a.socket");
        item(&p, rooted[i], "/etc/shadow");
        p.b[1] = (unsigned char)((p.len - 4) & 0xff);
        p.b[2] = (unsigned char)((p.len - 4) >> 8);
        assert_int_equal(check(&p, 30001, why), -1);
        assert_non_null(strstr(why, rooted[i]));
    }
}

/* An ssl-domain packet of container 30001 for `key`. */
static pkt_t tls_packet(int cmd, const char *key, const char *k, const char *c, const char *ca)
{
    pkt_t p = packet(cmd, key, "/containers/30001/run/a.socket");
    if (k)
        add_item(&p, "sni_key", k);
    if (c)
        add_item(&p, "sni_crt", c);
    if (ca)
        add_item(&p, "sni_ca", ca);
    return p;
}

static void home_certificate_files_are_allowed(void **state)
{
    (void)state;
    char why[512] = "";
    subscription_t s;
    pkt_t p = tls_packet(0, "mynewdomain.org", "/containers/30001/foobar.key",
                         "/containers/30001/ssl/foobar.crt", "!/containers/30001/.ca/ca.crt");
    assert_int_equal(subscription_check(p.b, p.len, 30001, &s, why, sizeof why), 0);
    assert_true(s.tls.any);
    assert_false(s.tls.acme);
    assert_true(s.tls.ca_required);
    assert_string_equal(s.tls.ca, "/containers/30001/.ca/ca.crt");
    assert_string_equal(s.tls.crt + s.tls.home_len, "ssl/foobar.crt");
    p = tls_packet(0, "mynewdomain.org", "/containers/30001/foobar.key",
                   "/containers/30001/foobar.crt", "/containers/30001/ca.crt");
    assert_int_equal(subscription_check(p.b, p.len, 30001, &s, why, sizeof why), 0);
    assert_false(s.tls.ca_required);
    p = packet(0, "mynewdomain.org", "/containers/30001/run/a.socket");
    assert_int_equal(subscription_check(p.b, p.len, 30001, &s, why, sizeof why), 0);
    assert_false(s.tls.any);
}

static void certificate_paths_outside_the_home_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "/etc/shadow",
        "/containers/30002/foobar.key",     /* another container's */
        "/containers/300011/foobar.key",    /* a uid sharing the prefix */
        "/containers/30001/run/foobar.key", /* the sockets directory */
        "/containers/30001/run",
        "/containers/30001/../30002/foobar.key",
        "/containers/30001/ssl/../../30002/foobar.key",
        "/containers/30001/./foobar.key",
        "/containers/30001//foobar.key",
        "/containers/30001/ssl/",
        "/containers/30001/",
        "/containers/30001",
        "/run/imperium-router/keys/example.org.pem",
        "/run/imperium-router/acme/certs/other.org.key", /* another name's ACME key */
        "relative/foobar.key",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char why[512] = "";
        pkt_t p = tls_packet(0, "mynewdomain.org", bad[i], "/containers/30001/foobar.crt", NULL);
        if (check(&p, 30001, why) != -1)
            fail_msg("sni_key \"%s\" was allowed", bad[i]);
        assert_non_null(strstr(why, "sni_key"));
        p = tls_packet(0, "mynewdomain.org", "/containers/30001/foobar.key",
                       "/containers/30001/foobar.crt", bad[i]);
        if (check(&p, 30001, why) != -1)
            fail_msg("sni_ca \"%s\" was allowed", bad[i]);
        assert_non_null(strstr(why, "sni_ca"));
    }
    char why[512] = "";
    pkt_t p = tls_packet(0, "mynewdomain.org", "/containers/30001/run/a.key",
                         "/containers/30001/a.crt", NULL);
    assert_int_equal(check(&p, 30001, why), -1);
    assert_string_equal(why, "sni_key /containers/30001/run/a.key: a certificate file must be in "
                             "your home, /containers/30001/<path> ($(HOME)/...), without '.' or "
                             "'..' components and not under run/");
}

static void a_pair_is_whole(void **state)
{
    (void)state;
    char why[512] = "";
    pkt_t p = tls_packet(0, "a.org", "/containers/30001/a.key", NULL, NULL);
    assert_int_equal(check(&p, 30001, why), -1);
    assert_string_equal(why, "sni_key and sni_crt go together (ssl-domain = name key crt)");
    p = tls_packet(0, "a.org", NULL, NULL, "!/containers/30001/ca.crt");
    assert_int_equal(check(&p, 30001, why), -1);
    assert_non_null(strstr(why, "sni_ca needs sni_key and sni_crt"));
    p = tls_packet(0, "a.org", "/containers/30001/a.key", "/containers/30001/a.crt", "!");
    assert_int_equal(check(&p, 30001, why), -1);
    p = tls_packet(0, "a.org", "/containers/30001/a.key", "/containers/30001/a.crt", NULL);
    add_item(&p, "sni_crt", "/containers/30001/b.crt");
    assert_int_equal(check(&p, 30001, why), -1);
    assert_non_null(strstr(why, "repeated sni_crt"));
}

static void the_acme_pair_of_the_key_is_allowed(void **state)
{
    (void)state;
    char why[512] = "";
    subscription_t s;
    pkt_t p =
        tls_packet(0, "auto.example.org", "/run/imperium-router/acme/certs/auto.example.org.key",
                   "/run/imperium-router/acme/certs/auto.example.org.crt", NULL);
    assert_int_equal(subscription_check(p.b, p.len, 30001, &s, why, sizeof why), 0);
    assert_true(s.tls.any && s.tls.acme);
    /* Another name's pair, crossed files, a CA, a key that is a path. */
    p = tls_packet(0, "auto.example.org", "/run/imperium-router/acme/certs/other.org.key",
                   "/run/imperium-router/acme/certs/other.org.crt", NULL);
    assert_int_equal(check(&p, 30001, why), -1);
    p = tls_packet(0, "auto.example.org", "/run/imperium-router/acme/certs/auto.example.org.crt",
                   "/run/imperium-router/acme/certs/auto.example.org.key", NULL);
    assert_int_equal(check(&p, 30001, why), -1);
    p = tls_packet(0, "auto.example.org", "/run/imperium-router/acme/certs/auto.example.org.key",
                   "/run/imperium-router/acme/certs/auto.example.org.crt",
                   "/containers/30001/ca.crt");
    assert_int_equal(check(&p, 30001, why), -1);
    assert_non_null(strstr(why, "auto-ssl-domain"));
    p = tls_packet(0, "../../keys/x", "/run/imperium-router/acme/certs/../../keys/x.key",
                   "/run/imperium-router/acme/certs/../../keys/x.crt", NULL);
    assert_int_equal(check(&p, 30001, why), -1);
}

/* The cluster socket: the node's own endpoint is the one TCP address. */
static void cluster_socket_allows_only_the_nodes_endpoint(void **state)
{
    (void)state;
    char why[512];
    subscription_t s;
    const char *ep = "203.0.113.2:3032";
    pkt_t p = packet(0, "example.org", "203.0.113.2:3032");
    assert_int_equal(subscription_check_cluster(p.b, p.len, 30001, ep, &s, why, sizeof why), 0);
    assert_true(s.tcp);
    /* The same packet on the http socket stays refused. */
    assert_int_equal(subscription_check(p.b, p.len, 30001, &s, why, sizeof why), -1);
    p = packet(1, "example.org", "203.0.113.2:3032");
    assert_int_equal(subscription_check_cluster(p.b, p.len, 30001, ep, &s, why, sizeof why), 0);
    assert_true(s.unsubscribe && s.tcp);
    p = packet(0, "example.org", "/containers/30001/run/a.socket");
    assert_int_equal(subscription_check_cluster(p.b, p.len, 30001, ep, &s, why, sizeof why), 0);
    assert_false(s.tcp);
    const char *bad[] = {"203.0.113.3:3032", "203.0.113.2:3033", "203.0.113.2:30320",
                         "127.0.0.1:3032", "/containers/30002/run/a.socket", "203.0.113.2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = packet(0, "example.org", bad[i]);
        assert_int_equal(subscription_check_cluster(p.b, p.len, 30001, ep, &s, why, sizeof why),
                         -1);
        assert_false(s.tcp);
    }
    p = packet(0, "example.org", "203.0.113.3:3032");
    assert_int_equal(subscription_check_cluster(p.b, p.len, 30001, ep, &s, why, sizeof why), -1);
    assert_non_null(strstr(why, "only name this node's cluster endpoint 203.0.113.2:3032"));
    /* In no legion: the endpoint is none (IMPERIUM_CLUSTER none:0). */
    p = packet(0, "example.org", "none:0");
    assert_int_equal(subscription_check_cluster(p.b, p.len, 30001, "", &s, why, sizeof why), -1);
    assert_string_equal(why, "this server is in no legion: example.org is served by this node "
                             "only");
    assert_int_equal(subscription_check_cluster(p.b, p.len, 30001, NULL, &s, why, sizeof why),
                     -1);
    p = packet(0, "example.org", "203.0.113.2:3032");
    assert_int_equal(subscription_check_cluster(p.b, p.len, 1000, ep, &s, why, sizeof why), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(own_run_socket_is_allowed),
        cmocka_unit_test(other_containers_socket_is_refused),
        cmocka_unit_test(tcp_and_odd_addresses_are_refused),
        cmocka_unit_test(host_uids_are_refused),
        cmocka_unit_test(malformed_packets_are_refused),
        cmocka_unit_test(repeated_or_rooted_fields_are_refused),
        cmocka_unit_test(home_certificate_files_are_allowed),
        cmocka_unit_test(certificate_paths_outside_the_home_are_refused),
        cmocka_unit_test(a_pair_is_whole),
        cmocka_unit_test(the_acme_pair_of_the_key_is_allowed),
        cmocka_unit_test(cluster_socket_allows_only_the_nodes_endpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
