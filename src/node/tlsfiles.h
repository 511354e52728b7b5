/* tlsfiles.h - the node's one owner of PEM keys and certificates
 * (docs/design/issue18/CONTRACT.md, docs/ROUTER.md "HTTPS").
 *
 * The subscription gate checks the key, certificate and CA files a
 * customer names in ssl-domain / ssl-ca-domain before the router may load
 * copies of them; the router's default certificate is made here; the ACME
 * thread installs what it obtained through here.  OpenSSL does the
 * parsing and the checks; nothing here is cryptography of our own. */
#ifndef IMP_NODE_TLSFILES_H
#define IMP_NODE_TLSFILES_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "../common/err.h"

#define TLS_FILE_MAX (1024 * 1024) /* a key, a chain or a CA bundle */
#define TLS_CA_MAX_CERTS 100
#define TLS_CHAIN_MAX 10 /* certificates after the leaf */

/* Make a self-signed EC P-256 certificate for `cn` valid `days` days and
 * write key and certificate (atomically, mode 0640, group `gid`, owner
 * root) to key_path and crt_path.  0, or -1 with `e` set. */
int tls_make_self_signed(const char *cn, int days, const char *key_path, const char *crt_path,
                         gid_t gid, err_t *e);

/* Replace dirfd/name (a plain name) with `len` bytes of `data`, root:gid
 * 0640, atomically: a hidden temporary made with O_EXCL|O_NOFOLLOW, given
 * its owner and mode, written, synced, then renamed over `name`.  For the
 * router's files only (a directory of the node's: nothing here is a
 * customer's).  0, or -1 with `e` set. */
int tls_write_at(int dirfd, const char *name, const void *data, size_t len, gid_t gid, err_t *e);

/* Install dirfd/<name>.key then dirfd/<name>.crt (tls_write_at each), e.g.
 * what ACME obtained.  0, or -1 with `e` set. */
int tls_install_pair(int dirfd, const char *name, const char *key_pem, size_t key_len,
                     const char *crt_pem, size_t crt_len, gid_t gid, err_t *e);

/* Check a key and certificate chain (PEM text) as the router would load
 * them for subscription key `name` (".example.org" is a wildcard: the
 * certificate must be for "*.example.org"): both parse (an encrypted key
 * is refused), they match, the certificate is for the name (a ":port"
 * suffix of the key aside) and valid now; the key type and chain length
 * as tls_clean_pair says.
 * 0 when fine (and *not_after, when not NULL, is its expiry); -1 with a
 * sentence the customer can act on in `why`. */
int tls_check_pair(const char *key_pem, size_t key_len, const char *crt_pem, size_t crt_len,
                   const char *name, time_t *not_after, char *why, size_t why_len);

/* tls_check_pair, and more: the key is EC P-256/P-384, Ed25519 or RSA
 * of 2048..4096 bits (a bigger one would cost the shared router dearly
 * at every handshake) and at most TLS_CHAIN_MAX certificates follow the
 * leaf.  When key_out/crt_out are not NULL, they receive (malloc'd) what
 * OpenSSL parsed written again as PEM: the key, the leaf and its chain,
 * nothing else of the input (text, DH parameters...).  0, or -1 with `why`. */
int tls_clean_pair(const char *key_pem, size_t key_len, const char *crt_pem, size_t crt_len,
                   const char *name, time_t *not_after, char **key_out, size_t *key_out_len,
                   char **crt_out, size_t *crt_out_len, char *why, size_t why_len);

/* Check a CA file (PEM): 1..TLS_CA_MAX_CERTS certificates.  0, or -1 with `why`. */
int tls_check_ca(const char *pem, size_t len, char *why, size_t why_len);
/* tls_check_ca, and `out` (malloc'd, when not NULL): the certificates
 * written again as PEM, nothing else. */
int tls_clean_ca(const char *pem, size_t len, char **out, size_t *out_len, char *why,
                 size_t why_len);

#endif
