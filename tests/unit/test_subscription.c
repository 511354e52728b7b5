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
    /* The router would open or send to these as root. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(own_run_socket_is_allowed),
        cmocka_unit_test(other_containers_socket_is_refused),
        cmocka_unit_test(tcp_and_odd_addresses_are_refused),
        cmocka_unit_test(host_uids_are_refused),
        cmocka_unit_test(malformed_packets_are_refused),
        cmocka_unit_test(repeated_or_rooted_fields_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
