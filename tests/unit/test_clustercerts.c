/* Unit tests for src/node/clustercerts.c: a certificate set from the
 * member whose container announced it (its gate's checked copies, made
 * by subcerts_check) to another member (checked again, copied for its
 * router at the same path).  Two members in one temporary directory: the
 * sender's home and router homes, the receiver's router homes (no home
 * of that container there).  Keys and certificates by the openssl CLI
 * (tls_fixture.h).  Root only (the copies are root:router). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "../../src/node/clustercerts.h"
#include "../../src/node/clustercrypt.h"
#include "subscription_packet.h"

#define UID 30091u
#define GID 4321u
#define HOMEP "/containers/30091/"
#define NAME "app.example.org"
#define SENDER "203.0.113.3"

static char dir[64], home[128], sent[128], got[128], nohomes[128];
#define TLS_FIXTURE_HOME home
#define TLS_FIXTURE_UID UID
#include "tls_fixture.h"

static int setup(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    snprintf(dir, sizeof dir, "/tmp/imp-clustercerts-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(home, sizeof home, "%s/%u", dir, UID);
    snprintf(sent, sizeof sent, "%s/sender-homes", dir);
    snprintf(got, sizeof got, "%s/receiver-homes", dir);
    snprintf(nohomes, sizeof nohomes, "%s/receiver-containers", dir);
    assert_int_equal(mkdir(home, 0700), 0);
    assert_int_equal(mkdir(sent, 0710), 0);
    assert_int_equal(mkdir(got, 0710), 0);
    assert_int_equal(mkdir(nohomes, 0700), 0);
    sh("mkdir ssl");
    pair("ssl/app", NAME, NULL);
    pair("other", "other.test", NULL);
    sh("openssl req -new -x509 -days 30 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt "
       "-subj /CN=customer-ca");
    /* A CA bundle of 60 certificates: a valid set too large for one datagram. */
    sh("for i in $(seq 60); do cat ca.crt; done > big-ca.crt");
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

/* A gate's copies: over the homes in `containers`, written to `homes`. */
static subcerts_t *gate_certs(const char *containers, const char *homes)
{
    if (geteuid() != 0)
        skip();
    subcerts_opts_t o = {.containers_dir = containers,
                         .router_homes = homes,
                         .router_gid = GID,
                         .max_pairs = 8,
                         .forget_ms = 60000};
    err_t e = {0};
    subcerts_t *c = subcerts_new(&o, &e);
    if (!c)
        fail_msg("%s", e.msg);
    return c;
}

/* The sender's gate (the container's home, copies in sent/) and the
 * receiver's (no home of UID there, copies in got/). */
static subcerts_t *sender_certs(void) { return gate_certs(dir, sent); }
static subcerts_t *receiver_certs(void) { return gate_certs(nohomes, got); }

static clustercerts_t *receiver(subcerts_t *certs, size_t max_sets)
{
    clustercerts_opts_t o = {.certs = certs, .max_sets = max_sets, .forget_ms = 1000};
    err_t e = {0};
    clustercerts_t *cc = clustercerts_new(&o, &e);
    if (!cc)
        fail_msg("%s", e.msg);
    return cc;
}

/* The sender's checked packet 3 (its endpoint address) for these files:
 * subscription_check's view with a unix address, as the gate's check of
 * the files is the same for both packets. */
static subscription_t checked(subcerts_t *c, const char *name, const char *key, const char *crt,
                              const char *ca)
{
    pkt_t p = packet(0, name, HOMEP "run/app.socket");
    add_item(&p, "sni_key", key);
    add_item(&p, "sni_crt", crt);
    if (ca)
        add_item(&p, "sni_ca", ca);
    subscription_t s;
    char why[512];
    if (subscription_check(p.b, p.len, UID, &s, why, sizeof why) < 0)
        fail_msg("the packet was refused: %s", why);
    if (subcerts_check(c, UID, &s, 0, why, sizeof why) < 0)
        fail_msg("the sender's gate refused the files: %s", why);
    return s;
}

