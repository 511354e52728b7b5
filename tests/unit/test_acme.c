/* test_acme.c - automatic HTTPS (src/node/acme.c): the names it asks for,
 * who may ask, when it renews, the hook's arguments and files, uacme's
 * reasons, and the thread end to end with a stand-in uacme (a script that
 * answers as uacme would; the real one against pebble is
 * tests/e2e/test_acme.py). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/common/clock.h"
#include "../../src/node/acme.h"

#define TMPDIR_FIXTURE_NAME "acme"
#include "tmpdir_fixture.h"

static void test_names(void **state)
{
    (void)state;
    char why[512];
    assert_true(acme_name_ok("example.org", why, sizeof why));
    assert_true(acme_name_ok("a-1.b.example.org", why, sizeof why));
    assert_false(acme_name_ok(".example.org", why, sizeof why));
    assert_non_null(strstr(why, "wildcard"));
    assert_false(acme_name_ok("*.example.org", why, sizeof why));
    assert_non_null(strstr(why, "wildcard"));
    const char *bad[] = {"", "localhost", "Example.org", "a..b", "a.b.", "a b.org", "a/b.org",
                         "a_b.org", "x/../y.org"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        assert_false(acme_name_ok(bad[i], why, sizeof why));
        assert_non_null(strstr(why, "not a domain name"));
    }
    assert_false(acme_name_ok("../x.org", why, sizeof why));
    char longname[300];
    memset(longname, 'a', sizeof longname);
    memcpy(longname + 250, ".org", 5);
    assert_false(acme_name_ok(longname, why, sizeof why));
}

static void test_owners(void **state)
{
    (void)state;
    spec_domain_t domains[] = {{.name = "example.org", .customer = "cust-a"},
                               {.name = ".wild.org", .customer = "cust-a"},
                               {.name = "other.org", .customer = "cust-b"},
                               {.name = "orphan.org", .customer = NULL}};
    spec_known_t known[] = {{.uid = 30001, .customer = "cust-a"},
                            {.uid = 30002, .customer = "cust-b"}};
    spec_state_t s = {.domains = domains, .n_domains = 4};
    s.server.all_containers = known;
    s.server.n_all_containers = 2;
    char why[512];
    assert_true(acme_owner_ok(&s, "example.org", 30001, why, sizeof why));
    assert_true(acme_owner_ok(&s, "a.b.wild.org", 30001, why, sizeof why));
    assert_true(acme_owner_ok(&s, "other.org", 30002, why, sizeof why));
    assert_false(acme_owner_ok(&s, "other.org", 30001, why, sizeof why));
    assert_non_null(strstr(why, "another customer"));
    assert_false(acme_owner_ok(&s, "example.org", 30002, why, sizeof why));
    assert_false(acme_owner_ok(&s, "orphan.org", 30001, why, sizeof why));
    assert_false(acme_owner_ok(&s, "nobody.org", 30001, why, sizeof why));
    assert_non_null(strstr(why, "not one of your domains"));
    /* A container the state does not know owns nothing. */
    assert_false(acme_owner_ok(&s, "example.org", 30009, why, sizeof why));
    /* Without all_containers (an older API): the startable containers say it. */
    spec_container_t c = {.uid = 30003, .customer = {.uuid = "cust-b"}};
    spec_state_t s2 = {.domains = domains, .n_domains = 4, .containers = &c, .n_containers = 1};
    assert_true(acme_owner_ok(&s2, "other.org", 30003, why, sizeof why));
    assert_false(acme_owner_ok(&s2, "example.org", 30003, why, sizeof why));
}

static void test_renew_at(void **state)
{
    (void)state;
    time_t t = 2000000000;
    assert_int_equal(acme_renew_at(t, 30), t - 30 * 86400);
    assert_int_equal(acme_renew_at(t, 1), t - 86400);
}

#define TOKEN "8bsSrXYGlbdfn0dKwiACZf3G5UOXyinMsl5EQR6xbeU"
#define AUTH TOKEN ".n4Z-0yj2aC5cUd_8i8Yp3kXJ1s4Q3pWv0DkL2q5tT7w"

static int check(const char *method, const char *type, const char *ident, const char *token,
                 const char *auth, err_t *e)
{
    char *argv[] = {"imperium-acme-hook", (char *)method, (char *)type, (char *)ident,
                    (char *)token, (char *)auth, NULL};
    err_clear(e);
    return acme_hook_check(6, argv, e);
}

