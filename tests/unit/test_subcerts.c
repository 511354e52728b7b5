/* Unit tests for the gate's certificate copies (src/node/subcerts.c): a
 * home and the router's homes/ in a temporary directory, keys and
 * certificates made there by the openssl CLI (the seed's commands with
 * -subj), packets parsed by subscription_check as the gate does.  Root
 * only (the copies are root:router). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/node/subcerts.h"
#include "../../src/node/tlsfiles.h"
#include "subscription_packet.h"

#define UID 30077u
#define GID 4321u
#define HOMEP "/containers/30077/"

static char dir[64], home[128], copies[128], root_crt[160];

#define TLS_FIXTURE_HOME home
#define TLS_FIXTURE_UID UID
#include "tls_fixture.h"

/* The gate's copies for this test (root only: skipped otherwise). */
static subcerts_t *certs(size_t max)
{
    if (geteuid() != 0)
        skip();
    subcerts_opts_t o = {.containers_dir = dir,
                         .router_homes = copies,
                         .router_gid = GID,
                         .max_pairs = max,
                         .forget_ms = 1000};
    err_t e = {0};
    subcerts_t *c = subcerts_new(&o, &e);
    if (!c)
        fail_msg("%s", e.msg);
    return c;
}

/* The gate's view of an ssl-domain packet: parsed and allowed first. */
static int try(subcerts_t *c, const char *name, const char *key, const char *crt, const char *ca,
               long long now, char *why)
{
    pkt_t p = packet(0, name, HOMEP "run/a.socket");
    add_item(&p, "sni_key", key);
    add_item(&p, "sni_crt", crt);
    if (ca)
        add_item(&p, "sni_ca", ca);
    subscription_t s;
    if (subscription_check(p.b, p.len, UID, &s, why, 512) < 0)
        fail_msg("the packet was refused: %s", why);
    why[0] = '\0';
    return subcerts_check(c, UID, &s, now, why, 512);
}

static void refused_with(subcerts_t *c, const char *name, const char *key, const char *crt,
                         const char *want)
{
    char why[512];
    assert_int_equal(try(c, name, key, crt, NULL, 0, why), -1);
    if (!strstr(why, want))
        fail_msg("got \"%s\", want \"%s\"", why, want);
}

/* The router's copy of <rel>: NULL when there is none. */
static char *copy_of(const char *rel, struct stat *st)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%u/%s", copies, UID, rel);
    if (lstat(path, st) < 0)
        return NULL;
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 16);
    assert_non_null(buf);
    assert_true(fread(buf, 1, (1 << 16) - 1, f) > 0);
    fclose(f);
    return buf;
}

static bool same_as_home(const char *rel)
{
    struct stat st;
    char *copy = copy_of(rel, &st), path[256], *orig = calloc(1, 1 << 16);
    snprintf(path, sizeof path, "%s/%s", home, rel);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_true(fread(orig, 1, (1 << 16) - 1, f) > 0);
    fclose(f);
    bool same = copy && !strcmp(copy, orig);
    free(copy);
    free(orig);
    return same;
}