static char *slurp(const char *path, size_t *len, struct stat *st)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    assert_int_equal(fstat(fileno(f), st), 0);
    char *b = calloc(1, 1 << 17);
    assert_non_null(b);
    *len = fread(b, 1, (1 << 17) - 1, f);
    fclose(f);
    return b;
}

/* The receiver's copy of <rel> holds what the sender's copy holds,
 * root:GID 0640. */
static void same_copy(const char *rel)
{
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/%u/%s", sent, UID, rel);
    snprintf(b, sizeof b, "%s/%u/%s", got, UID, rel);
    size_t la, lb;
    struct stat sa, sb;
    char *ca = slurp(a, &la, &sa), *cb = slurp(b, &lb, &sb);
    if (!cb)
        fail_msg("no copy of %s on the receiver", rel);
    assert_non_null(ca);
    assert_int_equal(la, lb);
    assert_memory_equal(ca, cb, la);
    assert_int_equal(sb.st_uid, 0);
    assert_int_equal(sb.st_gid, GID);
    assert_int_equal(sb.st_mode & 07777, 0640);
    free(ca);
    free(cb);
}

static bool exists_on_receiver(const char *rel)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof p, "%s/%u/%s", got, UID, rel);
    return lstat(p, &st) == 0;
}

static unsigned char buf[CLUSTER_MAX_PAYLOAD];

/* What a NEED for the CERT in buf (n bytes) names: its key path and the
 * digest of its PEMs (the layout of clustercerts.h, read independently). */
static void need_of(size_t n, char key_path[256], unsigned char digest[32])
{
    size_t at = 9;
    const unsigned char *pem[3];
    size_t len[3];
    key_path[0] = '\0';
    for (int i = 0; i < 4 && at < n; i++) {
        if (i == 1)
            snprintf(key_path, 256, "%.*s", (int)buf[at], (const char *)buf + at + 1);
        at += 1 + buf[at];
    }
    static const int order[3] = {1, 2, 0}; /* crt, ca, key */
    for (int k = 0; k < 3; k++) {
        int i = order[k];
        len[i] = at + 4 <= n ? (size_t)buf[at] << 24 | (size_t)buf[at + 1] << 16 |
                                   (size_t)buf[at + 2] << 8 | buf[at + 3]
                             : 0;
        pem[i] = buf + at + 4;
        at += 4 + len[i];
        if (at > n) {
            memset(digest, 0, 32);
            return;
        }
    }
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    for (int i = 0; i < 3; i++) {
        unsigned char b[4] = {(unsigned char)(len[i] >> 24), (unsigned char)(len[i] >> 16),
                              (unsigned char)(len[i] >> 8), (unsigned char)len[i]};
        crypto_hash_sha256_update(&st, b, 4);
        crypto_hash_sha256_update(&st, pem[i], len[i]);
    }
    crypto_hash_sha256_final(&st, digest);
}

/* The receiver asks `from` for the set in buf (as a NEED would): whether
 * it would send the NEED. */
static bool ask(clustercerts_t *cc, const char *from, size_t n, long long now)
{
    char key[256];
    unsigned char d[32];
    need_of(n, key, d);
    return clustercerts_ask(cc, from, UID, key, d, now);
}

/* The receiver asks SENDER for the set in buf, then installs it. */
static int asked_install(clustercerts_t *cc, size_t n, long long now, char *why, size_t why_len)
{
    ask(cc, SENDER, n, now);
    return clustercerts_install(cc, SENDER, buf, n, now, why, why_len);
}

static size_t pack(const subscription_t *s, unsigned char digest[32])
{
    char why[512];
    ssize_t n = clustercerts_pack(sent, UID, s, buf, sizeof buf, digest, why, sizeof why);
    if (n < 0)
        fail_msg("pack: %s", why);
    return (size_t)n;
}

