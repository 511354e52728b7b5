/* clustercrypt.h - what members of a legion send each other, sealed with
 * the legion's secret (docs/CLUSTER.md): a subscription forwarded from one
 * member's gate to another's, and (ssl-cluster-domain) the certificate set
 * it names.  libsodium's secretbox (XSalsa20-Poly1305) under a key derived
 * from the legion's `key`: only members can read or forge an envelope, so a
 * private key never travels in clear.
 *
 * An envelope is one UDP datagram:
 *   "IMPL1" | type (1 byte) | unix time (8 bytes, big endian) |
 *   nonce (24 bytes, random) | legion name length (1) | legion name |
 *   sender length (1) | sender (its server address, text) |
 *   secretbox(payload) (payload + 16 bytes)
 * The header (everything before the box) is authenticated too: it is bound
 * into the box as a BLAKE2b-256 hash prefixed to the payload before
 * sealing, and checked after opening. */
#ifndef IMP_NODE_CLUSTERCRYPT_H
#define IMP_NODE_CLUSTERCRYPT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common/err.h"

#define CLUSTER_MAGIC "IMPL1"
/* The largest payload (a certificate set, the biggest): one datagram. */
#define CLUSTER_MAX_PAYLOAD 60000
/* The largest envelope: payload, header (550 bytes with two 255-byte
 * names) and box overhead (the header's hash, 32, and the tag, 16). */
#define CLUSTER_MAX_ENVELOPE (CLUSTER_MAX_PAYLOAD + 640)
/* An envelope older or newer than this (seconds) is refused. */
#define CLUSTER_MAX_SKEW 30
/* A nonce seen within this many seconds (of CLOCK_MONOTONIC, whatever the
 * wall clock passed to cluster_open does) is a replay (>= 2 x the skew:
 * longer than any envelope stays acceptable).  One cache per legion: a
 * busy legion cannot fill another's.  The cache holds at most
 * 32768 nonces (1.3 MB); when full of younger ones, an envelope is refused
 * rather than a nonce forgotten early. */
#define CLUSTER_REPLAY_S 60

enum {
    CLUSTER_SUB = 1,  /* payload: a signed uWSGI subscription packet, unchanged */
    CLUSTER_NEED = 2, /* payload: "uid\0path-of-the-key\0digest-hex": send me this set */
    CLUSTER_CERT = 3, /* payload: a certificate set (clustercerts.h) */
};

typedef struct {
    unsigned char k[32];
} cluster_key_t;

/* The envelope key of a legion: BLAKE2b-256 of the legion's key (any
 * length >= 1; BLAKE2b's own key is limited to 16..64 bytes, so the
 * legion's key is the message) keyed with the constant "imperium legion
 * gate" (domain separation from the uWSGI member's cipher key, which
 * legion.c derives from the same secret).  -1 with e set when the key is
 * empty (an unencrypted legion is never joined). */
int cluster_key_derive(const char *legion_key, cluster_key_t *out, err_t *e);

/* Seal payload (len <= CLUSTER_MAX_PAYLOAD) into out (cap bytes, at least
 * CLUSTER_MAX_ENVELOPE is always enough) as an envelope of `type` from
 * `sender` in legion `legion` (both 1..255 bytes) at unix time `now`.
 * The envelope's length, or -1 with e set. */
ssize_t cluster_seal(const cluster_key_t *k, uint8_t type, const char *legion,
                     const char *sender, long long now, const void *payload, size_t len,
                     unsigned char *out, size_t cap, err_t *e);

/* What an envelope's header says, before it is opened: enough to pick the
 * legion's key and check the sender.  Pointers into the envelope's buffer
 * are copied out as NUL-terminated strings. */
typedef struct {
    uint8_t type;
    long long unix_time;
    unsigned char nonce[24];
    char legion[256];
    char sender[256];
} cluster_header_t;

/* Parse the header of buf (len bytes); -1 with e set when it is not an
 * envelope (magic, lengths, names of other bytes than [A-Za-z0-9.:_-]:
 * they are logged before the envelope is authenticated). */
int cluster_peek(const unsigned char *buf, size_t len, cluster_header_t *h, err_t *e);

typedef struct cluster_replay cluster_replay_t;
cluster_replay_t *cluster_replay_new(void);
void cluster_replay_free(cluster_replay_t *r);

/* Open an envelope whose header h was peeked: checks |now - time| <=
 * CLUSTER_MAX_SKEW (now: the wall clock; the header's time is not
 * printed), the box (key, header binding), then the nonce against r (seen
 * within CLUSTER_REPLAY_S of CLOCK_MONOTONIC: refused; else remembered).  The payload
 * is written to out (cap bytes) and its length returned; -1 with e set
 * ("stale", "forged or not of this legion", "replayed", ...).  The caller
 * wipes out (sodium_memzero) when it held a private key. */
ssize_t cluster_open(const cluster_key_t *k, const cluster_header_t *h, cluster_replay_t *r,
                     long long now, const unsigned char *buf, size_t len, unsigned char *out,
                     size_t cap, err_t *e);

#endif
