/* xmppdns.c - where the node may connect for a jid's own server (xmppdns.h).
 *
 * One c-ares channel per lookup, stepped by the delivery thread (a poll of
 * its sockets with no wait): a black-holed DNS holds that one delivery for
 * XMPPDNS_TIMEOUT_MS, never the others.  The first round asks the SRV record
 * and the domain's A/AAAA at once (the answer to the second is needed when
 * there is no SRV record); the second asks the addresses of the SRV targets. */
#define CARES_NO_DEPRECATED /* newer c-ares deprecates the calls 1.18 offers */
#include "xmppdns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/strutil.h"
#include "../runtime/net.h"

#define MAX_TARGETS 3 /* SRV targets whose addresses are asked */
#define MAX_ADDRS 4   /* addresses kept per target and family */
#define XMPP_PORT 5222
#define XMPP_TLS_PORT 5223

/* ---- the address rule ------------------------------------------------------ */

static bool in_net4(uint32_t a, uint32_t net, int len) /* host order */
{
    uint32_t mask = len ? 0xffffffffu << (32 - len) : 0;
    return (a & mask) == net;
}

static const struct {
    uint32_t net;
    int len;
    const char *what;
} special4[] = {
    {0x00000000, 8, "a \"this network\" address (0.0.0.0/8)"},
    {0x0a000000, 8, "a private address (10.0.0.0/8)"},
    {0x64400000, 10, "a carrier-grade NAT address (100.64.0.0/10)"},
    {0x7f000000, 8, "a loopback address (127.0.0.0/8)"},
    {0xa9fe0000, 16, "a link-local address (169.254.0.0/16)"},
    {0xac100000, 12, "a private address (172.16.0.0/12)"},
    {0xc0000000, 24, "an IETF protocol address (192.0.0.0/24)"},
    {0xc0000200, 24, "a documentation address (192.0.2.0/24)"},
    {0xc0586300, 24, "a 6to4 relay address (192.88.99.0/24)"},
    {0xc0a80000, 16, "a private address (192.168.0.0/16)"},
    {0xc6120000, 15, "a benchmarking address (198.18.0.0/15)"},
    {0xc6336400, 24, "a documentation address (198.51.100.0/24)"},
    {0xcb007100, 24, "a documentation address (203.0.113.0/24)"},
    {0xe0000000, 4, "a multicast address (224.0.0.0/4)"},
    {0xf0000000, 4, "a reserved address (240.0.0.0/4)"},
};

static int check4(const char *text, uint32_t a_net, const xmppdns_net4_t *deny, size_t ndeny,
                  err_t *e)
{
    uint32_t a = ntohl(a_net);
    for (size_t i = 0; i < sizeof special4 / sizeof *special4; i++)
        if (in_net4(a, special4[i].net, special4[i].len))
            return err_set(e, ERR_INPUT, "%s is %s", text, special4[i].what);
    for (size_t i = 0; i < ndeny; i++) {
        if (in_net4(a, ntohl(deny[i].addr), deny[i].len)) {
            char net[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &deny[i].addr, net, sizeof net);
            return err_set(e, ERR_INPUT,
                           "%s is in %s/%d (the container network or nat_deny)", text, net,
                           deny[i].len);
        }
    }
    return 0;
}

/* IPv6: global unicast (2000::/3) minus what is not a real host there. */
static int check6(const char *text, const unsigned char *b, const xmppdns_net4_t *deny,
                  size_t ndeny, err_t *e)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char zero[15] = {0};
    if (!memcmp(b, mapped, sizeof mapped)) { /* the connection would be IPv4 */
        uint32_t a4;
        memcpy(&a4, b + 12, 4);
        return check4(text, a4, deny, ndeny, e);
    }
    if (!memcmp(b, zero, sizeof zero) && b[15] <= 1)
        return err_set(e, ERR_INPUT, "%s is %s", text,
                       b[15] ? "the loopback address (::1)" : "the unspecified address (::)");
    if ((b[0] & 0xfe) == 0xfc)
        return err_set(e, ERR_INPUT, "%s is a unique local address (fc00::/7)", text);
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return err_set(e, ERR_INPUT, "%s is a link-local address (fe80::/10)", text);
    if (b[0] == 0xff)
        return err_set(e, ERR_INPUT, "%s is a multicast address (ff00::/8)", text);
    if ((b[0] & 0xe0) != 0x20)
        return err_set(e, ERR_INPUT, "%s is not a global unicast address (2000::/3)", text);
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return err_set(e, ERR_INPUT, "%s is a documentation address (2001:db8::/32)", text);
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] < 0x02)
        return err_set(e, ERR_INPUT, "%s is an IETF protocol address (2001::/23, Teredo)",
                       text);
    if (b[0] == 0x20 && b[1] == 0x02)
        return err_set(e, ERR_INPUT, "%s is a 6to4 address (2002::/16)", text);
    if (b[0] == 0x3f && (b[1] & 0xf0) == 0xf0)
        return err_set(e, ERR_INPUT, "%s is a documentation address (3fff::/20)", text);
    return 0;
}

