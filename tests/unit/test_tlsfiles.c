/* Unit tests for src/node/tlsfiles.c: the checks the subscription gate
 * makes on a customer's key, certificate and CA files, the router's
 * default certificate, and the atomic root:router writes.  Keys and
 * certificates are made by the openssl CLI (the seed's commands, with
 * -subj) in a temporary directory; the two with past or future dates, which
 * the CLI of OpenSSL 3.0 cannot make, with the library. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../../src/node/tlsfiles.h"

static char dir[64];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Run an openssl command line in the temporary directory. */
static void sh(const char *fmt, ...)
{
    char cmd[2048], full[2200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "cd %s && (%s) >/dev/null 2>&1", dir, cmd);
    if (system(full) != 0)
        fail_msg("failed: %s", cmd);
}

/* A file of the temporary directory, read whole (NUL-terminated). */
static char *slurp(const char *name, size_t *len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 20);
    assert_non_null(buf);
    *len = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    return buf;
}

/* tls_check_pair on two files of the directory; `why` when refused. */
static int check(const char *key, const char *crt, const char *name, char *why, size_t why_len)
{
    size_t kl, cl;
    char *k = slurp(key, &kl), *c = slurp(crt, &cl);
    why[0] = '\0';
    int rc = tls_check_pair(k, kl, c, cl, name, NULL, why, why_len);
    free(k);
    free(c);
    return rc;
}

static void refused_with(const char *key, const char *crt, const char *name, const char *want)
{
    char why[512];
    assert_int_equal(check(key, crt, name, why, sizeof why), -1);
    if (!strstr(why, want))
        fail_msg("%s/%s for %s: got \"%s\", want \"%s\"", key, crt, name, why, want);
}

/* A certificate for `cn` signed by the key in `key`, valid from `from` to
 * `to` seconds from now. */
static void dated_cert(const char *key, const char *cn, long from, long to, const char *out)
{
    size_t kl;
    char *k = slurp(key, &kl);
    BIO *b = BIO_new_mem_buf(k, (int)kl);
    EVP_PKEY *pk = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    assert_non_null(pk);
    X509 *x = X509_new();
    X509_NAME *nm = X509_get_subject_name(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), to));
    assert_int_equal(X509_set_pubkey(x, pk), 1);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, nm);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, out);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
    BIO_free(b);
    free(k);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/imp-tlsfiles-XXXXXX");
    assert_non_null(mkdtemp(dir));
    /* The seed's self-signed certificate (CN only, no subjectAltName). */
    sh("openssl genrsa -out foobar.key 2048");
    sh("openssl req -new -key foobar.key -out foobar.csr -subj /CN=mynewdomain.org");
    sh("openssl x509 -req -days 365 -in foobar.csr -signkey foobar.key -out foobar.crt");
    /* Another pair, with a subjectAltName, EC. */
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key "
       "-out other.crt -days 30 -subj /CN=other.test -addext subjectAltName=DNS:other.test");
    /* A wildcard certificate, and one for a single name under it. */
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout wild.key -out wild.crt -days 30 "
       "-subj /CN=example.org -addext subjectAltName=DNS:*.example.org");
    sh("openssl req -x509 -new -key wild.key -out www.crt -days 30 -subj /CN=www.example.org");
    /* The seed's CA: an encrypted key (-des3), a certificate. */
    sh("openssl genrsa -des3 -passout pass:secret -out ca.key 2048");
    sh("openssl req -new -x509 -days 365 -key ca.key -passin pass:secret -out ca.crt "
       "-subj /CN=customer-ca");
    sh("openssl pkey -in other.key -aes256 -passout pass:secret -out other-enc.key");
    sh("printf 'hello, not a key\\n' > garbage.pem");
    sh("for i in $(seq 101); do cat ca.crt; done > many.crt");
    sh("for i in $(seq 100); do cat ca.crt; done > hundred.crt");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_a_matching_pair_for_its_name_passes(void **state)
{
    (void)state;
    char why[512];
    assert_int_equal(check("foobar.key", "foobar.crt", "mynewdomain.org", why, sizeof why), 0);
    assert_int_equal(check("other.key", "other.crt", "OTHER.test", why, sizeof why), 0);
    size_t kl, cl;
    char *k = slurp("other.key", &kl), *c = slurp("other.crt", &cl);
    time_t until = 0;
    assert_int_equal(tls_check_pair(k, kl, c, cl, "other.test", &until, why, sizeof why), 0);
    assert_true(until > time(NULL) + 29 * 86400 && until < time(NULL) + 31 * 86400);
    free(k);
    free(c);
}

