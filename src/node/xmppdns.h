/* xmppdns.h - where the node may connect for a jid's own XMPP server
 * (docs/ALARMS.md, "No SSRF"; used by deliver.c when xmpp_server is unset).
 *
 * The node runs in the host's network namespace: a customer's jid must not
 * make it open TCP to 127.0.0.1, the container network, the cloud's metadata
 * address or any port a SRV record names.  So the node resolves the domain
 * itself (SRV _xmpp-client._tcp.<domain>, then A/AAAA of its targets; else
 * A/AAAA of the domain) with c-ares, stepped without blocking from the
 * delivery thread's loop and bounded in time, keeps only public unicast
 * addresses on port 5222 or 5223, and libstrophe connects to that IP literal
 * (TLS still checks the certificate against the jid's domain). */
#ifndef IMP_NODE_XMPPDNS_H
#define IMP_NODE_XMPPDNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

#define XMPPDNS_TIMEOUT_MS 3000 /* the whole lookup of one delivery */

/* An IPv4 network the node never connects to (network order, host bits 0). */
typedef struct {
    uint32_t addr;
    int len;
} xmppdns_net4_t;

/* Append the IPv4 addresses ("A.B.C.D") and networks ("A.B.C.D/N") of
 * `list` (comma- or blank-separated) to *v; `what` names the setting in e. */
int xmppdns_deny_add(xmppdns_net4_t **v, size_t *n, const char *list, const char *what,
                     err_t *e);

/* The address rule (pure): may the node connect to addr:port (family
 * AF_INET or AF_INET6, addr in network order) for a jid's own server?
 * Public unicast only (no loopback, private, CGNAT, link-local, multicast,
 * reserved, documentation, ULA, v4-mapped of those), none of `deny`, port
 * 5222 or 5223.  -1 with e saying why ("127.0.0.1 is a loopback address
 * (127.0.0.0/8)"). */
int xmppdns_check(int family, const void *addr, int port, const xmppdns_net4_t *deny,
                  size_t ndeny, err_t *e);

/* The domain of a jid (after '@', before '/'; brackets of an IPv6 literal
 * removed) into out; -1 when there is none or it does not fit. */
int xmppdns_domain(const char *jid, char *out, size_t len, err_t *e);

typedef struct xmppdns xmppdns_t;

/* c-ares' library init and cleanup (deliver_new and deliver_free). */
int xmppdns_init(err_t *e);
void xmppdns_cleanup(void);

/* Start finding where to connect for `domain` (deny must outlive it);
 * NULL with e when it cannot start.  Never blocks. */
xmppdns_t *xmppdns_start(const char *domain, const xmppdns_net4_t *deny, size_t ndeny,
                         int timeout_ms, err_t *e);
/* Step it without blocking: 0 while it runs; 1 done, the address in ip
 * (INET6_ADDRSTRLEN) and *port; -1 failed with e, *refused true when the
 * rule refused every address found (trying again cannot help). */
int xmppdns_step(xmppdns_t *r, char *ip, int *port, bool *refused, err_t *e);
void xmppdns_free(xmppdns_t *r);

#endif
