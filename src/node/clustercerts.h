/* clustercerts.h - ssl-cluster-domain: the certificate set a cluster
 * subscription names (sni_key, sni_crt, sni_ca), carried from the member
 * whose container announced it to the other members of its legions
 * inside sealed envelopes (clustercrypt.h): the private key travels only
 * encrypted with the legion's secret, and only members can plant a set.
 *
 * The exchange (the gate, subgate.c, does the sending):
 *   sender:   the gate checked and copied the set (subcerts_check); it
 *             forwards the packet as a CLUSTER_SUB whose payload is the
 *             packet followed by the set's 32-byte digest
 *             (clustercerts_digest), so every 2 s members learn whether
 *             their copy is current;
 *   receiver: clustercerts_sub_split; clustercerts_held for that digest:
 *             forward the packet to the router; else, when clustercerts_ask
 *             says so (it records the NEED), answer a CLUSTER_NEED
 *             (clustercerts_need) and hold the packet back (the next
 *             announcement, 2 s later, gets through once the set is in);
 *   sender:   on a NEED (clustercerts_need_parse) for a set it forwards,
 *             one CLUSTER_CERT (clustercerts_pack), its buffers wiped;
 *   receiver: clustercerts_install: checked exactly as a local file, then
 *             root:router 0640 copies at <router homes>/<uid>/<rel>, the
 *             path the signed packet names (/containers/<uid>/<rel> in the
 *             router's namespace), through subcerts' one writer.
 *
 * A CLUSTER_CERT payload, length-prefixed (big endian), at most
 * CLUSTER_MAX_PAYLOAD bytes:
 *   "IMPC1" | uid (4) | name (1 + bytes) | key path (1 + bytes) |
 *   crt path (1 + bytes) | ca path (1 + bytes; 0: no CA) |
 *   crt PEM (4 + bytes) | ca PEM (4 + bytes) | key PEM (4 + bytes)
 * The PEMs are the sender's router copies (what OpenSSL parsed of the
 * customer's files).  The digest is SHA-256 over (4-byte length, bytes) of
 * the key, certificate and CA PEM, in that order.
 *
 * Only the gate's thread uses a clustercerts_t. */
#ifndef IMP_NODE_CLUSTERCERTS_H
#define IMP_NODE_CLUSTERCERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/err.h"
#include "subcerts.h"
#include "subscription.h"

#define CLUSTERCERTS_MAGIC "IMPC1"
#define CLUSTERCERTS_DIGEST 32

/* The CERT payload of the set subscription `s` of container `uid` names,
 * read from the router's copies under router_homes (the gate's check,
 * subcerts_check, made them: call it after that check passed), into out
 * (cap bytes; CLUSTER_MAX_PAYLOAD is enough), and its digest.  The
 * payload's length, or -1 with a sentence for the customer's router.log in
 * `why` (a set larger than CLUSTER_MAX_PAYLOAD: "the certificate chain of
 * NAME is too large to travel in the cluster (N > 60000 bytes)").  out
 * holds a private key: the caller wipes it (sodium_memzero) once sealed;
 * on failure it is wiped here. */
ssize_t clustercerts_pack(const char *router_homes, uid_t uid, const subscription_t *s,
                          unsigned char *out, size_t cap, unsigned char digest[CLUSTERCERTS_DIGEST],
                          char *why, size_t why_len);

/* Only the digest of that set (clustercerts_pack into a buffer of its
 * own, wiped): what the sender appends to a CLUSTER_SUB.  0, or -1 with
 * `why`. */
int clustercerts_digest(const char *router_homes, uid_t uid, const subscription_t *s,
                        unsigned char digest[CLUSTERCERTS_DIGEST], char *why, size_t why_len);

/* A CLUSTER_SUB payload: the uWSGI packet (its 4-byte header gives its
 * size), then, when it names certificate files, their set's digest.
 * *pkt_len is the packet's length and *digest points at the digest or is
 * NULL.  0, or -1 with e set (not a packet; trailing bytes that are not a
 * digest). */