static void test_a_key_of_another_certificate_is_refused(void **state)
{
    (void)state;
    refused_with("other.key", "foobar.crt", "mynewdomain.org",
                 "the key does not match the certificate");
    refused_with("foobar.key", "wild.crt", "a.example.org", "does not match");
}

static void test_a_certificate_for_another_name_is_refused(void **state)
{
    (void)state;
    refused_with("foobar.key", "foobar.crt", "other.test",
                 "the certificate is not valid for other.test");
    refused_with("other.key", "other.crt", "sub.other.test", "not valid for sub.other.test");
}

static void test_a_wildcard_key_needs_a_wildcard_certificate(void **state)
{
    (void)state;
    char why[512];
    assert_int_equal(check("wild.key", "wild.crt", ".example.org", why, sizeof why), 0);
    assert_int_equal(check("wild.key", "wild.crt", "a.example.org", why, sizeof why), 0);
    /* A certificate for one name under it does not cover the wildcard. */
    refused_with("wild.key", "www.crt", ".example.org",
                 "the certificate is not valid for *.example.org");
    assert_int_equal(check("wild.key", "www.crt", "www.example.org", why, sizeof why), 0);
    /* *.example.org covers one label only. */
    refused_with("wild.key", "wild.crt", ".b.example.org", "not valid for *.b.example.org");
}

static void test_expired_and_future_certificates_are_refused(void **state)
{
    (void)state;
    dated_cert("foobar.key", "mynewdomain.org", -10 * 86400, -86400, "expired.crt");
    dated_cert("foobar.key", "mynewdomain.org", 86400, 10 * 86400, "future.crt");
    refused_with("foobar.key", "expired.crt", "mynewdomain.org", "the certificate has expired");
    refused_with("foobar.key", "future.crt", "mynewdomain.org", "the certificate is not valid yet");
}

static void test_an_encrypted_key_is_refused(void **state)
{
    (void)state;
    const char *want = "the key is encrypted: give the router a key without a passphrase "
                       "(openssl pkey -in k -out k2)";
    refused_with("ca.key", "ca.crt", "customer-ca", want);          /* the seed's genrsa -des3 */
    refused_with("other-enc.key", "other.crt", "other.test", want); /* PKCS#8 */
}

static void test_garbage_is_refused(void **state)
{
    (void)state;
    refused_with("garbage.pem", "foobar.crt", "mynewdomain.org",
                 "the key is not a PEM private key");
    refused_with("foobar.key", "garbage.pem", "mynewdomain.org",
                 "the certificate is not a PEM certificate");
    refused_with("foobar.crt", "foobar.key", "mynewdomain.org", "not a PEM private key");
    char why[256];
    assert_int_equal(tls_check_pair("", 0, "", 0, "x.org", NULL, why, sizeof why), -1);
}

static void test_a_ca_file_holds_1_to_100_certificates(void **state)
{
    (void)state;
    char why[512];
    size_t len;
    char *pem = slurp("ca.crt", &len);
    assert_int_equal(tls_check_ca(pem, len, why, sizeof why), 0);
    free(pem);
    pem = slurp("hundred.crt", &len);
    assert_int_equal(tls_check_ca(pem, len, why, sizeof why), 0);
    free(pem);
    pem = slurp("many.crt", &len);
    assert_int_equal(tls_check_ca(pem, len, why, sizeof why), -1);
    assert_string_equal(why, "the CA file holds more than 100 certificates");
    free(pem);
    pem = slurp("garbage.pem", &len);
    assert_int_equal(tls_check_ca(pem, len, why, sizeof why), -1);
    assert_string_equal(why, "the CA file holds no PEM certificate");
    free(pem);
}