int xmppdns_check(int family, const void *addr, int port, const xmppdns_net4_t *deny,
                  size_t ndeny, err_t *e)
{
    char text[INET6_ADDRSTRLEN];
    if ((family != AF_INET && family != AF_INET6) ||
        !inet_ntop(family, addr, text, sizeof text))
        return err_set(e, ERR_INPUT, "not an IPv4 or IPv6 address");
    int rc = family == AF_INET ? check4(text, *(const uint32_t *)addr, deny, ndeny, e)
                               : check6(text, addr, deny, ndeny, e);
    if (rc < 0)
        return -1;
    if (port != XMPP_PORT && port != XMPP_TLS_PORT)
        return err_set(e, ERR_INPUT, "port %d of %s is not an XMPP client port (%d or %d)",
                       port, text, XMPP_PORT, XMPP_TLS_PORT);
    return 0;
}

int xmppdns_deny_add(xmppdns_net4_t **v, size_t *n, const char *list, const char *what,
                     err_t *e)
{
    const char *sep = ", \t";
    for (const char *p = list ? list + strspn(list, sep) : ""; *p; p += strspn(p, sep)) {
        size_t len = strcspn(p, sep);
        char tok[32];
        if (len >= sizeof tok)
            return err_set(e, ERR_INPUT, "%s: '%.*s' is not an IPv4 address or network", what,
                           (int)len, p);
        memcpy(tok, p, len);
        tok[len] = '\0';
        xmppdns_net4_t net = {.len = 32};
        if ((strchr(tok, '/') ? net_parse_cidr(tok, &net.addr, &net.len, what, e)
                              : net_parse_ip(tok, &net.addr, what, e)) < 0)
            return -1;
        xmppdns_net4_t *nv = realloc(*v, (*n + 1) * sizeof *nv);
        if (!nv)
            return err_set(e, ERR_INTERNAL, "%s: out of memory", what);
        nv[(*n)++] = net;
        *v = nv;
        p += len;
    }
    return 0;
}

int xmppdns_domain(const char *jid, char *out, size_t len, err_t *e)
{
    const char *at = strchr(jid, '@');
    const char *d = at ? at + 1 : jid;
    size_t n = strcspn(d, "/");
    if (n >= 2 && d[0] == '[' && d[n - 1] == ']')
        d++, n -= 2;
    if (!n || n >= len)
        return err_set(e, ERR_INPUT, "jid %s has no usable domain", jid);
    memcpy(out, d, n);
    out[n] = '\0';
    return 0;
}

/* ---- the lookup ------------------------------------------------------------- */

int xmppdns_init(err_t *e)
{
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS)
        return err_set(e, ERR_INTERNAL, "c-ares: %s", ares_strerror(rc));
    return 0;
}

void xmppdns_cleanup(void) { ares_library_cleanup(); }

typedef struct {
    char *host; /* the SRV target; NULL for the domain itself */
    int port;
    int n4, n6;
    struct in_addr a4[MAX_ADDRS];
    struct ares_in6_addr a6[MAX_ADDRS];
    int status; /* of its A lookup: why none was found */
} target_t;

typedef struct {
    struct xmppdns *r;
    target_t *t; /* NULL: the SRV question */
    int type;
} ask_t;

struct xmppdns {
    ares_channel ch;
    char *domain;
    long long deadline;
    int pending;
    int round;      /* 1: SRV and the domain's addresses; 2: the targets' */
    int srv_status; /* ARES_SUCCESS, ARES_ENODATA, ... */
    bool srv_none;  /* the SRV record says "no service here" (target ".") */
    bool literal;   /* the domain is an IP address: nothing to ask */
    target_t dom;
    target_t t[MAX_TARGETS];
    int nt;
    ask_t asks[3 + 2 * MAX_TARGETS];
    int nasks;
    const xmppdns_net4_t *deny;
    size_t ndeny;
};

#define MAX_SRV 16 /* SRV records considered */

typedef struct {
    unsigned short priority, weight;
    const char *host;
    int port;
} srv_t;

/* Lowest priority first, then the heaviest (RFC 2782's order, without the
 * random pick: one alarm, one try). */
static int srv_cmp(const void *a, const void *b)
{
    const srv_t *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return (int)y->weight - (int)x->weight;
}

