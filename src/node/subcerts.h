/* subcerts.h - the subscription gate's certificate copies (subgate.h).
 *
 * A vassal's ssl-domain names a key and a certificate (ssl-ca-domain also a
 * CA) in its home, /containers/<uid>/<rel>.  The router cannot read the
 * customer's home (0700) and must not open a path on the customer's word,
 * so before the gate forwards such a packet this module opens each file
 * from the home's directory descriptor without following any symbolic
 * link (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), checks it with
 * tlsfiles.h (regular file, at most TLS_FILE_MAX, the pair matches and is
 * for the subscribed name, valid now; the CA file holds certificates) and
 * copies it, root:router 0640, to <router homes>/<uid>/<rel>: the router,
 * whose /containers is that homes directory, opens the same path and finds
 * the checked copy.  Directories made there are root:router 0710; run/ (the
 * container's sockets) is never written.
 *
 * A subscription is announced every 2 seconds: the outcome is remembered
 * per (uid, name, files) with each source's (dev, ino, size, mtime, ctime),
 * so an unchanged file is not read again; a changed one (a renewed
 * certificate) is checked and copied again; an outcome, a failure too,
 * stands SUBCERTS_RECHECK_MS (SUBCERTS_BACKOFF_MS for the node's own
 * failure) before the files are looked at again.  The copies hold what
 * OpenSSL parsed written again as PEM (tls_clean_pair), not the bytes.
 * At most `max_pairs` such entries per container; one not announced for
 * forget_ms is forgotten and its copies removed (unless another entry or
 * a remote set, subcerts_install_set, names them), with the directories
 * they leave empty, when an entry of its container is added or at
 * subcerts_sweep.  A check the node fails removes the copies it wrote.
 * Only the gate's thread uses it. */
#ifndef IMP_NODE_SUBCERTS_H
#define IMP_NODE_SUBCERTS_H

#include <stddef.h>
#include <sys/types.h>

#include "../common/err.h"
#include "subscription.h"

typedef struct subcerts subcerts_t;

typedef struct {
    const char *containers_dir; /* the homes: <containers_dir>/<uid> */
    const char *router_homes;   /* the router's /containers: <router_homes>/<uid>/<rel> */
    gid_t router_gid;           /* the copies' group */
    size_t max_pairs;           /* entries per container */
    long long forget_ms;        /* an entry not announced this long is dropped */
} subcerts_opts_t;

/* An outcome stands this long before the files are looked at again; a
 * failure of the node's own (not of the files) this long. */
#define SUBCERTS_RECHECK_MS 2000
#define SUBCERTS_BACKOFF_MS 10000

/* subcerts_new also removes what a previous run left under
 * <router_homes>/<uid>/ (every file and directory but run/): no entry
 * names it yet. */
subcerts_t *subcerts_new(const subcerts_opts_t *o, err_t *e);
void subcerts_free(subcerts_t *c);

/* The home files subscription `s` of container `uid` names (s->tls.any,
 * not ACME): checked and copied for the router (now_ms: the clock).  0
 * when the router's copies are the current, checked files; -1 with a
 * sentence naming the file and what is wrong in `why`. */
int subcerts_check(subcerts_t *c, uid_t uid, const subscription_t *s, long long now_ms, char *why,
                   size_t why_len);

/* Drop the entries not announced for forget_ms, and those of containers
 * whose home is gone, removing their copies (and directories emptied).
 * The gate calls it every SUBGATE_SWEEP_MS. */
void subcerts_sweep(subcerts_t *c, long long now_ms);

/* A set of files another member of a legion sent (clustercerts.h): the
 * PEM text of the key, certificate and CA (pem[2] NULL when path[2] is)
 * for subscription key `name` of container `uid`, whose home is not on
 * this node.  Checked exactly as the gate checks a local container's
 * files (tls_clean_pair, tls_clean_ca) and copied, root:router 0640, to
 * <router_homes>/<uid>/<path + home_len>, where the packet's paths lead
 * the router.  subcerts records it by (uid, name, paths) as a user of
 * those copies, beside the local entries: a copy goes only when no local
 * entry and no remote set names it.  A new set that fails leaves no copy
 * it wrote; paths where one is the directory of another are refused.  The
 * caller wipes pem.  0; -1 when the set is refused, -2 when the node
 * failed (a copy could not be written), with a sentence in `why`. */
int subcerts_install_set(subcerts_t *c, uid_t uid, const char *name, const char *const path[3],
                         size_t home_len, char *const pem[3], const size_t len[3], char *why,
                         size_t why_len);

/* Forget the remote set (uid, name, paths) subcerts_install_set recorded,
 * removing its copies no local entry or other remote set names, and the
 * directories they leave empty. */
void subcerts_remove_set(subcerts_t *c, uid_t uid, const char *name, const char *const path[3],
                         size_t home_len);

/* The router's copies of a container: <router_homes> (clustercerts reads
 * them back to see they still hold what it installed). */
const char *subcerts_router_homes(const subcerts_t *c);

#endif