static void test_only_modest_key_types_are_taken(void **state)
{
    (void)state;
    /* 4160 bits (4 primes: made fast, refused all the same). */
    sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4160 -pkeyopt "
       "rsa_keygen_primes:4 -out big.key");
    refused_with("big.key", "foobar.crt", "mynewdomain.org",
                 "the key is RSA of 4160 bits: the router takes RSA of 2048 to 4096 bits");
    sh("openssl genrsa -out small.key 1024");
    refused_with("small.key", "foobar.crt", "mynewdomain.org", "the key is RSA of 1024 bits");
    sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out p521.key");
    refused_with("p521.key", "foobar.crt", "mynewdomain.org",
                 "the key is EC on curve secp521r1: the router takes EC P-256 or P-384");
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout p384.key "
       "-out p384.crt -days 30 -subj /CN=p384.test");
    char why[512];
    assert_int_equal(check("p384.key", "p384.crt", "p384.test", why, sizeof why), 0);
    sh("openssl req -x509 -newkey ed25519 -nodes -keyout ed.key -out ed.crt -days 30 "
       "-subj /CN=ed.test");
    assert_int_equal(check("ed.key", "ed.crt", "ed.test", why, sizeof why), 0);
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (; (s = strstr(s, what)); s++)
        n++;
    return n;
}

/* What the copies get: the parsed key, leaf and chain as PEM, and nothing
 * else of the customer's file (text, DH parameters uWSGI would read from
 * a certificate file, ...). */
static void test_only_what_was_parsed_is_written_back(void **state)
{
    (void)state;
    sh("openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out dh.pem");
    sh("(echo junk before; cat other.key; echo junk after) > messy.key");
    sh("(echo junk; cat other.crt dh.pem ca.crt; echo tail junk) > messy.crt");
    size_t kl, cl, kol = 0, col = 0;
    char *k = slurp("messy.key", &kl), *c = slurp("messy.crt", &cl), *ko = NULL, *co = NULL;
    char why[512];
    assert_int_equal(tls_clean_pair(k, kl, c, cl, "other.test", NULL, &ko, &kol, &co, &col, why,
                                    sizeof why),
                     0);
    assert_int_equal(kol, strlen(ko));
    assert_int_equal(col, strlen(co));
    assert_int_equal(strncmp(ko, "-----BEGIN PRIVATE KEY-----\n", 28), 0);
    assert_null(strstr(ko, "junk"));
    assert_int_equal(strncmp(co, "-----BEGIN CERTIFICATE-----\n", 28), 0);
    assert_int_equal(count(co, "-----BEGIN CERTIFICATE-----"), 2);
    assert_int_equal(count(co, "-----BEGIN"), 2);
    assert_null(strstr(co, "junk"));
    assert_null(strstr(co, "DH PARAMETERS"));
    free(ko);
    free(co);
    free(k);
    free(c);
    /* The CA file likewise. */
    c = slurp("messy.crt", &cl);
    assert_int_equal(tls_clean_ca(c, cl, &co, &col, why, sizeof why), 0);
    assert_int_equal(count(co, "-----BEGIN"), 2);
    assert_null(strstr(co, "DH PARAMETERS"));
    free(co);
    free(c);
    /* A chain: at most 10 certificates after the leaf. */
    sh("cp other.crt ten.crt && for i in 1 2 3 4 5 6 7 8 9 10; do cat ca.crt >> ten.crt; done");
    assert_int_equal(check("other.key", "ten.crt", "other.test", why, sizeof why), 0);
    sh("cp ten.crt eleven.crt && cat ca.crt >> eleven.crt");
    refused_with("other.key", "eleven.crt", "other.test",
                 "the certificate holds more than 11 certificates");
}

