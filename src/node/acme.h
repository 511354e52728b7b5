/* acme.h - automatic HTTPS: certificates obtained with ACME for the names
 * customers ask for with `auto-ssl-domain = NAME` (docs/ROUTER.md
 * "Automatic HTTPS", docs/design/issue18/CONTRACT.md).
 *
 * The subscription gate sees a packet naming the ACME pair
 * /run/imperium-router/acme/certs/NAME.key|.crt and calls acme_want(NAME,
 * uid).  A thread of the node then, one name at a time:
 *   - refuses (one line in the container's logs/router.log) a wildcard
 *     (HTTP-01 cannot prove it), an invalid name, a name whose customer in
 *     the node's state (domains[].customer) is not the container's, or any
 *     name when acme_directory is empty;
 *   - keeps an installed certificate until it is within renew_days of its
 *     expiry;
 *   - otherwise runs Debian's uacme (`uacme -c <dir>/acme/state -a URL -h
 *     imperium-acme-hook -t EC -y -f issue NAME`, killed after
 *     ACME_RUN_TIMEOUT_S) in a child with a private mount namespace where
 *     ca_bundle, when set, is the only CA bundle there is; the hook
 *     answers HTTP-01 by writing acme/challenges/<token>, which the router
 *     serves on any Host over plain HTTP;
 *   - installs the issued key and full chain as acme/certs/NAME.key|.crt
 *     (root:router 0640, atomic: tlsfiles.h), which the router loads at the
 *     vassal's next announcement;
 *   - says every outcome in the container's logs/router.log and retries a
 *     failure after retry_s seconds, the delay doubling with each failure
 *     in a row up to ACME_RETRY_MAX_MS. */
#ifndef IMP_NODE_ACME_H
#define IMP_NODE_ACME_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "../common/err.h"
#include "spec.h"

#define ACME_DEFAULT_RENEW_DAYS 30
#define ACME_DEFAULT_RETRY_S 60
#define ACME_RUN_TIMEOUT_S 120
#define ACME_UACME "/usr/bin/uacme"
#define ACME_HOOK_NAME "imperium-acme-hook"
/* Names nobody asked for this long are forgotten (no more renewals): a
 * vassal announces its subscription every few seconds while it runs. */
#define ACME_FORGET_MS (10 * 60 * 1000)
#define ACME_RETRY_MAX_MS (60 * 60 * 1000) /* the longest delay after failures */
#define ACME_MAX_NAMES_PER_UID 20           /* names a container asks for at once */
/* The hook finds the challenges directory in its environment (uacme
 * passes its own on). */
#define ACME_HOOK_ENV "IMPERIUM_ACME_CHALLENGES"

typedef struct {
    const char *router_dir;     /* <state_dir>/router: acme/ is made below it */
    const char *containers_dir; /* homes: <containers_dir>/<uid>/logs/router.log */
    const char *directory;      /* the ACME directory URL; NULL or "": every name refused */
    const char *ca_bundle;      /* the CA bundle uacme trusts; NULL: the system's */
    const char *email;          /* the account's contact; NULL: none */
    int renew_days;             /* renew this many days before expiry */
    int retry_s;                /* a failure is tried again after this */
    gid_t router_gid;           /* the router's group reads challenges and certificates */
    const char *uacme;          /* NULL: ACME_UACME */
    const char *hook;           /* NULL: ACME_HOOK_NAME beside imperium-node */
} acme_opts_t;

typedef struct acme acme_t;

/* Make acme/ (root:router 0710), acme/challenges/, acme/certs/ (0710)
 * and acme/state/ (root 0700) and start the thread. */
acme_t *acme_start(const acme_opts_t *o, err_t *e);
/* Stop the thread (a uacme running is killed) and free (NULL is fine). */
void acme_stop(acme_t *a);

/* The node's state: who owns which domain and which container is whose
 * (copied; thread-safe). */
void acme_set_state(acme_t *a, const spec_state_t *s);
/* The gate saw container `uid` subscribe `name` with the ACME pair:
 * thread-safe and cheap (it is called at every announcement).  true when
 * the name is taken (asked for, or already); false with a sentence in
 * `why` when it is refused (not a name HTTP-01 proves, no ACME directory,
 * a domain of another customer's, more than ACME_MAX_NAMES_PER_UID names):
 * the gate then refuses the packet.  The name's record (its retry delay)
 * is per name, whoever asks. */
bool acme_want(acme_t *a, const char *name, uid_t uid, char *why, size_t why_len);
/* acme_want for subgate_opts_t.acme_want (arg: the acme_t). */
bool acme_want_cb(void *arg, const char *name, uid_t uid, char *why, size_t why_len);

/* ---- pure rules (tests/unit/test_acme.c) ------------------------------------- */

/* Can `name` be asked of an ACME server over HTTP-01?  true, or false with
 * a sentence for the customer in why. */
bool acme_name_ok(const char *name, char *why, size_t len);

/* Does the customer of container uid own name in the state (its
 * domains[] entry, or the wildcard `.parent` covering it)?  true, or
 * false with why. */
bool acme_owner_ok(const spec_state_t *s, const char *name, long long uid, char *why,
                   size_t len);

/* When (a unix time) a certificate expiring at not_after is renewed. */
time_t acme_renew_at(time_t not_after, int renew_days);

/* The hook's arguments as uacme gives them (METHOD TYPE IDENT TOKEN AUTH):
 * method begin/done/failed, type http-01, token of [A-Za-z0-9_-] (1..128),
 * auth "<token>.<thumbprint>" of the same characters.  0, or -1 with e. */
int acme_hook_check(int argc, char *const argv[], err_t *e);
/* The hook: checks its arguments, then writes (begin) or removes (done,
 * failed) <dirfd>/<token> (root:<dir's group> 0640, atomically).  0, or
 * -1 with e. */
int acme_hook_run(int dirfd, int argc, char *const argv[], err_t *e);

/* uacme's reason in its output (the last line of complaint, its
 * "uacme: " prefix dropped), into why; "" when it said nothing. */
void acme_reason(const char *out, char *why, size_t len);

#endif