static int setup(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    snprintf(dir, sizeof dir, "/tmp/imp-subcerts-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(home, sizeof home, "%s/%u", dir, UID);
    snprintf(copies, sizeof copies, "%s/homes", dir);
    assert_int_equal(mkdir(home, 0700), 0);
    assert_int_equal(mkdir(copies, 0710), 0);
    sh("mkdir ssl run");
    pair("foobar", "mynewdomain.org", NULL); /* the seed's: CN only */
    pair("other", "other.test", "other.test");
    pair("wild", "example.org", "*.example.org");
    sh("openssl req -new -x509 -days 30 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt "
       "-subj /CN=customer-ca");
    sh("cp foobar.key ssl/ && cp foobar.crt ssl/");
    sh("openssl rand 1100000 > big.crt");
    sh("mkfifo fifo.crt");
    /* A file beside the home, not in it: the temporary directory's. */
    sh("echo secret > ../outside && ln -s %s/outside out.crt", dir);
    sh("ln -s %s/foobar.crt inside-link.crt && ln -s /etc linkdir", home);
    /* A file of root's in the home (a hard link to one would look alike). */
    snprintf(root_crt, sizeof root_crt, "%s/root.crt", home);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s/foobar.crt %s", home, root_crt);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_a_good_pair_is_copied_for_the_router(void **state)
{
    (void)state;
    subcerts_t *c = certs(8);
    char why[512];
    assert_int_equal(try(c, "mynewdomain.org", HOMEP "foobar.key", HOMEP "ssl/foobar.crt",
                         "!" HOMEP "ca.crt", 0, why),
                     0);
    assert_true(same_as_home("foobar.key"));
    assert_true(same_as_home("ssl/foobar.crt"));
    assert_true(same_as_home("ca.crt"));
    struct stat st;
    free(copy_of("foobar.key", &st));
    assert_true(S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0640);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(st.st_gid, GID);
    char path[256];
    snprintf(path, sizeof path, "%s/%u/ssl", copies, UID);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0710);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(st.st_gid, GID);
    snprintf(path, sizeof path, "%s/%u", copies, UID);
    assert_int_equal(lstat(path, &st), 0);
    assert_int_equal(st.st_gid, GID);
    /* Another name with the same CA file: its copy is left as it is (the
     * router would make the first name's context again for a new inode). */
    char *ca = copy_of("ca.crt", &st);
    free(ca);
    ino_t ca_ino = st.st_ino;
    assert_int_equal(
        try(c, ".example.org", HOMEP "wild.key", HOMEP "wild.crt", HOMEP "ca.crt", 0, why), 0);
    free(copy_of("ca.crt", &st));
    assert_int_equal(st.st_ino, ca_ino);
    /* A wildcard key with a wildcard certificate. */
    assert_int_equal(try(c, ".example.org", HOMEP "wild.key", HOMEP "wild.crt", NULL, 0, why), 0);
    assert_true(same_as_home("wild.crt"));
    subcerts_free(c);
}

static void test_links_fifos_and_big_files_are_refused(void **state)
{
    (void)state;
    subcerts_t *c = certs(8);
    refused_with(c, "mynewdomain.org", HOMEP "foobar.key", HOMEP "out.crt",
                 "the certificate " HOMEP "out.crt is (or passes through) a symbolic link");
    /* Even a link that stays in the home: the router would get a copy of
     * what the link names at that moment; name the file itself. */
    refused_with(c, "mynewdomain.org", HOMEP "foobar.key", HOMEP "inside-link.crt",
                 "symbolic link");
    refused_with(c, "mynewdomain.org", HOMEP "linkdir/ssl/private/x.key", HOMEP "foobar.crt",
                 "the key " HOMEP "linkdir/ssl/private/x.key is (or passes through) a symbolic");
    refused_with(c, "mynewdomain.org", HOMEP "foobar.key", HOMEP "fifo.crt",
                 "the certificate " HOMEP "fifo.crt is not a regular file");
    refused_with(c, "mynewdomain.org", HOMEP "foobar.key", HOMEP "ssl", "is not a regular file");
    refused_with(c, "mynewdomain.org", HOMEP "foobar.key", HOMEP "big.crt",
                 "the certificate " HOMEP "big.crt is larger than 1048576 bytes");
    refused_with(c, "mynewdomain.org", HOMEP "foobar.key", HOMEP "root.crt",
                 "the certificate " HOMEP "root.crt is not yours (its owner is uid 0)");
    refused_with(c, "mynewdomain.org", HOMEP "foobar.key", HOMEP "nope.crt",
                 "the certificate " HOMEP "nope.crt does not exist");
    struct stat st;
    char *copy = copy_of("out.crt", &st);
    assert_null(copy);
    assert_null(copy_of("fifo.crt", &st));
    subcerts_free(c);
}

static void test_a_bad_pair_is_refused_and_not_copied(void **state)
{
    (void)state;
    subcerts_t *c = certs(8);
    refused_with(c, "other.test", HOMEP "foobar.key", HOMEP "other.crt",
                 "the key does not match the certificate (key " HOMEP
                 "foobar.key, certificate " HOMEP "other.crt)");
    struct stat st;
    assert_null(copy_of("other.crt", &st));
    refused_with(c, "mynewdomain.org", HOMEP "other.key", HOMEP "other.crt",
                 "the certificate is not valid for mynewdomain.org");
    refused_with(c, ".example.org", HOMEP "other.key", HOMEP "other.crt",
                 "not valid for *.example.org");
    char why[512];
    assert_int_equal(
        try(c, "other.test", HOMEP "other.key", HOMEP "other.crt", HOMEP "other.key", 0, why), -1);
    assert_string_equal(why, HOMEP "other.key: the CA file holds no PEM certificate");
    /* The refusal is remembered, and said again at each announcement. */
    assert_int_equal(try(c, "other.test", HOMEP "foobar.key", HOMEP "other.crt", NULL, 0, why), -1);
    assert_non_null(strstr(why, "does not match"));
    subcerts_free(c);
}

static void test_a_renewed_certificate_is_copied_again(void **state)
{
    (void)state;
    subcerts_t *c = certs(8);
    sh("mkdir -p renew && cp other.key renew/r.key && cp other.crt renew/r.crt");
    char why[512];
    assert_int_equal(try(c, "other.test", HOMEP "renew/r.key", HOMEP "renew/r.crt", NULL, 0, why),
                     0);
    assert_true(same_as_home("renew/r.crt"));
    /* Unchanged sources are not read again (the files are looked at
     * every SUBCERTS_RECHECK_MS, then only their stat): a copy altered
     * behind the gate's back stays as it is (what proves the cache). */
    char path[256];
    snprintf(path, sizeof path, "%s/%u/renew/r.crt", copies, UID);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("altered", f);
    fclose(f);
    assert_int_equal(try(c, "other.test", HOMEP "renew/r.key", HOMEP "renew/r.crt", NULL, 3000, why),
                     0);
    assert_false(same_as_home("renew/r.crt"));
    /* Renewed: a new key and certificate in place of the old ones. */
    pair("renew/new", "other.test", "other.test");
    sh("mv renew/new.key renew/r.key && mv renew/new.crt renew/r.crt");
    assert_int_equal(try(c, "other.test", HOMEP "renew/r.key", HOMEP "renew/r.crt", NULL, 6000, why),
                     0);
    assert_true(same_as_home("renew/r.crt"));
    assert_true(same_as_home("renew/r.key"));
    /* Rewritten in place with a mismatching key: refused, the last good
     * copies stay for the router. */
    sh("cat foobar.key > renew/r.key");
    assert_int_equal(try(c, "other.test", HOMEP "renew/r.key", HOMEP "renew/r.crt", NULL, 9000, why),
                     -1);
    assert_non_null(strstr(why, "does not match"));
    assert_false(same_as_home("renew/r.key"));
    subcerts_free(c);
}

static void test_pairs_per_container_are_bounded_and_forgotten(void **state)
{
    (void)state;
    subcerts_t *c = certs(2);
    sh("cp other.key o1.key && cp other.crt o1.crt && cp other.key o2.key && cp other.crt o2.crt "
       "&& cp other.key o3.key && cp other.crt o3.crt");
    char why[512];
    assert_int_equal(try(c, "other.test", HOMEP "o1.key", HOMEP "o1.crt", NULL, 0, why), 0);
    assert_int_equal(try(c, "other.test", HOMEP "o2.key", HOMEP "o2.crt", NULL, 500, why), 0);
    assert_int_equal(try(c, "other.test", HOMEP "o3.key", HOMEP "o3.crt", NULL, 600, why), -1);
    assert_non_null(strstr(why, "already uses 2 certificate pairs"));
    /* o1 not announced for forget_ms: forgotten, its copies removed. */
    assert_int_equal(try(c, "other.test", HOMEP "o3.key", HOMEP "o3.crt", NULL, 1200, why), 0);
    struct stat st;
    assert_null(copy_of("o1.crt", &st));
    char *o2 = copy_of("o2.crt", &st);
    assert_non_null(o2);
    free(o2);
    subcerts_free(c);
}

/* The subscription of `name` with these paths, as subscription_check
 * would fill it, without its checks (what the gate's own checks see). */
static subscription_t raw(const char *name, const char *key, const char *crt)
{
    subscription_t s = {0};
    snprintf(s.key, sizeof s.key, "%s", name);
    snprintf(s.address, sizeof s.address, HOMEP "run/a.socket");
    snprintf(s.tls.key, sizeof s.tls.key, "%s", key);
    snprintf(s.tls.crt, sizeof s.tls.crt, "%s", crt);
    s.tls.any = true;
    s.tls.home_len = strlen(HOMEP);
    return s;
}

static void test_nothing_is_written_in_run(void **state)
{
    (void)state;
    subcerts_t *c = certs(8);
    /* homes/<uid>/run is the container's live run directory (the router
     * connects to its sockets there): the gate never writes in it, even
     * asked by a caller that skipped subscription_check. */
    char path[256], why[512];
    snprintf(path, sizeof path, "%s/%u/run", copies, UID);
    mkdir(path, 0755);
    sh("cp other.key run/x.key && cp other.crt run/x.crt");
    subscription_t s = raw("other.test", HOMEP "run/x.key", HOMEP "run/x.crt");
    assert_int_equal(subcerts_check(c, UID, &s, 0, why, sizeof why), -1);
    assert_non_null(strstr(why, "not a certificate file of your home"));
    struct stat st;
    assert_null(copy_of("run/x.key", &st));
    assert_null(copy_of("run/x.crt", &st));
    subcerts_free(c);
}

static void test_copies_hold_only_what_openssl_parsed(void **state)
{
    (void)state;
    subcerts_t *c = certs(8);
    sh("openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out dh.pem");
    sh("(echo junk; cat other.crt dh.pem; echo trailing) > messy.crt");
    char why[512];
    assert_int_equal(try(c, "other.test", HOMEP "other.key", HOMEP "messy.crt", NULL, 0, why), 0);
    struct stat st;
    char *copy = copy_of("messy.crt", &st);
    assert_non_null(copy);
    assert_null(strstr(copy, "junk"));
    assert_null(strstr(copy, "DH PARAMETERS"));
    assert_null(strstr(copy, "trailing"));
    assert_int_equal(strncmp(copy, "-----BEGIN CERTIFICATE-----", 27), 0);
    free(copy);
    /* One file holding both key and certificate: the copy holds both. */
    sh("cat other.key other.crt > both.pem");
    assert_int_equal(try(c, "other.test", HOMEP "both.pem", HOMEP "both.pem", NULL, 0, why), 0);
    copy = copy_of("both.pem", &st);
    assert_non_null(strstr(copy, "BEGIN PRIVATE KEY"));
    assert_non_null(strstr(copy, "BEGIN CERTIFICATE"));
    free(copy);
    /* A subscription key with its port: the certificate is for the name. */
    assert_int_equal(try(c, "other.test:443", HOMEP "other.key", HOMEP "other.crt", NULL, 0, why),
                     0);
    subcerts_free(c);
}

static void test_deep_paths_are_refused(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    pkt_t p = packet(0, "other.test", HOMEP "run/a.socket");
    add_item(&p, "sni_key", HOMEP "a/b/c/d/e/f/g/h/x.key");
    add_item(&p, "sni_crt", HOMEP "a/b/c/d/e/f/g/x.crt");
    subscription_t s;
    char why[512];
    assert_int_equal(subscription_check(p.b, p.len, UID, &s, why, sizeof why), -1);
    assert_non_null(strstr(why, "at most 8 components"));
    p = packet(0, "other.test", HOMEP "run/a.socket");
    add_item(&p, "sni_key", HOMEP "a/b/c/d/e/f/g/x.key");
    add_item(&p, "sni_crt", HOMEP "a/b/c/d/e/f/g/x.crt");
    assert_int_equal(subscription_check(p.b, p.len, UID, &s, why, sizeof why), 0);
}

/* An entry not announced for forget_ms goes at the sweep (no other
 * announcement of its container needed), its directories with it; so do
 * those of a container whose home is gone. */
static void test_the_sweep_removes_forgotten_copies_and_their_directories(void **state)
{
    (void)state;
    subcerts_t *c = certs(8);
    sh("mkdir -p d1/d2 && cp other.key d1/d2/s.key && cp other.crt d1/d2/s.crt");
    char why[512], path[256];
    assert_int_equal(try(c, "other.test", HOMEP "d1/d2/s.key", HOMEP "d1/d2/s.crt", NULL, 0, why),
                     0);
    struct stat st;
    snprintf(path, sizeof path, "%s/%u/d1", copies, UID);
    subcerts_sweep(c, 900); /* within forget_ms: kept */
    assert_int_equal(lstat(path, &st), 0);
    subcerts_sweep(c, 1100);
    assert_null(copy_of("d1/d2/s.crt", &st));
    assert_int_equal(lstat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
    snprintf(path, sizeof path, "%s/%u", copies, UID);
    assert_int_equal(lstat(path, &st), 0); /* homes/<uid> stays */
    /* A container whose home is gone: its copies go at the next sweep,
     * announced lately or not. */
    assert_int_equal(try(c, "other.test", HOMEP "d1/d2/s.key", HOMEP "d1/d2/s.crt", NULL, 2000,
                         why),
                     0);
    char moved[160];
    snprintf(moved, sizeof moved, "%s.away", home);
    assert_int_equal(rename(home, moved), 0);
    subcerts_sweep(c, 2001);
    assert_int_equal(rename(moved, home), 0);
    assert_null(copy_of("d1/d2/s.crt", &st));
    subcerts_free(c);
}

/* At start, what a previous run left under homes/<uid>/ goes; run/
 * stays, whatever it holds. */
static void test_the_startup_sweep_keeps_run(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd %s/ && mkdir -p %u/run %u/old/deeper && echo s > %u/run/app.socket && "
             "echo k > %u/old/deeper/x.key && echo k > %u/top.crt && ln -sf /etc %u/link",
             copies, UID, UID, UID, UID, UID, UID);
    assert_int_equal(system(cmd), 0);
    subcerts_t *c = certs(8);
    struct stat st;
    char *run = copy_of("run/app.socket", &st);
    assert_non_null(run);
    free(run);
    assert_null(copy_of("old/deeper/x.key", &st));
    assert_null(copy_of("old", &st));
    assert_null(copy_of("top.crt", &st));
    assert_null(copy_of("link", &st));
    assert_int_equal(stat("/etc/passwd", &st), 0); /* not followed */
    subcerts_free(c);
}

/* An outcome stands SUBCERTS_RECHECK_MS: a missing file made meanwhile is
 * seen only then; a failure of the node's is tried again only after
 * SUBCERTS_BACKOFF_MS. */
static void test_failures_are_remembered_for_a_while(void **state)
{
    (void)state;
    subcerts_t *c = certs(8);
    char why[512];
    assert_int_equal(try(c, "other.test", HOMEP "late.key", HOMEP "late.crt", NULL, 0, why), -1);
    assert_non_null(strstr(why, "does not exist"));
    sh("cp other.key late.key && cp other.crt late.crt");
    assert_int_equal(try(c, "other.test", HOMEP "late.key", HOMEP "late.crt", NULL, 1500, why),
                     -1);
    assert_non_null(strstr(why, "does not exist"));
    assert_int_equal(try(c, "other.test", HOMEP "late.key", HOMEP "late.crt", NULL, 2100, why),
                     0);
    /* The node's failure: a file where the router's directory goes. */
    sh("mkdir -p nd && cp other.key nd/n.key && cp other.crt nd/n.crt");
    char path[256];
    snprintf(path, sizeof path, "%s/%u/nd", copies, UID);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(try(c, "other.test", HOMEP "nd/n.key", HOMEP "nd/n.crt", NULL, 0, why), -1);
    assert_non_null(strstr(why, "cannot make the router's directory"));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(try(c, "other.test", HOMEP "nd/n.key", HOMEP "nd/n.crt", NULL, 9000, why), -1);
    assert_non_null(strstr(why, "cannot make the router's directory"));
    assert_int_equal(try(c, "other.test", HOMEP "nd/n.key", HOMEP "nd/n.crt", NULL, 10100, why), 0);
    subcerts_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_good_pair_is_copied_for_the_router),
        cmocka_unit_test(test_links_fifos_and_big_files_are_refused),
        cmocka_unit_test(test_a_bad_pair_is_refused_and_not_copied),
        cmocka_unit_test(test_a_renewed_certificate_is_copied_again),
        cmocka_unit_test(test_pairs_per_container_are_bounded_and_forgotten),
        cmocka_unit_test(test_nothing_is_written_in_run),
        cmocka_unit_test(test_copies_hold_only_what_openssl_parsed),
        cmocka_unit_test(test_deep_paths_are_refused),
        cmocka_unit_test(test_the_sweep_removes_forgotten_copies_and_their_directories),
        cmocka_unit_test(test_the_startup_sweep_keeps_run),
        cmocka_unit_test(test_failures_are_remembered_for_a_while),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