int clustercerts_sub_split(const unsigned char *payload, size_t len, size_t *pkt_len,
                           const unsigned char **digest, err_t *e);

/* A CLUSTER_NEED payload: "uid\0key path\0digest in hex" (the key path as
 * the packet names it).  Its length, or -1 with e set when cap is short. */
ssize_t clustercerts_need(uid_t uid, const char *key_path,
                          const unsigned char digest[CLUSTERCERTS_DIGEST], unsigned char *out,
                          size_t cap, err_t *e);
int clustercerts_need_parse(const unsigned char *payload, size_t len, uid_t *uid,
                            char key_path[256], unsigned char digest[CLUSTERCERTS_DIGEST],
                            err_t *e);

/* ---- the receiving member ----------------------------------------------------- */

typedef struct clustercerts clustercerts_t;

/* Sets held for one sender and one container at most (beside max_sets
 * per sender): one customer cannot use up what a member may plant. */
#define CLUSTERCERTS_MAX_UID_SETS 16
/* A NEED stands this long: only a CERT answering one is installed. */
#define CLUSTERCERTS_ASK_MS 10000
#define CLUSTERCERTS_ASKED 256
/* A set refused here is not asked for again (no NEED to its sender for
 * that digest) this long. */
#define CLUSTERCERTS_REFUSED_MS 300000
#define CLUSTERCERTS_REFUSED 256

typedef struct {
    subcerts_t *certs;        /* the gate's: its writer, its router homes */
    size_t max_sets;          /* sets held for one sender at most (and
                                 CLUSTERCERTS_MAX_UID_SETS of one container) */
    long long forget_ms;      /* a set no announcement asked for this long is removed */
} clustercerts_opts_t;

clustercerts_t *clustercerts_new(const clustercerts_opts_t *o, err_t *e);
/* Frees the records; the copies stay (the start-up purge of subcerts_new
 * removes them at the next start). */
void clustercerts_free(clustercerts_t *cc);

/* The set packet `s` of container `uid` names is installed here with this
 * digest and its copies still hold what was installed (a local container
 * of the same uid may have written them since) (and it is marked as asked
 * for at now_ms). */
bool clustercerts_held(clustercerts_t *cc, uid_t uid, const subscription_t *s,
                       const unsigned char digest[CLUSTERCERTS_DIGEST], long long now_ms);

/* Before sending a NEED for (uid, key path, digest) to member `sender`:
 * false when not to send it (that sender's set with that digest was
 * refused here within CLUSTERCERTS_REFUSED_MS); true, and the NEED is
 * recorded for CLUSTERCERTS_ASK_MS (the oldest of CLUSTERCERTS_ASKED is
 * forgotten), so clustercerts_install takes a CERT only as its answer: a
 * CERT replayed towards another member installs nothing there. */
bool clustercerts_ask(clustercerts_t *cc, const char *sender, uid_t uid, const char *key_path,
                      const unsigned char digest[CLUSTERCERTS_DIGEST], long long now_ms);

/* Install a CLUSTER_CERT payload from member `sender`, answering a NEED
 * clustercerts_ask recorded (same sender, uid, key path and digest; each
 * NEED is answered once; anything else is ignored, with `why`).  The
 * caller drops envelopes whose sender is this node itself.  Parsed, its
 * paths
 * /containers/<uid>/<rel> (not under run/, no "." or "..", at most
 * SUBSCRIPTION_PATH_DEPTH components), checked and copied
 * (subcerts_install_set), remembered with its digest.  The payload is
 * wiped (sodium_memzero) in every case.  0, or -1 with `why`. */
int clustercerts_install(clustercerts_t *cc, const char *sender, unsigned char *payload,
                         size_t len, long long now_ms, char *why, size_t why_len);

/* Remove the sets not asked for during forget_ms, with their copies no
 * local entry or other set names (subcerts counts every user). */
void clustercerts_sweep(clustercerts_t *cc, long long now_ms);

#endif
