/* Unit tests for src/common/validate.c: the pure rules of the API contract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "../../src/common/validate.h"

/* A real ed25519 public key line (ssh-keygen output). */
static const char *ED25519 =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINbyOYJgiiQ/Lbw2Fwjq8pLQOrQTPLVsgYzY49ashwSW "
    "kratos@laptop";

static void test_uid_and_ip(void **state)
{
    (void)state;
    char ip[32];
    assert_int_equal(container_uid(1), 30001);
    assert_int_equal(container_uid(9), 30009);
    assert_true(container_ip(1, ip, sizeof ip));
    assert_string_equal(ip, "10.0.0.3");
    assert_true(container_ip(9, ip, sizeof ip)); /* the quickstart's 30009 */
    assert_string_equal(ip, "10.0.0.11");
    assert_true(container_ip(254, ip, sizeof ip)); /* carries into the next octet */
    assert_string_equal(ip, "10.0.1.0");
    assert_true(container_ip(70000, ip, sizeof ip));
    assert_string_equal(ip, "10.1.17.114");
    assert_false(container_ip(0, ip, sizeof ip));
    assert_false(container_ip(0xfffffd, ip, sizeof ip)); /* would be the broadcast */
}

static void test_uid_parsing(void **state)
{
    (void)state;
    assert_int_equal(container_id_from_uid("30009"), 9);
    assert_int_equal(container_id_from_uid("30000"), -1);
    assert_int_equal(container_id_from_uid("29999"), -1);
    assert_int_equal(container_id_of_uid(30009), 9);
    assert_int_equal(container_id_of_uid(30000), -1);
    assert_int_equal(container_id_of_uid(-9223372036854775807LL - 1), -1);
    assert_int_equal(container_id_from_uid("3000x"), -1);
    assert_int_equal(container_id_from_uid("+30001"), -1);
    assert_int_equal(container_id_from_uid(" 30001"), -1);
    assert_int_equal(container_id_from_uid(""), -1);
    assert_int_equal(container_id_from_uid("99999999999999999999999"), -1);
    assert_int_equal(parse_id("17"), 17);
    assert_int_equal(parse_id("0"), -1);
    assert_int_equal(parse_id("-3"), -1);
    assert_int_equal(parse_id("1e3"), -1);
}

static void test_hostname(void **state)
{
    (void)state;
    char h[64];
    container_hostname("changeme", h, sizeof h);
    assert_string_equal(h, "changeme");
    container_hostname("my app_1.example", h, sizeof h);
    assert_string_equal(h, "my-app-1-example");
    /* A character, not a byte, becomes one '-' (as the public platform). */
    container_hostname("caf\xc3\xa9", h, sizeof h);
    assert_string_equal(h, "caf-");
    container_hostname("\xe6\x97\xa5\xf0\x9f\x98\x80x", h, sizeof h); /* 3 and 4 bytes */
    assert_string_equal(h, "--x");
    /* 255 characters, mostly multibyte: 63 characters of [A-Za-z0-9-]. */
    char longname[1024] = "";
    for (int i = 0; i < 255; i++)
        strcat(longname, i % 2 ? "\xc3\xa9" : "a");
    char hh[HOSTNAME_MAX + 1];
    container_hostname(longname, hh, sizeof hh);
    assert_int_equal(strlen(hh), 63);
    assert_int_equal(strspn(hh, "a-"), 63);
    assert_memory_equal(hh, "a-a-", 4);
    container_hostname("Web-01", h, sizeof h);
    assert_string_equal(h, "Web-01");
    char small[4];
    container_hostname("abcdef", small, sizeof small);
    assert_string_equal(small, "abc");
}