static void test_a_set_travels_and_is_installed_at_the_same_path(void **state)
{
    (void)state;
    subcerts_t *sc = sender_certs(), *rc = receiver_certs();
    clustercerts_t *cc = receiver(rc, 8);
    subscription_t s = checked(sc, NAME, HOMEP "ssl/app.key", HOMEP "ssl/app.crt", HOMEP "ca.crt");
    unsigned char digest[32], again[32];
    size_t n = pack(&s, digest);
    assert_true(n > 1000 && n < 10000);
    char why[512];
    assert_int_equal(clustercerts_digest(sent, UID, &s, again, why, sizeof why), 0);
    assert_memory_equal(digest, again, 32);
    /* Not held before, held with that digest after. */
    assert_false(clustercerts_held(cc, UID, &s, digest, 0));
    if (asked_install(cc, n, 0, why, sizeof why) < 0)
        fail_msg("install: %s", why);
    /* The payload, the key in it, is wiped. */
    for (size_t i = 0; i < n; i++)
        if (buf[i])
            fail_msg("byte %zu of the payload was left", i);
    same_copy("ssl/app.key");
    same_copy("ssl/app.crt");
    same_copy("ca.crt");
    assert_true(clustercerts_held(cc, UID, &s, digest, 10));
    unsigned char other[32];
    memcpy(other, digest, 32);
    other[0] ^= 1;
    assert_false(clustercerts_held(cc, UID, &s, other, 10));
    /* A renewed certificate: another digest. */
    sh("cp ssl/app.crt ssl/app.crt.old && openssl req -new -key ssl/app.key -subj /CN=%s -out "
       "r.csr && openssl x509 -req -days 20 -in r.csr -signkey ssl/app.key -out ssl/app.crt",
       NAME);
    assert_int_equal(subcerts_check(sc, UID, &s, 5000, why, sizeof why), 0);
    assert_int_equal(clustercerts_digest(sent, UID, &s, again, why, sizeof why), 0);
    assert_memory_not_equal(digest, again, 32);
    assert_false(clustercerts_held(cc, UID, &s, again, 10));
    sh("mv ssl/app.crt.old ssl/app.crt");
    clustercerts_free(cc);
    subcerts_free(sc);
    subcerts_free(rc);
}

static void test_a_key_and_certificate_in_one_file(void **state)
{
    (void)state;
    subcerts_t *sc = sender_certs(), *rc = receiver_certs();
    clustercerts_t *cc = receiver(rc, 8);
    sh("cat other.key other.crt > both.pem");
    subscription_t s = checked(sc, "other.test", HOMEP "both.pem", HOMEP "both.pem", NULL);
    unsigned char digest[32];
    size_t n = pack(&s, digest);
    char why[512];
    if (asked_install(cc, n, 0, why, sizeof why) < 0)
        fail_msg("install: %s", why);
    same_copy("both.pem");
    assert_true(clustercerts_held(cc, UID, &s, digest, 0));
    clustercerts_free(cc);
    subcerts_free(sc);
    subcerts_free(rc);
}

static void test_a_set_too_large_for_a_datagram_is_refused(void **state)
{
    (void)state;
    subcerts_t *sc = sender_certs();
    subscription_t s =
        checked(sc, NAME, HOMEP "ssl/app.key", HOMEP "ssl/app.crt", HOMEP "big-ca.crt");
    unsigned char digest[32];
    char why[512];
    memset(buf, 0x55, sizeof buf);
    assert_int_equal(clustercerts_pack(sent, UID, &s, buf, sizeof buf, digest, why, sizeof why),
                     -1);
    if (!strstr(why, "the certificate chain of " NAME " is too large to travel in the cluster (") ||
        !strstr(why, " > 60000 bytes)"))
        fail_msg("got \"%s\"", why);
    /* A buffer too small is said, not overrun. */
    s = checked(sc, NAME, HOMEP "ssl/app.key", HOMEP "ssl/app.crt", NULL);
    assert_int_equal(clustercerts_pack(sent, UID, &s, buf, 100, digest, why, sizeof why), -1);
    assert_non_null(strstr(why, "cannot hold"));
    /* Files the gate has not copied (or ACME's pair): nothing to send. */
    s.tls.any = false;
    assert_int_equal(clustercerts_pack(sent, UID, &s, buf, sizeof buf, digest, why, sizeof why),
                     -1);
    assert_non_null(strstr(why, "names no certificate files"));
    subcerts_free(sc);
}

/* Install buf (n bytes) and expect a refusal naming `want`; nothing is
 * written. */