static void test_hook_arguments(void **state)
{
    (void)state;
    err_t e;
    assert_int_equal(check("begin", "http-01", "example.org", TOKEN, AUTH, &e), 0);
    assert_int_equal(check("done", "http-01", "example.org", TOKEN, AUTH, &e), 0);
    assert_int_equal(check("failed", "http-01", "example.org", TOKEN, AUTH, &e), 0);
    assert_int_equal(check("begin", "tls-alpn-01", "example.org", TOKEN, AUTH, &e), -1);
    assert_non_null(strstr(e.msg, "only http-01"));
    assert_int_equal(check("begin", "dns-01", "example.org", TOKEN, AUTH, &e), -1);
    assert_int_equal(check("remove", "http-01", "example.org", TOKEN, AUTH, &e), -1);
    assert_non_null(strstr(e.msg, "unknown method"));
    /* A token is a file name in the challenges directory: nothing else. */
    assert_int_equal(check("begin", "http-01", "example.org", "../../etc/x", "../../etc/x.a", &e),
                     -1);
    assert_non_null(strstr(e.msg, "token refused"));
    assert_int_equal(check("begin", "http-01", "example.org", ".hidden", ".hidden.a", &e), -1);
    assert_int_equal(check("begin", "http-01", "example.org", "", ".a", &e), -1);
    char long_token[200];
    memset(long_token, 'a', sizeof long_token - 1);
    long_token[sizeof long_token - 1] = '\0';
    assert_int_equal(check("begin", "http-01", "example.org", long_token, long_token, &e), -1);
    /* The content: token '.' thumbprint, nothing more. */
    assert_int_equal(check("begin", "http-01", "example.org", TOKEN, "other.abc", &e), -1);
    assert_non_null(strstr(e.msg, "key authorization"));
    assert_int_equal(check("begin", "http-01", "example.org", TOKEN, TOKEN, &e), -1);
    assert_int_equal(check("begin", "http-01", "example.org", TOKEN, TOKEN ".", &e), -1);
    assert_int_equal(check("begin", "http-01", "example.org", TOKEN, TOKEN ".a\nb", &e), -1);
    assert_int_equal(check("begin", "http-01", "*.example.org", TOKEN, AUTH, &e), -1);
    char *few[] = {"imperium-acme-hook", "begin", "http-01", NULL};
    err_clear(&e);
    assert_int_equal(acme_hook_check(3, few, &e), -1);
    assert_non_null(strstr(e.msg, "usage"));
}

static void test_hook_files(void **state)
{
    (void)state;
    int dfd = open(base, O_RDONLY | O_DIRECTORY);
    assert_true(dfd >= 0);
    assert_int_equal(fchmod(dfd, 0710), 0);
    char *begin[] = {"h", "begin", "http-01", "example.org", TOKEN, AUTH, NULL};
    err_t e;
    err_clear(&e);
    assert_int_equal(acme_hook_run(dfd, 6, begin, &e), 0);
    char path[256], buf[256];
    snprintf(path, sizeof path, "%s/%s", base, TOKEN);
    struct stat st, dst;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(fstat(dfd, &dst), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_gid, dst.st_gid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    assert_string_equal(buf, AUTH);
    /* Refused arguments write nothing. */
    char *evil[] = {"h", "begin", "http-01", "example.org", "x/y", "x/y.a", NULL};
    err_clear(&e);
    assert_int_equal(acme_hook_run(dfd, 6, evil, &e), -1);
    assert_int_equal(faccessat(dfd, "x", F_OK, 0), -1);
    char *done[] = {"h", "done", "http-01", "example.org", TOKEN, AUTH, NULL};
    err_clear(&e);
    assert_int_equal(acme_hook_run(dfd, 6, done, &e), 0);
    assert_int_equal(stat(path, &st), -1);
    /* failed after done (or a begin that never wrote): nothing to remove is fine. */
    char *failed[] = {"h", "failed", "http-01", "example.org", TOKEN, AUTH, NULL};
    err_clear(&e);
    assert_int_equal(acme_hook_run(dfd, 6, failed, &e), 0);
    close(dfd);
}

static void test_reason(void **state)
{
    (void)state;
    char why[256];
    acme_reason("uacme: curl_get: GET https://x/dir failed: SSL peer certificate\n"
                "uacme: curl_get: waiting 5 seconds before retrying\n"
                "uacme: failed to fetch directory at https://x/dir\n",
                why, sizeof why);
    assert_string_equal(why, "failed to fetch directory at https://x/dir");
    acme_reason("uacme: challenge failed\nimperium-acme-hook: token refused\n", why, sizeof why);
    assert_string_equal(why, "challenge failed");
    acme_reason("something else\n\n", why, sizeof why);
    assert_string_equal(why, "something else");
    acme_reason("", why, sizeof why);
    assert_string_equal(why, "");
}

/* ---- the thread, with a stand-in uacme ------------------------------------- */

/* As uacme: `new` answers; `issue NAME` writes a certificate for NAME
 * (self-signed, 90 days) where uacme would, unless NAME starts with
 * "fail", which fails as uacme says it.  Each call is counted in calls. */
static const char fake_uacme[] =
    "#!/bin/sh\n"
    "conf=$2; last=''; for a; do last=$a; done\n"
    "echo \"$*\" >> \"$conf/../calls\"\n"
    "case \"$*\" in *' new'*) cat /etc/ssl/certs/ca-certificates.crt >> \"$conf/../calls\"; "
    "ls /etc/ssl/certs >> \"$conf/../calls\"; exit 0;; esac\n"
    "case $last in fail*) echo 'uacme: failed to fetch directory at https://x/dir' >&2; exit 2;; esac\n"
    "mkdir -p \"$conf/$last\" \"$conf/private/$last\"\n"
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 "
    "-subj \"/CN=$last\" -addext \"subjectAltName=DNS:$last\" "
    "-keyout \"$conf/private/$last/key.pem\" -out \"$conf/$last/cert.pem\" 2>/dev/null\n";

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65536);
    if (buf)
        fread(buf, 1, 65535, f);
    fclose(f);
    return buf;
}