static void srv_parse(xmppdns_t *r, const unsigned char *abuf, int alen)
{
    struct ares_srv_reply *reply = NULL;
    if ((r->srv_status = ares_parse_srv_reply(abuf, alen, &reply)) != ARES_SUCCESS)
        return;
    srv_t s[MAX_SRV];
    size_t n = 0;
    for (struct ares_srv_reply *p = reply; p && n < MAX_SRV; p = p->next) {
        if (!p->host[0] || !strcmp(p->host, "."))
            r->srv_none = true;
        else
            s[n++] = (srv_t){p->priority, p->weight, p->host, p->port};
    }
    qsort(s, n, sizeof *s, srv_cmp);
    for (size_t i = 0; i < n && r->nt < MAX_TARGETS; i++) {
        if (!(r->t[r->nt].host = strdup(s[i].host))) {
            r->srv_status = ARES_ENOMEM;
            break;
        }
        r->t[r->nt++].port = s[i].port;
    }
    ares_free_data(reply);
}

static void addrs_parse(target_t *t, int type, const unsigned char *abuf, int alen)
{
    int count = MAX_ADDRS, rc;
    if (type == ns_t_a) {
        struct ares_addrttl a[MAX_ADDRS];
        if ((rc = ares_parse_a_reply(abuf, alen, NULL, a, &count)) == ARES_SUCCESS)
            for (t->n4 = 0; t->n4 < count; t->n4++)
                t->a4[t->n4] = a[t->n4].ipaddr;
    } else {
        struct ares_addr6ttl a[MAX_ADDRS];
        if ((rc = ares_parse_aaaa_reply(abuf, alen, NULL, a, &count)) == ARES_SUCCESS)
            for (t->n6 = 0; t->n6 < count; t->n6++)
                t->a6[t->n6] = a[t->n6].ip6addr;
    }
    if (type == ns_t_a)
        t->status = rc;
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    ask_t *q = arg;
    q->r->pending--;
    if (status == ARES_SUCCESS && !(abuf && alen > 0))
        status = ARES_EBADRESP;
    if (!q->t) {
        q->r->srv_status = status;
        if (status == ARES_SUCCESS)
            srv_parse(q->r, abuf, alen);
    } else if (status == ARES_SUCCESS) {
        addrs_parse(q->t, q->type, abuf, alen);
    } else if (q->type == ns_t_a) {
        q->t->status = status;
    }
}

static void ask(xmppdns_t *r, const char *name, int type, target_t *t)
{
    ask_t *q = &r->asks[r->nasks++];
    *q = (ask_t){.r = r, .t = t, .type = type};
    r->pending++;
    ares_query(r->ch, name, ns_c_in, type, on_answer, q); /* may answer at once */
}

static void addrs_ask(xmppdns_t *r, target_t *t, const char *name)
{
    t->n4 = t->n6 = 0;
    t->status = ARES_ETIMEOUT;
    ask(r, name, ns_t_a, t);
    ask(r, name, ns_t_aaaa, t);
}

xmppdns_t *xmppdns_start(const char *domain, const xmppdns_net4_t *deny, size_t ndeny,
                         int timeout_ms, err_t *e)
{
    xmppdns_t *r = calloc(1, sizeof *r);
    if (!r || !(r->domain = strdup(domain))) {
        free(r);
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    r->deny = deny;
    r->ndeny = ndeny;
    r->deadline = now_ms() + timeout_ms;
    r->dom.port = XMPP_PORT;
    unsigned char b[16];
    if (inet_pton(AF_INET, domain, b) == 1 || inet_pton(AF_INET6, domain, b) == 1) {
        r->literal = true;
        return r;
    }
    /* Short tries: two servers, or one asked twice, within the deadline. */
    struct ares_options o = {.flags = ARES_FLAG_NOSEARCH, .timeout = timeout_ms / 3, .tries = 2};
    int rc = ares_init_options(&r->ch, &o, ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        r->ch = NULL;
        err_set(e, ERR_INTERNAL, "cannot set up the DNS resolver: %s", ares_strerror(rc));
        xmppdns_free(r);
        return NULL;
    }
    char *srv = str_printf("_xmpp-client._tcp.%s", domain);
    if (!srv) {
        err_set(e, ERR_INTERNAL, "out of memory");
        xmppdns_free(r);
        return NULL;
    }
    r->round = 1;
    r->srv_status = ARES_ETIMEOUT;
    ask(r, srv, ns_t_srv, NULL);
    addrs_ask(r, &r->dom, domain);
    free(srv);
    return r;
}

/* Let c-ares read what arrived and handle its timeouts; never waits. */
static void pump(xmppdns_t *r)
{
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    unsigned bits = (unsigned)ares_getsock(r->ch, socks, ARES_GETSOCK_MAXNUM);
    struct pollfd pfd[ARES_GETSOCK_MAXNUM];
    nfds_t n = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
        short ev = (short)((bits & (1u << i) ? POLLIN : 0) |
                           (bits & (1u << (i + ARES_GETSOCK_MAXNUM)) ? POLLOUT : 0));
        if (ev)
            pfd[n++] = (struct pollfd){.fd = socks[i], .events = ev};
    }
    int ready = n ? poll(pfd, n, 0) : 0;
    for (nfds_t i = 0; ready > 0 && i < n; i++) {
        if (!pfd[i].revents)
            continue;
        bool rd = pfd[i].revents & (POLLIN | POLLERR | POLLHUP);
        bool wr = pfd[i].revents & POLLOUT;
        ares_process_fd(r->ch, rd ? pfd[i].fd : ARES_SOCKET_BAD,
                        wr ? pfd[i].fd : ARES_SOCKET_BAD);
    }
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts, retries */
}