static void install_refused(clustercerts_t *cc, size_t n, const char *want)
{
    char why[512] = "";
    assert_int_equal(asked_install(cc, n, 0, why, sizeof why), -1);
    if (!strstr(why, want))
        fail_msg("got \"%s\", want \"%s\"", why, want);
    for (size_t i = 0; i < n; i++)
        if (buf[i])
            fail_msg("byte %zu of a refused payload was left", i);
}

/* Replace the first occurrence of `from` in buf[0..n) by `to` (same length). */
static void patch(size_t n, const char *from, const char *to)
{
    unsigned char *p = memmem(buf, n, from, strlen(from));
    assert_non_null(p);
    assert_int_equal(strlen(from), strlen(to));
    memcpy(p, to, strlen(to));
}

static void test_a_bad_set_is_refused_and_not_written(void **state)
{
    (void)state;
    subcerts_t *sc = sender_certs(), *rc = receiver_certs();
    clustercerts_t *cc = receiver(rc, 8);
    subscription_t s = checked(sc, NAME, HOMEP "ssl/app.key", HOMEP "ssl/app.crt", NULL);
    subscription_t o = checked(sc, "other.test", HOMEP "other.key", HOMEP "other.crt", NULL);
    unsigned char digest[32];
    /* Another name than the certificate's. */
    size_t n = pack(&s, digest);
    patch(n, NAME, "zzz.example.org");
    install_refused(cc, n, "not valid for zzz.example.org");
    /* The key of another pair. */
    static unsigned char okey[CLUSTER_MAX_PAYLOAD];
    size_t on = pack(&o, digest);
    memcpy(okey, buf, on);
    n = pack(&s, digest);
    /* Both are 2048-bit RSA: the key PEMs are the same length or close;
     * rebuild the payload's last field from the other set's. */
    const unsigned char *k1 = memmem(buf, n, "-----BEGIN PRIVATE KEY", 22);
    const unsigned char *k2 = memmem(okey, on, "-----BEGIN PRIVATE KEY", 22);
    assert_non_null(k1);
    assert_non_null(k2);
    size_t at = (size_t)(k1 - buf), klen = on - (size_t)(k2 - okey);
    memcpy(buf + at, k2, klen);
    buf[at - 4] = (unsigned char)(klen >> 24);
    buf[at - 3] = (unsigned char)(klen >> 16);
    buf[at - 2] = (unsigned char)(klen >> 8);
    buf[at - 1] = (unsigned char)klen;
    install_refused(cc, at + klen, "does not match");
    /* Paths the packet could not have named. */
    n = pack(&s, digest);
    patch(n, HOMEP "ssl/app.key", HOMEP "run/app.key");
    install_refused(cc, n, "not a certificate file of container");
    n = pack(&s, digest);
    patch(n, HOMEP "ssl/app.key", HOMEP "s/../pp.key");
    install_refused(cc, n, "not a certificate file of container");
    n = pack(&s, digest);
    patch(n, HOMEP "ssl/app.key", "/containers/30092/ssl/app.key");
    install_refused(cc, n, "not a certificate file of container");
    /* Garbage and every cut. */
    n = pack(&s, digest);
    static unsigned char whole[CLUSTER_MAX_PAYLOAD];
    memcpy(whole, buf, n);
    for (size_t len = 0; len < n; len += (len < 600 ? 1 : 97)) {
        memcpy(buf, whole, n);
        char why[512];
        if (asked_install(cc, len, 0, why, sizeof why) == 0)
            fail_msg("a %zu-byte cut of a %zu-byte set was installed", len, n);
    }
    memcpy(buf, "IMPC2", 5);
    install_refused(cc, 40, "not a certificate set");
    /* Nothing of it was written. */
    assert_false(exists_on_receiver("ssl/app.key"));
    assert_false(exists_on_receiver("ssl/app.crt"));
    assert_false(exists_on_receiver("run"));
    assert_false(clustercerts_held(cc, UID, &s, digest, 0));
    clustercerts_free(cc);
    subcerts_free(sc);
    subcerts_free(rc);
}

/* A file of the home as text (the test's own sources, not a copy). */
static char *home_file(const char *rel, size_t *len)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", home, rel);
    char *b = slurp(p, len, &st);
    assert_non_null(b);
    return b;
}

