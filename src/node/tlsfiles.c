/* tlsfiles.c - PEM keys and certificates for the router (tlsfiles.h).
 * OpenSSL 3 parses and checks; this file only says what went wrong in
 * words a customer can act on. */
#include "tlsfiles.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/core_names.h>

#include "../common/fsutil.h"
#include "../common/strutil.h"

/* ---- writing a file the router reads ---------------------------------------- */

int tls_write_at(int dirfd, const char *name, const void *data, size_t len, gid_t gid, err_t *e)
{
    if (!*name || strchr(name, '/') || strlen(name) > 240)
        return err_set(e, ERR_INTERNAL, "write %s: not a plain file name", name);
    /* The temporary's name holds a control character: no customer path
     * (subscription.c refuses them) can be it, so writing one copy never
     * replaces another's file of that name. */
    char tmp[256];
    snprintf(tmp, sizeof tmp, ".%s\001tmp", name);
    /* A stale temporary from a crash is ours (the directory is root's):
     * remove it rather than follow it. */
    if (unlinkat(dirfd, tmp, 0) < 0 && errno != ENOENT)
        return err_set(e, ERR_INTERNAL, "remove %s: %s", tmp, strerror(errno));
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "create %s: %s", tmp, strerror(errno));
    /* Owner and mode before the content is visible under its name: the
     * router (group) reads it, nobody else. */
    bool ok = fchown(fd, 0, gid) == 0 && fchmod(fd, 0640) == 0 &&
              fs_write_all(fd, data, len) == 0 && fsync(fd) == 0;
    int err = errno;
    if (close(fd) < 0 && ok) {
        ok = false;
        err = errno;
    }
    if (ok && renameat(dirfd, tmp, dirfd, name) < 0) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        unlinkat(dirfd, tmp, 0);
        return err_set(e, ERR_INTERNAL, "write %s: %s", name, strerror(err));
    }
    return 0;
}

/* tls_write_at for a path: its directory opened without following a
 * symbolic link at its last component (the node's own tree). */
static int write_path(const char *path, const void *data, size_t len, gid_t gid, err_t *e)
{
    const char *slash = strrchr(path, '/');
    char *dir =
        slash ? str_printf("%.*s", slash == path ? 1 : (int)(slash - path), path) : str_printf(".");
    if (!dir)
        return err_set(e, ERR_INTERNAL, "out of memory");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        err_set(e, ERR_INTERNAL, "open %s: %s", dir, strerror(errno));
        free(dir);
        return -1;
    }
    free(dir);
    err_t we = {0};
    int rc = tls_write_at(dfd, slash ? slash + 1 : path, data, len, gid, &we);
    if (rc < 0)
        err_set(e, ERR_INTERNAL, "%s: %s", path, we.msg);
    close(dfd);
    return rc;
}

int tls_install_pair(int dirfd, const char *name, const char *key_pem, size_t key_len,
                     const char *crt_pem, size_t crt_len, gid_t gid, err_t *e)
{
    char key[256], crt[256];
    if (snprintf(key, sizeof key, "%s.key", name) >= (int)sizeof key ||
        snprintf(crt, sizeof crt, "%s.crt", name) >= (int)sizeof crt)
        return err_set(e, ERR_INPUT, "install a certificate: name too long: %s", name);
    /* Key first: a router that reads between the two renames finds a new
     * key with the old certificate, refuses the pair and keeps the old
     * context until the next announcement finds both new. */
    if (tls_write_at(dirfd, key, key_pem, key_len, gid, e) < 0 ||
        tls_write_at(dirfd, crt, crt_pem, crt_len, gid, e) < 0)
        return -1;
    return 0;
}

/* ---- the router's default certificate -------------------------------------- */

/* The PEM text of what `write` writes into a memory BIO; NULL on failure. */
static char *bio_text(BIO *b, size_t *len)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    if (n <= 0)
        return NULL;
    char *out = malloc((size_t)n + 1);
    if (!out)
        return NULL;
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    return out;
}

static X509 *self_signed(EVP_PKEY *pkey, const char *cn, int days)
{
    X509 *x = X509_new();
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    if (!x || RAND_bytes(serial, sizeof serial) != 1)
        goto fail;
    serial[0] &= 0x7f; /* a positive serial */
    if (!(bn = BN_bin2bn(serial, sizeof serial, NULL)) ||
        !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
        goto fail;
    X509_NAME *nm = X509_get_subject_name(x);
    if (X509_set_version(x, 2) != 1 || !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) ||
        X509_set_pubkey(x, pkey) != 1 ||
        X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) !=
            1 ||
        X509_set_issuer_name(x, nm) != 1 || X509_sign(x, pkey, EVP_sha256()) <= 0)
        goto fail;
    BN_free(bn);
    return x;
fail:
    BN_free(bn);
    X509_free(x);
    return NULL;
}