static void test_ssh_keys(void **state)
{
    (void)state;
    char why[256];
    assert_true(ssh_key_valid(ED25519, why, sizeof why));
    /* Without a comment. */
    char nocomment[128];
    const char *sp = strrchr(ED25519, ' ');
    memcpy(nocomment, ED25519, (size_t)(sp - ED25519));
    nocomment[sp - ED25519] = '\0';
    assert_true(ssh_key_valid(nocomment, why, sizeof why));
    /* The quickstart's placeholder is not a key. */
    assert_false(ssh_key_valid("ssh-rsa .........", why, sizeof why));
    assert_non_null(strstr(why, "ssh-rsa"));
    assert_false(ssh_key_valid("", why, sizeof why));
    assert_false(ssh_key_valid("ssh-foo AAAA", why, sizeof why));
    assert_false(ssh_key_valid("ssh-ed25519", why, sizeof why));
    /* authorized_keys lines: sshd's options before the type are kept. */
    char line[1024];
    snprintf(line, sizeof line,
             "from=\"10.0.0.0/8,!10.1.2.3\",no-pty,command=\"echo \\\"hi there\\\"\","
             "RESTRICT,environment=\"A=b c\",permitopen=\"h:80\",no-port-forwarding %s",
             ED25519);
    assert_true(ssh_key_valid(line, why, sizeof why));
    snprintf(line, sizeof line, "restrict\t%s", ED25519);
    assert_true(ssh_key_valid(line, why, sizeof why));
    /* Every flag sshd takes, also negated; the values sshd parses. */
    snprintf(line, sizeof line,
             "touch-required,no-touch-required,verify-required,no-verify-required,"
             "tunnel=\"0\",expiry-time=\"20301231\",expiry-time=\"203012312359Z\" %s",
             ED25519);
    assert_true(ssh_key_valid(line, why, sizeof why));
    const char *unreadable[] = {"tunnel=\"tun0\"", "tunnel=\"\"", "expiry-time=\"soon\"",
                                "expiry-time=\"2030123\"", "expiry-time=\"20301231235\""};
    for (size_t i = 0; i < sizeof unreadable / sizeof unreadable[0]; i++) {
        snprintf(line, sizeof line, "%s %s", unreadable[i], ED25519);
        assert_false(ssh_key_valid(line, why, sizeof why));
        assert_non_null(strstr(why, "sshd cannot read"));
    }
    /* An unknown option, a flag given a value, a value without quotes. */
    snprintf(line, sizeof line, "no-pty,frobnicate %s", ED25519);
    assert_false(ssh_key_valid(line, why, sizeof why));
    assert_non_null(strstr(why, "'frobnicate'"));
    snprintf(line, sizeof line, "no-pty=\"1\" %s", ED25519);
    assert_false(ssh_key_valid(line, why, sizeof why));
    snprintf(line, sizeof line, "from=10.0.0.1 %s", ED25519);
    assert_false(ssh_key_valid(line, why, sizeof why));
    assert_non_null(strstr(why, "quoted"));
    /* An unterminated quote, and a quote ended by \" only. */
    snprintf(line, sizeof line, "command=\"ls %s", ED25519);
    assert_false(ssh_key_valid(line, why, sizeof why));
    assert_non_null(strstr(why, "unterminated"));
    snprintf(line, sizeof line, "command=\"ls\\\" %s", ED25519);
    assert_false(ssh_key_valid(line, why, sizeof why));
    /* Options with nothing after them, or a space inside the list. */
    assert_false(ssh_key_valid("no-pty", why, sizeof why));
    snprintf(line, sizeof line, "no-pty, restrict %s", ED25519);
    assert_false(ssh_key_valid(line, why, sizeof why));
    /* Two keys on one line: the second would be the first's comment. */
    snprintf(line, sizeof line, "%s %s", ED25519, ED25519);
    assert_false(ssh_key_valid(line, why, sizeof why));
    assert_non_null(strstr(why, "second key"));
    /* A second line smuggled in. */
    char two[512];
    snprintf(two, sizeof two, "%s\n%s", ED25519, ED25519);
    assert_false(ssh_key_valid(two, why, sizeof why));
    assert_non_null(strstr(why, "single line"));
    /* Type and blob disagree. */
    char liar[256];
    snprintf(liar, sizeof liar, "ssh-rsa %s", strchr(ED25519, ' ') + 1);
    assert_false(ssh_key_valid(liar, why, sizeof why));
}