static void put_text(size_t *at, const char *t)
{
    buf[(*at)++] = (unsigned char)strlen(t);
    memcpy(buf + *at, t, strlen(t));
    *at += strlen(t);
}

static void put_pem(size_t *at, const char *rel)
{
    size_t n = 0;
    char *b = rel ? home_file(rel, &n) : NULL;
    buf[(*at)++] = (unsigned char)(n >> 24);
    buf[(*at)++] = (unsigned char)(n >> 16);
    buf[(*at)++] = (unsigned char)(n >> 8);
    buf[(*at)++] = (unsigned char)n;
    if (n)
        memcpy(buf + *at, b, n);
    *at += n;
    free(b);
}

/* A CERT payload as another member could send it, of files of the home
 * no gate checked: the layout of clustercerts.h. */
static size_t forged_at(uid_t uid, const char *name, const char *key_path, const char *crt_path,
                        const char *key, const char *crt)
{
    size_t at = 0;
    memcpy(buf, "IMPC1", 5);
    at = 5;
    buf[at++] = (unsigned char)(uid >> 24);
    buf[at++] = (unsigned char)(uid >> 16);
    buf[at++] = (unsigned char)(uid >> 8);
    buf[at++] = (unsigned char)uid;
    put_text(&at, name);
    put_text(&at, key_path);
    put_text(&at, crt_path);
    put_text(&at, "");
    put_pem(&at, crt);
    put_pem(&at, NULL);
    put_pem(&at, key);
    return at;
}

static size_t forged(const char *name, const char *key, const char *crt)
{
    return forged_at(UID, name, HOMEP "x.key", HOMEP "x.crt", key, crt);
}

/* The receiver checks as the gate checks a local file: what the sender's
 * gate would have refused is refused here too (tls_clean_pair). */
static void test_the_receiver_checks_as_the_gate_does(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subcerts_t *rc = receiver_certs();
    clustercerts_t *cc = receiver(rc, 8);
    char why[512];
    /* The layout itself: a well-formed set installs. */
    size_t n = forged("other.test", "other.key", "other.crt");
    if (asked_install(cc, n, 0, why, sizeof why) < 0)
        fail_msg("%s", why);
    assert_true(exists_on_receiver("x.key"));
    /* A key type the router does not serve. */
    sh("openssl genrsa -out weak.key 1024 && openssl req -new -x509 -days 30 -key weak.key "
       "-out weak.crt -subj /CN=other.test");
    install_refused(cc, forged("other.test", "weak.key", "weak.crt"), "1024");
    /* A chain longer than TLS_CHAIN_MAX. */
    sh("cp other.crt long.crt && for i in $(seq 11); do cat ca.crt >> long.crt; done");
    install_refused(cc, forged("other.test", "other.key", "long.crt"), "more than");
    /* An encrypted key. */
    sh("openssl pkey -in other.key -aes256 -passout pass:x -out enc.key");
    install_refused(cc, forged("other.test", "enc.key", "other.crt"), "encrypted");
    clustercerts_free(cc);
    subcerts_free(rc);
}