/* The container's logs/router.log holds `text` within 20 s. */
static bool log_says(const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/homes/30001/logs/router.log", base);
    for (int i = 0; i < 200; i++) {
        char *log = slurp(path);
        bool found = log && strstr(log, text);
        free(log);
        if (found)
            return true;
        sleep_ms(100);
    }
    return false;
}

static int count_calls(const char *what)
{
    char path[256];
    snprintf(path, sizeof path, "%s/router/acme/calls", base);
    char *calls = slurp(path);
    int n = 0;
    for (const char *p = calls; p && (p = strstr(p, what)); p++)
        n++;
    free(calls);
    return n;
}

/* <base>/router (the router's directory) and <base>/homes/30001/logs, the
 * container's (given to it when we are root). */
static void make_dirs(char dir[128], char homes[128])
{
    char home[160], logs[200];
    snprintf(dir, 128, "%s/router", base);
    snprintf(homes, 128, "%s/homes", base);
    snprintf(home, sizeof home, "%s/30001", homes);
    snprintf(logs, sizeof logs, "%s/logs", home);
    assert_int_equal(mkdir(dir, 0710), 0);
    assert_int_equal(mkdir(homes, 0755), 0);
    assert_int_equal(mkdir(home, 0755), 0);
    assert_int_equal(mkdir(logs, 0755), 0);
    if (geteuid() == 0) {
        assert_int_equal(chown(home, 30001, 30001), 0);
        assert_int_equal(chown(logs, 30001, 30001), 0);
    }
}

static void test_thread(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* uacme runs in a mount namespace of its own */
    char dir[128], homes[128], script[160];
    make_dirs(dir, homes);
    snprintf(script, sizeof script, "%s/uacme", base);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fputs(fake_uacme, f);
    fclose(f);
    assert_int_equal(chmod(script, 0755), 0);

    char bundle[160];
    snprintf(bundle, sizeof bundle, "%s/bundle.pem", base);
    f = fopen(bundle, "w");
    assert_non_null(f);
    fputs("TEST BUNDLE\n", f);
    fclose(f);
    acme_opts_t o = {.router_dir = dir, .containers_dir = homes,
                     .directory = "https://acme.test/dir", .ca_bundle = bundle,
                     .renew_days = 30, .retry_s = 1, .router_gid = 0, .uacme = script,
                     .hook = "/bin/false"};
    err_t e;
    err_clear(&e);
    acme_t *a = acme_start(&o, &e);
    assert_non_null(a);
    spec_domain_t domains[] = {{.name = "good.test", .customer = "cust-a"},
                               {.name = "failing.test", .customer = "cust-a"},
                               {.name = "theirs.test", .customer = "cust-b"}};
    spec_known_t known[] = {{.uid = 30001, .customer = "cust-a"}};
    spec_state_t s = {.domains = domains, .n_domains = 3};
    s.server.all_containers = known;
    s.server.n_all_containers = 1;
    acme_set_state(a, &s);

    char why[512];
    assert_true(acme_want(a, "good.test", 30001, why, sizeof why));
    assert_true(log_says("certificate for good.test obtained from https://acme.test/dir, "
                         "valid until "));
    char key[256];
    snprintf(key, sizeof key, "%s/acme/certs/good.test.key", dir);
    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_uid, 0);
    char crt[256];
    snprintf(crt, sizeof crt, "%s/acme/certs/good.test.crt", dir);
    assert_int_equal(stat(crt, &st), 0);
    snprintf(key, sizeof key, "%s/acme/state", dir);
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);

    assert_true(acme_want(a, "failing.test", 30001, why, sizeof why));
    assert_true(log_says("certificate for failing.test could not be obtained from "
                         "https://acme.test/dir: failed to fetch directory at https://x/dir; "
                         "retried in 1 s"));
    /* Refused at once (the gate refuses the packet with the reason). */
    assert_false(acme_want(a, ".good.test", 30001, why, sizeof why));
    assert_non_null(strstr(why, "a wildcard cannot be proven"));
    assert_false(acme_want(a, "theirs.test", 30001, why, sizeof why));
    assert_non_null(strstr(why, "the domain theirs.test belongs to another customer"));
    /* Another customer asking for failing.test changes nothing of its
     * record (its retry delay). */
    assert_false(acme_want(a, "failing.test", 30002, why, sizeof why));
    /* Failures are retried (retry_s = 1), each delay twice the last;
     * refusals never reach uacme, and a certificate far from its renewal
     * is not asked for again. */
    assert_true(log_says("retried in 2 s"));
    sleep_ms(500);
    assert_true(acme_want(a, "good.test", 30001, why, sizeof why));
    assert_true(acme_want(a, "failing.test", 30001, why, sizeof why));
    assert_true(count_calls("issue failing.test") >= 2);
    assert_int_equal(count_calls("issue good.test"), 1);
    assert_int_equal(count_calls("theirs.test"), 0);
    assert_int_equal(count_calls(" new"), 1);
    /* uacme saw the bundle as the system's, and no other CA. */
    assert_int_equal(count_calls("TEST BUNDLE"), 1);
    assert_int_equal(count_calls("ca-certificates.crt"), 1);
    assert_int_equal(count_calls(".pem"), 0);
    acme_stop(a);

    /* A new thread (a node restart) keeps the installed certificate; with
     * renew_days beyond its validity it is renewed. */
    o.renew_days = 100;
    char stale[256];
    snprintf(stale, sizeof stale, "%s/acme/challenges/stale-token", dir);
    f = fopen(stale, "w");
    assert_non_null(f);
    fclose(f);
    a = acme_start(&o, &e);
    assert_int_equal(access(stale, F_OK), -1); /* a killed run's challenge is gone */
    assert_non_null(a);
    acme_set_state(a, &s);
    assert_true(acme_want(a, "good.test", 30001, why, sizeof why));
    for (int i = 0; i < 100 && count_calls("issue good.test") < 2; i++)
        sleep_ms(100);
    assert_true(count_calls("issue good.test") >= 2);
    acme_stop(a);
}