/* The first address of t the rule allows into ip; the first refusal in e. */
static bool pick(const xmppdns_t *r, const target_t *t, char *ip, bool *refused, err_t *e)
{
    for (int i = 0; i < t->n4 + t->n6; i++) {
        int fam = i < t->n4 ? AF_INET : AF_INET6;
        const void *a = i < t->n4 ? (const void *)&t->a4[i] : (const void *)&t->a6[i - t->n4];
        err_t why = {0};
        if (xmppdns_check(fam, a, t->port, r->deny, r->ndeny, &why) == 0) {
            inet_ntop(fam, a, ip, INET6_ADDRSTRLEN);
            return true;
        }
        if (!*refused)
            err_set(e, ERR_INPUT, "%s", why.msg);
        *refused = true;
    }
    return false;
}

/* Every answer is in: where to connect, or why nowhere. */
static int decide(xmppdns_t *r, char *ip, int *port, bool *refused, err_t *e)
{
    *refused = false;
    bool srv = r->nt > 0;
    if (!srv && r->srv_none)
        return *refused = true,
               err_set(e, ERR_INPUT, "%s says it has no XMPP service (SRV target \".\")",
                       r->domain);
    for (int i = 0; i < (srv ? r->nt : 1); i++) {
        const target_t *t = srv ? &r->t[i] : &r->dom;
        if (pick(r, t, ip, refused, e)) {
            *refused = false;
            *port = t->port;
            return 1;
        }
    }
    if (*refused)
        return -1;
    const target_t *t = srv ? &r->t[0] : &r->dom;
    return err_set(e, ERR_INPUT, "no address found for %s%s%s (%s)", srv ? t->host : r->domain,
                   srv ? ", the SRV target of " : "", srv ? r->domain : "",
                   ares_strerror(t->status));
}

int xmppdns_step(xmppdns_t *r, char *ip, int *port, bool *refused, err_t *e)
{
    *refused = false;
    if (r->literal) {
        unsigned char b[16];
        int fam = inet_pton(AF_INET, r->domain, b) == 1 ? AF_INET : AF_INET6;
        inet_pton(fam, r->domain, b);
        if (xmppdns_check(fam, b, XMPP_PORT, r->deny, r->ndeny, e) < 0)
            return *refused = true, -1;
        snprintf(ip, INET6_ADDRSTRLEN, "%s", r->domain);
        *port = XMPP_PORT;
        return 1;
    }
    pump(r);
    if (r->pending > 0 && now_ms() >= r->deadline) {
        ares_cancel(r->ch); /* calls back: pending drops to 0 */
        return err_set(e, ERR_INPUT, "the DNS lookup of %s timed out", r->domain);
    }
    if (r->pending > 0)
        return 0;
    if (r->round == 1) {
        bool srv_known = r->srv_status == ARES_SUCCESS || r->srv_status == ARES_ENODATA ||
                         r->srv_status == ARES_ENOTFOUND;
        if (!srv_known)
            return err_set(e, ERR_INPUT, "the DNS lookup of _xmpp-client._tcp.%s failed (%s)",
                           r->domain, ares_strerror(r->srv_status));
        if (r->nt > 0) {
            r->round = 2;
            for (int i = 0; i < r->nt; i++)
                addrs_ask(r, &r->t[i], r->t[i].host);
            return r->pending > 0 ? 0 : xmppdns_step(r, ip, port, refused, e);
        }
    }
    return decide(r, ip, port, refused, e);
}

void xmppdns_free(xmppdns_t *r)
{
    if (!r)
        return;
    if (r->ch)
        ares_destroy(r->ch); /* calls back with ARES_EDESTRUCTION: r still lives */
    for (int i = 0; i < r->nt; i++)
        free(r->t[i].host);
    free(r->domain);
    free(r);
}