static void test_sets_per_sender_are_bounded_and_swept(void **state)
{
    (void)state;
    subcerts_t *sc = sender_certs(), *rc = receiver_certs();
    clustercerts_t *cc = receiver(rc, 2);
    subscription_t a = checked(sc, NAME, HOMEP "ssl/app.key", HOMEP "ssl/app.crt", HOMEP "ca.crt");
    subscription_t b = checked(sc, "other.test", HOMEP "other.key", HOMEP "other.crt",
                               HOMEP "ca.crt");
    sh("cp other.key o2.key && cp other.crt o2.crt");
    subscription_t c = checked(sc, "other.test", HOMEP "o2.key", HOMEP "o2.crt", NULL);
    unsigned char da[32], db[32], dc[32];
    char why[512];
    size_t n = pack(&a, da);
    assert_int_equal(asked_install(cc, n, 0, why, sizeof why), 0);
    n = pack(&b, db);
    assert_int_equal(asked_install(cc, n, 0, why, sizeof why), 0);
    n = pack(&c, dc);
    install_refused(cc, n, "member 203.0.113.3 already has 2 certificate sets here");
    /* The same set again replaces, does not count. */
    n = pack(&a, da);
    assert_int_equal(asked_install(cc, n, 0, why, sizeof why), 0);
    /* Another member has its own bound. */
    n = pack(&c, dc);
    assert_true(ask(cc, "203.0.113.4", n, 0));
    assert_int_equal(clustercerts_install(cc, "203.0.113.4", buf, n, 0, why, sizeof why), 0);
    /* b is asked for, a is not: a's own files go, the CA b shares stays. */
    assert_true(clustercerts_held(cc, UID, &b, db, 900));
    assert_true(clustercerts_held(cc, UID, &c, dc, 900));
    clustercerts_sweep(cc, 1500);
    assert_false(exists_on_receiver("ssl/app.key"));
    assert_false(exists_on_receiver("ssl/app.crt"));
    assert_false(exists_on_receiver("ssl"));
    assert_true(exists_on_receiver("ca.crt"));
    assert_true(exists_on_receiver("other.key"));
    assert_false(clustercerts_held(cc, UID, &a, da, 1500));
    clustercerts_sweep(cc, 3000);
    assert_false(exists_on_receiver("ca.crt"));
    assert_false(exists_on_receiver("other.key"));
    assert_false(exists_on_receiver("o2.key"));
    clustercerts_free(cc);
    subcerts_free(sc);
    subcerts_free(rc);
}

/* A copy that cannot be written (a directory where the certificate's copy
 * goes): the key's copy, written first, does not stay behind; paths where
 * one is the directory of another are refused before anything is written. */
static void test_a_failed_install_leaves_no_key(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subcerts_t *rc = receiver_certs();
    clustercerts_t *cc = receiver(rc, 8);
    char p[256], why[512];
    snprintf(p, sizeof p, "%s/%u/x.crt/d", got, UID);
    sh("mkdir -p %s", p);
    size_t n = forged("other.test", "other.key", "other.crt");
    assert_int_equal(asked_install(cc, n, 0, why, sizeof why), -1);
    assert_false(exists_on_receiver("x.key"));
    sh("rm -rf %s/%u/x.crt", got, UID);
    n = forged_at(UID, "other.test", HOMEP "oN", HOMEP "oN/crt", "other.key", "other.crt");
    install_refused(cc, n, "cannot be both a file and the directory of");
    assert_false(exists_on_receiver("oN"));
    clustercerts_free(cc);
    subcerts_free(rc);
}

/* The same customer (uids are global) runs the cluster domain on this
 * member too: its local entry and the remote set name the same copies.
 * The local entry going does not take the remote set's copies; a local
 * check writing other content there makes held() false (a NEED again). */
static void test_local_and_remote_users_of_one_copy(void **state)
{
    (void)state;
    /* The receiver holds the home of UID too (dir), copies in got/. */
    subcerts_t *rc = gate_certs(dir, got);
    clustercerts_t *cc = receiver(rc, 8);
    subscription_t s = checked(rc, NAME, HOMEP "ssl/app.key", HOMEP "ssl/app.crt", NULL);
    unsigned char d[32];
    char why[512];
    assert_int_equal(clustercerts_digest(got, UID, &s, d, why, sizeof why), 0);
    size_t n = forged_at(UID, NAME, HOMEP "ssl/app.key", HOMEP "ssl/app.crt", "ssl/app.key",
                         "ssl/app.crt");
    if (asked_install(cc, n, 0, why, sizeof why) < 0)
        fail_msg("install: %s", why);
    n = forged_at(UID, NAME, HOMEP "ssl/app.key", HOMEP "ssl/app.crt", "ssl/app.key",
                  "ssl/app.crt");
    unsigned char sd[32];
    char key[256];
    need_of(n, key, sd);
    assert_true(clustercerts_held(cc, UID, &s, sd, 10));
    /* The local vassal stops: its entry is forgotten; the remote set
     * still names the copies. */
    subcerts_sweep(rc, 1000000);
    assert_true(exists_on_receiver("ssl/app.key"));
    assert_true(exists_on_receiver("ssl/app.crt"));
    assert_true(clustercerts_held(cc, UID, &s, sd, 20));
    /* The local files change and the local check copies them over. */
    sh("cp ssl/app.key ssl/app.key.old && cp ssl/app.crt ssl/app.crt.old && "
       "openssl genrsa -out ssl/app.key 2048 && openssl req -new -x509 -days 30 -key "
       "ssl/app.key -out ssl/app.crt -subj /CN=%s",
       NAME);
    assert_int_equal(subcerts_check(rc, UID, &s, 2000000, why, sizeof why), 0);
    assert_false(clustercerts_held(cc, UID, &s, sd, 30));
    sh("mv ssl/app.key.old ssl/app.key && mv ssl/app.crt.old ssl/app.crt");
    clustercerts_free(cc);
    subcerts_free(rc);
}