int tls_make_self_signed(const char *cn, int days, const char *key_path, const char *crt_path,
                         gid_t gid, err_t *e)
{
    int rc = -1;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = pkey ? self_signed(pkey, cn, days) : NULL;
    BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
    char *key = NULL, *crt = NULL;
    size_t key_len = 0, crt_len = 0;
    if (!x || !kb || !cb || PEM_write_bio_PrivateKey(kb, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
        PEM_write_bio_X509(cb, x) != 1 || !(key = bio_text(kb, &key_len)) ||
        !(crt = bio_text(cb, &crt_len))) {
        err_set(e, ERR_INTERNAL, "make a self-signed certificate for %s: %s", cn,
                ERR_reason_error_string(ERR_peek_last_error()) ?: "OpenSSL failed");
        goto out;
    }
    if (write_path(key_path, key, key_len, gid, e) < 0 ||
        write_path(crt_path, crt, crt_len, gid, e) < 0)
        goto out;
    rc = 0;
out:
    ERR_clear_error();
    if (key)
        OPENSSL_cleanse(key, key_len);
    free(key);
    free(crt);
    BIO_free(kb);
    BIO_free(cb);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

/* ---- checking what a customer names ------------------------------------------ */

/* The passphrase callback: no passphrase is given, and being asked means
 * the key is encrypted (the router could not load it either). */
static int no_passphrase(char *buf, int size, int rwflag, void *asked)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(bool *)asked = true;
    return -1;
}

static EVP_PKEY *read_key(const char *pem, size_t len, char *why, size_t why_len)
{
    if (len > INT_MAX)
        return str_why(why, why_len, "the key is too large"), NULL;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    bool asked = false;
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, &asked) : NULL;
    BIO_free(b);
    if (k)
        return k;
    if (asked)
        str_why(why, why_len,
                "the key is encrypted: give the router a key without a passphrase "
                "(openssl pkey -in k -out k2)");
    else
        str_why(why, why_len, "the key is not a PEM private key");
    return NULL;
}

/* The leaf (the first certificate) and up to `max` more, written again
 * as PEM into `out` when not NULL (only what OpenSSL parsed: no text,
 * no other PEM block); more than `max` is refused. */
static X509 *read_chain(const char *pem, size_t len, int max, BIO *out, const char *what,
                        char *why, size_t why_len)
{
    if (len > INT_MAX)
        return str_why(why, why_len, "the %s is too large", what), NULL;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *leaf = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    bool ok = leaf && (!out || PEM_write_bio_X509(out, leaf) == 1);
    int more = 0;
    for (X509 *x; ok && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)); more++) {
        ok = more < max && (!out || PEM_write_bio_X509(out, x) == 1);
        X509_free(x);
    }
    BIO_free(b);
    ERR_clear_error(); /* the end of the chain is a "no start line" error */
    if (!leaf) {
        str_why(why, why_len, "the %s %s", what,
                strcmp(what, "CA file") ? "is not a PEM certificate" : "holds no PEM certificate");
        return NULL;
    }
    if (!ok) {
        if (more >= max)
            str_why(why, why_len, "the %s holds more than %d certificates", what, max + 1);
        else
            str_why(why, why_len, "the node cannot copy the %s: out of memory", what);
        X509_free(leaf);
        return NULL;
    }
    return leaf;
}

/* The key types the router serves without a handshake costing the shared
 * router more than an ordinary one: EC P-256/P-384, Ed25519, RSA of
 * 2048..4096 bits. */
static int check_key_type(EVP_PKEY *k, char *why, size_t why_len)
{
    int bits = EVP_PKEY_get_bits(k);
    char group[64] = "";
    size_t glen = 0;
    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_RSA:
        if (bits >= 2048 && bits <= 4096)
            return 0;
        return str_why(why, why_len,
                       "the key is RSA of %d bits: the router takes RSA of 2048 to 4096 bits, or "
                       "EC P-256/P-384",
                       bits);
    case EVP_PKEY_EC:
        if (EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                           &glen) == 1 &&
            (!strcmp(group, "prime256v1") || !strcmp(group, "secp384r1") ||
             !strcmp(group, "P-256") || !strcmp(group, "P-384")))
            return 0;
        return str_why(why, why_len,
                       "the key is EC on curve %s: the router takes EC P-256 or P-384, or RSA of "
                       "2048 to 4096 bits",
                       group[0] ? group : "(unnamed)");
    case EVP_PKEY_ED25519:
        return 0;
    default:
        return str_why(why, why_len,
                       "the key type is not served: use EC P-256/P-384, Ed25519 or RSA of 2048 "
                       "to 4096 bits");
    }
}