static void test_a_port_in_the_key_is_not_part_of_the_name(void **state)
{
    (void)state;
    char why[512];
    assert_int_equal(check("other.key", "other.crt", "other.test:8443", why, sizeof why), 0);
    refused_with("other.key", "other.crt", "another.test:8443",
                 "the certificate is not valid for another.test");
}

static void assert_router_file(const char *path, gid_t gid)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(st.st_gid, gid);
}

static void test_the_default_certificate_is_a_self_signed_pair(void **state)
{
    (void)state;
    gid_t gid = geteuid() == 0 ? 4242 : getegid();
    char key[128], crt[128];
    snprintf(key, sizeof key, "%s/default.key", dir);
    snprintf(crt, sizeof crt, "%s/default.crt", dir);
    err_t e = {0};
    if (geteuid() != 0)
        skip(); /* the files are root's */
    assert_int_equal(tls_make_self_signed("imperium default certificate", 3650, key, crt, gid, &e),
                     0);
    assert_router_file(key, gid);
    assert_router_file(crt, gid);
    FILE *f = fopen(crt, "r");
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    f = fopen(key, "r");
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    assert_non_null(k);
    assert_int_equal(X509_check_private_key(x, k), 1);
    assert_string_equal(EVP_PKEY_get0_type_name(k), "EC");
    char cn[128];
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    assert_string_equal(cn, "imperium default certificate");
    assert_true(X509_cmp_time(X509_get0_notAfter(x), &(time_t){time(NULL) + 3649L * 86400}) > 0);
    assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);
    X509_free(x);
    EVP_PKEY_free(k);
    /* A directory that is not there: a clear error. */
    assert_int_equal(tls_make_self_signed("x", 1, "/nonexistent/imp/k", crt, gid, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/imp"));
}

static void test_writes_replace_atomically_and_follow_no_link(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(dfd >= 0);
    char victim[128], path[128];
    snprintf(victim, sizeof victim, "%s/victim", dir);
    sh("echo keep > victim");
    /* A link where the temporary goes is removed, not written through; a
     * file named like a temporary (a customer's copy could be) is not
     * the temporary. */
    assert_int_equal(symlinkat(victim, dfd, ".n.key\001tmp"), 0);
    sh("echo mine > .n.key.tmp");
    err_t e = {0};
    assert_int_equal(tls_install_pair(dfd, "n", "KEY", 3, "CRT", 3, 4243, &e), 0);
    size_t len;
    char *v = slurp("victim", &len);
    assert_string_equal(v, "keep\n");
    free(v);
    v = slurp("n.crt", &len);
    assert_string_equal(v, "CRT");
    free(v);
    snprintf(path, sizeof path, "%s/n.key", dir);
    assert_router_file(path, 4243);
    assert_int_equal(faccessat(dfd, ".n.key\001tmp", F_OK, AT_SYMLINK_NOFOLLOW), -1);
    v = slurp(".n.key.tmp", &len);
    assert_string_equal(v, "mine\n");
    free(v);
    assert_int_equal(tls_write_at(dfd, "a/b", "x", 1, 0, &e), -1);
    close(dfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_matching_pair_for_its_name_passes),
        cmocka_unit_test(test_a_key_of_another_certificate_is_refused),
        cmocka_unit_test(test_a_certificate_for_another_name_is_refused),
        cmocka_unit_test(test_a_wildcard_key_needs_a_wildcard_certificate),
        cmocka_unit_test(test_expired_and_future_certificates_are_refused),
        cmocka_unit_test(test_an_encrypted_key_is_refused),
        cmocka_unit_test(test_garbage_is_refused),
        cmocka_unit_test(test_a_ca_file_holds_1_to_100_certificates),
        cmocka_unit_test(test_only_modest_key_types_are_taken),
        cmocka_unit_test(test_only_what_was_parsed_is_written_back),
        cmocka_unit_test(test_a_port_in_the_key_is_not_part_of_the_name),
        cmocka_unit_test(test_the_default_certificate_is_a_self_signed_pair),
        cmocka_unit_test(test_writes_replace_atomically_and_follow_no_link),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