static void test_no_directory(void **state)
{
    (void)state;
    char dir[128], homes[128];
    make_dirs(dir, homes);
    acme_opts_t o = {.router_dir = dir, .containers_dir = homes, .directory = "",
                     .uacme = "/nonexistent", .hook = "/bin/false"};
    err_t e;
    err_clear(&e);
    assert_null(acme_start(&o, &e)); /* no uacme: said at once */
    assert_non_null(strstr(e.msg, "/nonexistent"));
    o.uacme = "/bin/true";
    err_clear(&e);
    acme_t *a = acme_start(&o, &e);
    if (geteuid() != 0) { /* the directories are root's */
        assert_null(a);
        return;
    }
    assert_non_null(a);
    spec_state_t s = {0};
    acme_set_state(a, &s);
    char why[512];
    assert_false(acme_want(a, "good.test", 30001, why, sizeof why));
    assert_non_null(strstr(why, "this node has no ACME directory"));
    acme_stop(a);
}

static void test_names_per_container_are_bounded(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* the directories are root's */
    char dir[128], homes[128];
    make_dirs(dir, homes);
    /* No state yet: the thread runs nothing, the gate's side is all. */
    acme_opts_t o = {.router_dir = dir, .containers_dir = homes,
                     .directory = "https://acme.test/dir", .uacme = "/bin/true",
                     .hook = "/bin/false"};
    err_t e;
    err_clear(&e);
    acme_t *a = acme_start(&o, &e);
    assert_non_null(a);
    char why[512], name[64];
    for (int i = 0; i < ACME_MAX_NAMES_PER_UID; i++) {
        snprintf(name, sizeof name, "n%d.test", i);
        assert_true(acme_want(a, name, 30001, why, sizeof why));
    }
    assert_false(acme_want(a, "one-more.test", 30001, why, sizeof why));
    assert_non_null(strstr(why, "already asks for 20 automatic certificates"));
    assert_true(acme_want(a, "n3.test", 30001, why, sizeof why)); /* asked already */
    assert_true(acme_want(a, "one-more.test", 30002, why, sizeof why));
    acme_stop(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_owners),
        cmocka_unit_test(test_renew_at),
        cmocka_unit_test(test_hook_arguments),
        cmocka_unit_test_setup_teardown(test_hook_files, make_base, remove_base),
        cmocka_unit_test(test_reason),
        cmocka_unit_test_setup_teardown(test_thread, make_base, remove_base),
        cmocka_unit_test_setup_teardown(test_no_directory, make_base, remove_base),
        cmocka_unit_test_setup_teardown(test_names_per_container_are_bounded, make_base,
                                        remove_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