/* Besides max_sets per sender, CLUSTERCERTS_MAX_UID_SETS per (sender,
 * container): one customer cannot use up a member's room. */
static void test_sets_per_container_are_bounded(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subcerts_t *rc = receiver_certs();
    clustercerts_t *cc = receiver(rc, 100);
    char why[512], kp[64], cp[64];
    for (int i = 0; i <= CLUSTERCERTS_MAX_UID_SETS; i++) {
        snprintf(kp, sizeof kp, HOMEP "k%d.key", i);
        snprintf(cp, sizeof cp, HOMEP "k%d.crt", i);
        size_t n = forged_at(UID, "other.test", kp, cp, "other.key", "other.crt");
        int r = asked_install(cc, n, 0, why, sizeof why);
        if (i < CLUSTERCERTS_MAX_UID_SETS && r < 0)
            fail_msg("set %d: %s", i, why);
        if (i == CLUSTERCERTS_MAX_UID_SETS) {
            assert_int_equal(r, -1);
            assert_non_null(strstr(why, "certificate sets of container 30091 here"));
        }
    }
    clustercerts_free(cc);
    subcerts_free(rc);
}

/* A CERT is installed only as the answer to a NEED this node sent to its
 * sender, for that set, within CLUSTERCERTS_ASK_MS, and only once. */
static void test_only_an_asked_for_set_is_installed(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subcerts_t *rc = receiver_certs();
    clustercerts_t *cc = receiver(rc, 8);
    char why[512];
    size_t n = forged("other.test", "other.key", "other.crt");
    assert_int_equal(clustercerts_install(cc, SENDER, buf, n, 0, why, sizeof why), -1);
    assert_non_null(strstr(why, "did not ask for"));
    assert_false(exists_on_receiver("x.key"));
    /* Asked of another member. */
    n = forged("other.test", "other.key", "other.crt");
    assert_true(ask(cc, "203.0.113.9", n, 0));
    assert_int_equal(clustercerts_install(cc, SENDER, buf, n, 0, why, sizeof why), -1);
    /* Asked too long ago. */
    n = forged("other.test", "other.key", "other.crt");
    assert_true(ask(cc, SENDER, n, 0));
    assert_int_equal(
        clustercerts_install(cc, SENDER, buf, n, CLUSTERCERTS_ASK_MS, why, sizeof why), -1);
    assert_false(exists_on_receiver("x.key"));
    /* Asked: installed once; the same CERT again (a replay) is not. */
    n = forged("other.test", "other.key", "other.crt");
    assert_true(ask(cc, SENDER, n, 20000));
    if (clustercerts_install(cc, SENDER, buf, n, 20001, why, sizeof why) < 0)
        fail_msg("%s", why);
    assert_true(exists_on_receiver("x.key"));
    n = forged("other.test", "other.key", "other.crt");
    assert_int_equal(clustercerts_install(cc, SENDER, buf, n, 20002, why, sizeof why), -1);
    assert_non_null(strstr(why, "did not ask for"));
    clustercerts_free(cc);
    subcerts_free(rc);
}

/* A set this node refused is not asked for again (no NEED, no 60 KB CERT,
 * no check) from that sender for CLUSTERCERTS_REFUSED_MS. */