/* The PEM text written into `b` (NULL out: nothing wanted). */
static int take_text(BIO *b, char **out, size_t *out_len, char *why, size_t why_len)
{
    if (!out)
        return 0;
    if (!(*out = bio_text(b, out_len)))
        return str_why(why, why_len, "the node cannot copy the files: out of memory");
    return 0;
}

/* Valid now: not before its notBefore, not after its notAfter. */
static int check_dates(X509 *x, time_t *not_after, char *why, size_t why_len)
{
    struct tm tm;
    if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0)
        return str_why(why, why_len, "the certificate is not valid yet");
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
        return str_why(why, why_len, "the certificate has expired");
    if (not_after && ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        *not_after = timegm(&tm);
    return 0;
}

/* The certificate serves `name`.  A subscription key ".example.org" is a
 * wildcard (uWSGI's dotsplit): the router serves every a.example.org with
 * it, so the certificate must be valid for "*.example.org".  X509_check_host
 * takes host names, not patterns: a probe label under the wildcard stands
 * for "any name there" (only a wildcard certificate, or one naming that
 * very probe, matches it). */
static int check_name(X509 *x, const char *name, char *why, size_t why_len)
{
    char probe[300];
    /* A subscription key may carry the port ("name:8443"): the certificate
     * is for the name. */
    int nlen = (int)strcspn(name, ":");
    if (snprintf(probe, sizeof probe, "%s%.*s", name[0] == '.' ? "imperium-probe" : "", nlen,
                 name) >= (int)sizeof probe)
        return str_why(why, why_len, "the name %s is too long", name);
    const char *host = probe;
    if (!*host || X509_check_host(x, host, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) != 1)
        return str_why(why, why_len, "the certificate is not valid for %s%.*s",
                       name[0] == '.' ? "*" : "", nlen, name);
    return 0;
}

int tls_clean_pair(const char *key_pem, size_t key_len, const char *crt_pem, size_t crt_len,
                   const char *name, time_t *not_after, char **key_out, size_t *key_out_len,
                   char **crt_out, size_t *crt_out_len, char *why, size_t why_len)
{
    int rc = -1;
    BIO *kb = key_out ? BIO_new(BIO_s_mem()) : NULL, *cb = crt_out ? BIO_new(BIO_s_mem()) : NULL;
    if ((key_out && !kb) || (crt_out && !cb)) {
        BIO_free(kb);
        BIO_free(cb);
        return str_why(why, why_len, "the node cannot check the files: out of memory");
    }
    EVP_PKEY *k = read_key(key_pem, key_len, why, why_len);
    X509 *x = k && check_key_type(k, why, why_len) == 0
                  ? read_chain(crt_pem, crt_len, TLS_CHAIN_MAX, cb, "certificate", why, why_len)
                  : NULL;
    if (!x)
        goto out;
    if (X509_check_private_key(x, k) != 1) {
        str_why(why, why_len, "the key does not match the certificate");
        goto out;
    }
    if (check_dates(x, not_after, why, why_len) < 0 || check_name(x, name, why, why_len) < 0)
        goto out;
    if (kb && PEM_write_bio_PrivateKey(kb, k, NULL, NULL, 0, NULL, NULL) != 1) {
        str_why(why, why_len, "the node cannot copy the key: out of memory");
        goto out;
    }
    if (take_text(kb, key_out, key_out_len, why, why_len) < 0)
        goto out;
    if (take_text(cb, crt_out, crt_out_len, why, why_len) < 0) {
        OPENSSL_clear_free(*key_out, *key_out_len);
        *key_out = NULL;
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error();
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    if (kb) { /* the key's PEM text: not left in freed memory */
        char *p;
        long n = BIO_get_mem_data(kb, &p);
        if (n > 0)
            OPENSSL_cleanse(p, (size_t)n);
        BIO_free(kb);
    }
    return rc;
}

int tls_check_pair(const char *key_pem, size_t key_len, const char *crt_pem, size_t crt_len,
                   const char *name, time_t *not_after, char *why, size_t why_len)
{
    return tls_clean_pair(key_pem, key_len, crt_pem, crt_len, name, not_after, NULL, NULL, NULL,
                          NULL, why, why_len);
}

int tls_clean_ca(const char *pem, size_t len, char **out, size_t *out_len, char *why,
                 size_t why_len)
{
    BIO *b = out ? BIO_new(BIO_s_mem()) : NULL;
    if (out && !b)
        return str_why(why, why_len, "the node cannot check the CA file: out of memory");
    X509 *first = read_chain(pem, len, TLS_CA_MAX_CERTS - 1, b, "CA file", why, why_len);
    int rc = first ? take_text(b, out, out_len, why, why_len) : -1;
    X509_free(first);
    BIO_free(b);
    return rc;
}

int tls_check_ca(const char *pem, size_t len, char *why, size_t why_len)
{
    return tls_clean_ca(pem, len, NULL, NULL, why, why_len);
}