static void test_domain_names(void **state)
{
    (void)state;
    char out[256], why[256];
    assert_true(domain_name_normalize("MyNewDomain.ORG", out, sizeof out, why, sizeof why));
    assert_string_equal(out, "mynewdomain.org");
    assert_true(domain_name_normalize("www.example.org.", out, sizeof out, why, sizeof why));
    assert_string_equal(out, "www.example.org");
    assert_true(domain_name_normalize(".example.org", out, sizeof out, why, sizeof why));
    assert_string_equal(out, ".example.org");
    assert_true(domain_name_normalize("a-b.x1.io", out, sizeof out, why, sizeof why));
    assert_false(domain_name_normalize("localhost", out, sizeof out, why, sizeof why));
    assert_false(domain_name_normalize("", out, sizeof out, why, sizeof why));
    assert_false(domain_name_normalize(".", out, sizeof out, why, sizeof why));
    assert_false(domain_name_normalize("a..b.org", out, sizeof out, why, sizeof why));
    assert_false(domain_name_normalize("-a.org", out, sizeof out, why, sizeof why));
    assert_false(domain_name_normalize("a-.org", out, sizeof out, why, sizeof why));
    assert_false(domain_name_normalize("a_b.org", out, sizeof out, why, sizeof why));
    assert_false(domain_name_normalize("../etc/passwd", out, sizeof out, why, sizeof why));
    assert_false(domain_name_normalize("a b.org", out, sizeof out, why, sizeof why));
    /* A non-ASCII byte is named by value, never echoed half-way into a
     * UTF-8 sequence (the reason is sent as JSON). */
    assert_false(domain_name_normalize("caf\xc3\xa9.org", out, sizeof out, why, sizeof why));
    assert_non_null(strstr(why, "0xc3"));
    assert_null(strchr(why, '\xc3'));
    assert_false(domain_name_normalize("a_b.org", out, sizeof out, why, sizeof why));
    assert_non_null(strstr(why, "'_'"));
    char label64[80];
    memset(label64, 'a', 64);
    strcpy(label64 + 64, ".org");
    assert_false(domain_name_normalize(label64, out, sizeof out, why, sizeof why));
    assert_non_null(strstr(why, "63"));
}

/* The alarm service keys go into a request header or form on the node:
 * only their alphabet; jid_destinations a short list of jids. */
static void test_alarm_fields(void **state)
{
    (void)state;
    assert_true(alarm_token_valid("azGvN1Xmy8rKQWCx2hqJ3ptEb5cT7d")); /* a Pushover key */
    assert_true(alarm_token_valid("o.AbC-12_x"));                     /* a Pushbullet token */
    assert_true(alarm_token_valid("bike"));
    assert_false(alarm_token_valid(""));
    assert_false(alarm_token_valid("tok\r\nX-Injected: 1"));
    assert_false(alarm_token_valid("a b"));
    assert_false(alarm_token_valid("a:b"));
    assert_false(alarm_token_valid("caf\xc3\xa9"));
    char t[ALARM_TOKEN_MAX + 2];
    memset(t, 'a', ALARM_TOKEN_MAX);
    t[ALARM_TOKEN_MAX] = '\0';
    assert_true(alarm_token_valid(t));
    strcpy(t + ALARM_TOKEN_MAX, "a");
    assert_false(alarm_token_valid(t));

    assert_true(str_has_control("a\nb"));
    assert_true(str_has_control("a\x7f"));
    assert_false(str_has_control("caf\xc3\xa9 ok"));

    char why[256];
    assert_true(jid_destinations_valid("", why, sizeof why));
    assert_true(jid_destinations_valid("a@b.c", why, sizeof why));
    assert_true(jid_destinations_valid("a@b.c, d@e.f/phone,g.h", why, sizeof why));
    assert_false(jid_destinations_valid("a@b.c\r\n<x/>", why, sizeof why));
    assert_non_null(strstr(why, "control"));
    const char *bad[] = {"@b.c", "a@", "a@b@c", "a@b.c/", "a@<b>", "a@.b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_false(jid_destinations_valid(bad[i], why, sizeof why));
        assert_non_null(strstr(why, "jid_destinations"));
    }
    char list[256] = "";
    for (int i = 0; i < JID_DESTINATIONS_MAX; i++)
        strcat(list, "a@b.c,");
    assert_true(jid_destinations_valid(list, why, sizeof why));
    strcat(list, "x@y.z");
    assert_false(jid_destinations_valid(list, why, sizeof why));
    assert_non_null(strstr(why, "at most"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alarm_fields),
        cmocka_unit_test(test_uid_and_ip),   cmocka_unit_test(test_uid_parsing),
        cmocka_unit_test(test_hostname),     cmocka_unit_test(test_ssh_keys),
        cmocka_unit_test(test_domain_names),
    };
    return cmocka_run_group_tests_name("validate", tests, NULL, NULL);
}