static void test_a_refused_set_is_not_asked_for_again(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subcerts_t *rc = receiver_certs();
    clustercerts_t *cc = receiver(rc, 8);
    char why[512];
    sh("openssl genrsa -out weak2.key 1024 && openssl req -new -x509 -days 30 -key weak2.key "
       "-out weak2.crt -subj /CN=other.test");
    size_t n = forged("other.test", "weak2.key", "weak2.crt");
    assert_true(ask(cc, SENDER, n, 0));
    assert_int_equal(clustercerts_install(cc, SENDER, buf, n, 0, why, sizeof why), -1);
    n = forged("other.test", "weak2.key", "weak2.crt");
    assert_false(ask(cc, SENDER, n, 1000));
    assert_false(ask(cc, SENDER, n, CLUSTERCERTS_REFUSED_MS - 1));
    assert_true(ask(cc, "203.0.113.9", n, 1000));
    assert_true(ask(cc, SENDER, n, CLUSTERCERTS_REFUSED_MS));
    /* A good set of that sender is still asked for. */
    n = forged("other.test", "other.key", "other.crt");
    assert_true(ask(cc, SENDER, n, 1000));
    clustercerts_free(cc);
    subcerts_free(rc);
}

static void test_need_and_sub_payloads(void **state)
{
    (void)state;
    unsigned char d[32], d2[32], out[512];
    for (int i = 0; i < 32; i++)
        d[i] = (unsigned char)(i * 9 + 1);
    err_t e = {0};
    ssize_t n = clustercerts_need(UID, HOMEP "ssl/app.key", d, out, sizeof out, &e);
    assert_true(n > 0);
    assert_memory_equal(out, "30091\0" HOMEP "ssl/app.key\0", 6 + strlen(HOMEP "ssl/app.key") + 1);
    uid_t uid;
    char key[256];
    assert_int_equal(clustercerts_need_parse(out, (size_t)n, &uid, key, d2, &e), 0);
    assert_int_equal(uid, UID);
    assert_string_equal(key, HOMEP "ssl/app.key");
    assert_memory_equal(d, d2, 32);
    for (ssize_t len = 0; len < n; len++)
        assert_int_equal(clustercerts_need_parse(out, (size_t)len, &uid, key, d2, &e), -1);
    assert_int_equal(clustercerts_need_parse((const unsigned char *)"123\0/k\0zz", 10, &uid, key,
                                             d2, &e),
                     -1);
    assert_int_equal(clustercerts_need(UID, HOMEP "ssl/app.key", d, out, 20, &e), -1);
    /* A SUB: the packet alone, or with a digest after it. */
    pkt_t p = packet(0, NAME, "203.0.113.3:3032");
    size_t pl;
    const unsigned char *dg;
    assert_int_equal(clustercerts_sub_split(p.b, p.len, &pl, &dg, &e), 0);
    assert_int_equal(pl, p.len);
    assert_null(dg);
    memcpy(p.b + p.len, d, 32);
    assert_int_equal(clustercerts_sub_split(p.b, p.len + 32, &pl, &dg, &e), 0);
    assert_int_equal(pl, p.len);
    assert_ptr_equal(dg, p.b + p.len);
    assert_int_equal(clustercerts_sub_split(p.b, p.len + 31, &pl, &dg, &e), -1);
    assert_int_equal(clustercerts_sub_split(p.b, 3, &pl, &dg, &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_set_travels_and_is_installed_at_the_same_path),
        cmocka_unit_test(test_a_key_and_certificate_in_one_file),
        cmocka_unit_test(test_a_set_too_large_for_a_datagram_is_refused),
        cmocka_unit_test(test_a_bad_set_is_refused_and_not_written),
        cmocka_unit_test(test_the_receiver_checks_as_the_gate_does),
        cmocka_unit_test(test_sets_per_sender_are_bounded_and_swept),
        cmocka_unit_test(test_a_failed_install_leaves_no_key),
        cmocka_unit_test(test_local_and_remote_users_of_one_copy),
        cmocka_unit_test(test_sets_per_container_are_bounded),
        cmocka_unit_test(test_only_an_asked_for_set_is_installed),
        cmocka_unit_test(test_a_refused_set_is_not_asked_for_again),
        cmocka_unit_test(test_need_and_sub_payloads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
