/* dns_check.c - does the customer control a domain's DNS zone?
 *
 * API.md: POST /domains/ needs a TXT record containing "uwsgi:<customer uuid>"
 * on the name or one of its parents, asked first of the domain's own
 * authoritative name servers.  Those matter because a recursive resolver
 * may still cache the answer from before the customer added the record.
 *
 * For each name of the chain (a.b.example.org, b.example.org, example.org):
 *   1. find its zone: the nearest of the name and its parents with NS records
 *      (asked of the resolver: the configured one, or the system's);
 *   2. resolve those NS hosts (resolver again) and ask them directly, without
 *      recursion; only an answer with the AA bit counts;
 *   3. when any of that fails (no NS, no address, no authoritative answer),
 *      ask the resolver itself.
 * The first name whose answer holds the record wins.  Everything, c-ares
 * channels included, lives in one call: worker threads share nothing.  The
 * whole check is bounded by one deadline. */
#define CARES_NO_DEPRECATED /* newer c-ares deprecates the calls 1.18 offers */
#include "dns_check.h"
#include "../common/clock.h"
#include "../common/log.h"
#include "../common/strutil.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_NAMES 128    /* a 253-character name has at most 127 labels */
#define MAX_NS_HOSTS 4   /* NS hosts of a zone we resolve */
#define MAX_NS_ADDRS 4   /* addresses of them we ask */
#define MAX_ADDRTTLS 8

typedef struct {
    int status; /* ARES_SUCCESS, ARES_ENODATA, ... */
    unsigned char *abuf;
    int alen;
    int *pending; /* the counter of the batch this answer belongs to */
} answer_t;

/* The authoritative servers of one zone. */
typedef struct {
    ares_channel ch; /* NULL when none of them resolved */
    bool dead;       /* no reply from them once: the resolver answers instead */
} zone_t;

enum ns_state { NS_UNKNOWN, NS_NONE, NS_ZONE };

typedef struct {
    const char *names[MAX_NAMES]; /* the name, then its parents */
    int nnames;
    enum ns_state ns[MAX_NAMES];
    zone_t *zones[MAX_NAMES]; /* set where ns[] is NS_ZONE */
    ares_channel resolver;
    struct timespec deadline; /* CLOCK_MONOTONIC */
    /* Finding zones may use half the time: the TXT lookups need the rest. */
    struct timespec zones_deadline;
    int timeout_ms;
} check_t;

int dns_check_init(err_t *e)
{
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS)
        return err_set(e, ERR_INTERNAL, "c-ares: %s", ares_strerror(rc));
    return 0;
}

void dns_check_cleanup(void) { ares_library_cleanup(); }

/* ---- configuration ---- */

static bool port_ok(const char *s)
{
    long long p;
    return str_to_ll(s, &p) && p >= 1 && p <= 65535;
}

int dns_resolver_check(const char *spec, err_t *e)
{
    unsigned char addr[16];
    char host[64];
    const char *port = NULL;
    if (spec[0] == '[') { /* [IPv6]:PORT */
        const char *close = strchr(spec, ']');
        size_t len = close ? (size_t)(close - spec - 1) : 0;
        if (close && len < sizeof host && close[1] == ':') {
            memcpy(host, spec + 1, len);
            host[len] = '\0';
            port = close + 2;
            if (inet_pton(AF_INET6, host, addr) == 1 && port_ok(port))
                return 0;
        }
    } else if (inet_pton(AF_INET6, spec, addr) == 1 || inet_pton(AF_INET, spec, addr) == 1) {
        return 0;
    } else {
        const char *colon = strrchr(spec, ':');
        size_t len = colon ? (size_t)(colon - spec) : 0;
        if (colon && len < sizeof host) {
            memcpy(host, spec, len);
            host[len] = '\0';
            if (inet_pton(AF_INET, host, addr) == 1 && port_ok(colon + 1))
                return 0;
        }
    }
    return err_set(e, ERR_INPUT,
                   "dns_resolver must be IP, IP:PORT or [IPv6]:PORT (port 1-65535), not '%s'",
                   spec);
}

/* ---- time ---- */

static long ms_until(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(deadline->tv_sec - now.tv_sec) * 1000L +
           (deadline->tv_nsec - now.tv_nsec) / 1000000L;
}

static int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- c-ares plumbing ---- */

/* A channel to the configured resolver (`servers` NULL) or to the given
 * authoritative servers (asked without recursion). */
static int chan_open(ares_channel *ch, const char *resolver, struct ares_addr_node *servers,
                     int per_try_ms, int tries)
{
    struct ares_options o = {
        .flags = ARES_FLAG_NOSEARCH | (servers ? ARES_FLAG_NORECURSE : 0),
        .timeout = per_try_ms,
        .tries = tries,
    };
    int rc = ares_init_options(ch, &o, ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        *ch = NULL;
        return rc;
    }
    if (servers)
        rc = ares_set_servers(*ch, servers);
    else if (resolver && *resolver)
        rc = ares_set_servers_ports_csv(*ch, resolver);
    if (rc != ARES_SUCCESS) {
        ares_destroy(*ch);
        *ch = NULL;
    }
    return rc;
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    answer_t *a = arg;
    a->status = status;
    if (abuf && alen > 0) {
        a->abuf = malloc((size_t)alen);
        if (a->abuf) {
            memcpy(a->abuf, abuf, (size_t)alen);
            a->alen = alen;
        } else {
            a->status = ARES_ENOMEM;
        }
    } else if (status == ARES_SUCCESS) {
        a->status = ARES_EBADRESP;
    }
    (*a->pending)--;
}

static void answer_free(answer_t *a)
{
    free(a->abuf);
    a->abuf = NULL;
    a->alen = 0;
}

static void query(ares_channel ch, const char *name, int type, answer_t *a, int *pending)
{
    *a = (answer_t){.status = ARES_ETIMEOUT, .pending = pending};
    (*pending)++;
    ares_query(ch, name, ns_c_in, type, on_answer, a); /* may answer at once */
}

static void process_ready(ares_channel ch, const struct pollfd *pfd, nfds_t n)
{
    for (nfds_t i = 0; i < n; i++) {
        if (!pfd[i].revents)
            continue;
        bool rd = pfd[i].revents & (POLLIN | POLLERR | POLLHUP);
        bool wr = pfd[i].revents & POLLOUT;
        ares_process_fd(ch, rd ? pfd[i].fd : ARES_SOCKET_BAD, wr ? pfd[i].fd : ARES_SOCKET_BAD);
    }
}

/* Drive `ch` until the batch is answered or the deadline passes; then the
 * rest is cancelled, so every answer_t is settled (and no longer referenced
 * by c-ares) when this returns.  poll(), not select(): the daemon may hold
 * more than FD_SETSIZE descriptors. */
static void run(ares_channel ch, const int *pending, const struct timespec *deadline)
{
    while (*pending > 0) {
        long left = ms_until(deadline);
        if (left <= 0)
            break;
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        int bits = ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
        struct pollfd pfd[ARES_GETSOCK_MAXNUM];
        nfds_t n = 0;
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
            /* ARES_GETSOCK_WRITABLE shifts a signed 1 into the sign bit (UB). */
            unsigned ubits = (unsigned)bits;
            short ev = (short)((ubits & (1u << i) ? POLLIN : 0) |
                               (ubits & (1u << (i + ARES_GETSOCK_MAXNUM)) ? POLLOUT : 0));
            if (ev)
                pfd[n++] = (struct pollfd){.fd = socks[i], .events = ev};
        }
        struct timeval maxtv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000}, tv;
        struct timeval *tvp = ares_timeout(ch, &maxtv, &tv);
        int wait = (int)(tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000);
        int rc = poll(pfd, n, wait);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc <= 0)
            ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts, retries */
        else
            process_ready(ch, pfd, n);
    }
    if (*pending > 0)
        ares_cancel(ch); /* calls back with ARES_ECANCELLED */
}

static void lookup(ares_channel ch, const char *name, int type,
                   const struct timespec *deadline, answer_t *a)
{
    int pending = 0;
    query(ch, name, type, a, &pending);
    run(ch, &pending, deadline);
    a->pending = NULL;
}

/* An answer that settles the question: the records, or that there are none. */
static bool definitive(const answer_t *a)
{
    return a->status == ARES_SUCCESS || a->status == ARES_ENODATA ||
           a->status == ARES_ENOTFOUND;
}

/* The AA bit: the server answered for its own zone, not from a cache or
 * with a referral. */
static bool authoritative(const answer_t *a) { return a->alen > 3 && (a->abuf[2] & 0x04); }

static const char *status_text(int status)
{
    return status == ARES_ECANCELLED ? "timed out" : ares_strerror(status);
}

/* ---- TXT ---- */

static bool record_matches(const buf_t *rec, const char *want)
{
    return rec->data && strcasestr(rec->data, want) != NULL;
}

/* Does one TXT record of the answer contain `want`?  A record may be split
 * in several character-strings: they are joined first. */
static bool txt_has(const answer_t *a, const char *want)
{
    struct ares_txt_ext *txt = NULL;
    if (a->status != ARES_SUCCESS ||
        ares_parse_txt_reply_ext(a->abuf, a->alen, &txt) != ARES_SUCCESS)
        return false;
    buf_t rec = {0};
    bool found = false;
    for (struct ares_txt_ext *t = txt; t && !found; t = t->next) {
        if (t->record_start) {
            found = record_matches(&rec, want);
            rec.len = 0;
            if (rec.data)
                rec.data[0] = '\0';
        }
        if (buf_append(&rec, t->txt, t->length) < 0)
            break; /* out of memory: not found, the customer may retry */
    }
    found = found || record_matches(&rec, want);
    buf_free(&rec);
    ares_free_data(txt);
    return found;
}

/* An authoritative answer settles a name unless it is a success without
 * any TXT record: a CNAME into another zone, which the resolver follows. */
static bool settles_authoritatively(const answer_t *a)
{
    if (!authoritative(a) || !definitive(a))
        return false;
    if (a->status != ARES_SUCCESS)
        return true; /* NXDOMAIN or no TXT record: settled */
    struct ares_txt_ext *txt = NULL;
    bool any = ares_parse_txt_reply_ext(a->abuf, a->alen, &txt) == ARES_SUCCESS && txt;
    ares_free_data(txt);
    return any;
}

/* ---- zones ---- */

static void addrs_collect(const answer_t *a, int family, struct ares_addr_node *nodes, int *n)
{
    if (a->status != ARES_SUCCESS)
        return;
    int count = MAX_ADDRTTLS;
    if (family == AF_INET) {
        struct ares_addrttl t[MAX_ADDRTTLS];
        if (ares_parse_a_reply(a->abuf, a->alen, NULL, t, &count) != ARES_SUCCESS)
            return;
        for (int i = 0; i < count && *n < MAX_NS_ADDRS; i++, (*n)++)
            nodes[*n] = (struct ares_addr_node){.family = AF_INET, .addr.addr4 = t[i].ipaddr};
    } else {
        struct ares_addr6ttl t[MAX_ADDRTTLS];
        if (ares_parse_aaaa_reply(a->abuf, a->alen, NULL, t, &count) != ARES_SUCCESS)
            return;
        for (int i = 0; i < count && *n < MAX_NS_ADDRS; i++, (*n)++) {
            nodes[*n] = (struct ares_addr_node){.family = AF_INET6};
            memcpy(&nodes[*n].addr.addr6, &t[i].ip6addr, sizeof t[i].ip6addr);
        }
    }
}

/* Resolve the NS hosts (all at once) and open a channel to them. */
static zone_t *zone_open(check_t *c, char **ns_hosts)
{
    zone_t *z = calloc(1, sizeof *z);
    if (!z)
        return NULL;
    answer_t ans[MAX_NS_HOSTS][2];
    int pending = 0, nhosts = 0;
    for (; nhosts < MAX_NS_HOSTS && ns_hosts[nhosts]; nhosts++) {
        query(c->resolver, ns_hosts[nhosts], ns_t_a, &ans[nhosts][0], &pending);
        query(c->resolver, ns_hosts[nhosts], ns_t_aaaa, &ans[nhosts][1], &pending);
    }
    run(c->resolver, &pending, &c->zones_deadline);
    struct ares_addr_node nodes[MAX_NS_ADDRS];
    int n = 0;
    for (int i = 0; i < nhosts; i++) {
        addrs_collect(&ans[i][0], AF_INET, nodes, &n);
        addrs_collect(&ans[i][1], AF_INET6, nodes, &n);
        answer_free(&ans[i][0]);
        answer_free(&ans[i][1]);
    }
    for (int i = 0; i + 1 < n; i++)
        nodes[i].next = &nodes[i + 1];
    if (n > 0) {
        nodes[n - 1].next = NULL;
        /* Short tries: a dead server must leave time to ask the resolver. */
        int rc = chan_open(&z->ch, NULL, nodes, clamp(c->timeout_ms / 8, 100, 1000), 1);
        if (rc != ARES_SUCCESS)
            log_warn("dns check: cannot set up the authoritative servers: %s",
                     ares_strerror(rc));
    }
    return z;
}

/* Is names[j] a zone apex?  Remember its servers if so. */
static void ns_probe(check_t *c, int j)
{
    answer_t a;
    lookup(c->resolver, c->names[j], ns_t_ns, &c->zones_deadline, &a);
    struct hostent *h = NULL;
    c->ns[j] = NS_NONE;
    if (a.status == ARES_SUCCESS && ares_parse_ns_reply(a.abuf, a.alen, &h) == ARES_SUCCESS) {
        if (h->h_aliases && h->h_aliases[0] && (c->zones[j] = zone_open(c, h->h_aliases))) {
            c->ns[j] = NS_ZONE;
            log_debug("dns check: zone %s, name server %s%s", c->names[j], h->h_aliases[0],
                      c->zones[j]->ch ? "" : " (no address found)");
        }
        ares_free_hostent(h);
    }
    answer_free(&a);
}

/* The zone names[i] belongs to, or NULL when no NS records were found. */
static zone_t *zone_for(check_t *c, int i)
{
    for (int j = i; j < c->nnames; j++) {
        if (c->ns[j] == NS_UNKNOWN)
            ns_probe(c, j);
        if (c->ns[j] == NS_ZONE)
            return c->zones[j];
    }
    return NULL;
}

/* The TXT answer for names[i]: authoritative when its zone's servers give
 * one, else the resolver's.  Sets *source for the log. */
static void txt_lookup(check_t *c, int i, answer_t *a, const char **source)
{
    zone_t *z = zone_for(c, i);
    if (z && z->ch && !z->dead) {
        struct timespec quick = clock_after_ms(c->timeout_ms / 4);
        bool sooner = ms_until(&quick) < ms_until(&c->deadline);
        lookup(z->ch, c->names[i], ns_t_txt, sooner ? &quick : &c->deadline, a);
        if (settles_authoritatively(a)) {
            *source = "its authoritative servers";
            return;
        }
        log_debug("dns check: no authoritative answer for %s (%s); asking the resolver",
                  c->names[i], status_text(a->status));
        /* Servers that did not answer at all would only eat the time left. */
        z->dead = !a->abuf;
        answer_free(a);
    }
    lookup(c->resolver, c->names[i], ns_t_txt, &c->deadline, a);
    *source = "the resolver";
}

/* ---- the check ---- */

static void chain_build(check_t *c, const char *name)
{
    const char *p = name[0] == '.' ? name + 1 : name;
    while (c->nnames < MAX_NAMES && strchr(p, '.')) {
        c->names[c->nnames++] = p;
        p = strchr(p, '.') + 1;
    }
}

static void check_free(check_t *c)
{
    for (int j = 0; j < c->nnames; j++) {
        if (c->zones[j] && c->zones[j]->ch)
            ares_destroy(c->zones[j]->ch);
        free(c->zones[j]);
    }
    if (c->resolver)
        ares_destroy(c->resolver);
    free(c);
}

/* Walk the chain; on a failed lookup remember the first name and why. */
static dns_check_result check_walk(check_t *c, const char *want, char *where, size_t wlen,
                                   int *fail_at, int *fail_status)
{
    for (int i = 0; i < c->nnames; i++) {
        answer_t a;
        const char *source = "";
        txt_lookup(c, i, &a, &source);
        bool found = txt_has(&a, want);
        if (!found && !definitive(&a) && *fail_at < 0) {
            *fail_at = i;
            *fail_status = a.status;
        }
        answer_free(&a);
        if (found) {
            snprintf(where, wlen, "%s", c->names[i]);
            log_info("dns check: TXT \"%s\" found on %s, asked of %s", want, c->names[i],
                     source);
            return DNS_CHECK_FOUND;
        }
    }
    return *fail_at >= 0 ? DNS_CHECK_FAILED : DNS_CHECK_MISSING;
}

dns_check_result dns_check_txt(const dns_check_cfg_t *cfg, const char *name, const char *want,
                               char *where, size_t wlen, char *reason, size_t rlen)
{
    where[0] = reason[0] = '\0';
    check_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(reason, rlen, "the DNS check could not start (out of memory); try again");
        return DNS_CHECK_FAILED;
    }
    c->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : DNS_DEFAULT_TIMEOUT_MS;
    c->deadline = clock_after_ms(c->timeout_ms);
    c->zones_deadline = clock_after_ms(c->timeout_ms / 2);
    chain_build(c, name);
    if (c->nnames == 0) { /* normalised names have a dot: a caller's bug */
        snprintf(reason, rlen, "'%s' is not a domain name with a dot", name);
        free(c);
        return DNS_CHECK_MISSING;
    }
    int rc = chan_open(&c->resolver, cfg->resolver, NULL, clamp(c->timeout_ms / 3, 200, 2000), 3);
    if (rc != ARES_SUCCESS) {
        log_error("dns check: cannot set up the resolver '%s': %s",
                  cfg->resolver ? cfg->resolver : "", ares_strerror(rc));
        snprintf(reason, rlen, "the DNS check could not start (%s); try again later",
                 ares_strerror(rc));
        check_free(c);
        return DNS_CHECK_FAILED;
    }
    int fail_at = -1, fail_status = 0;
    dns_check_result res = check_walk(c, want, where, wlen, &fail_at, &fail_status);
    if (res == DNS_CHECK_MISSING)
        snprintf(reason, rlen, "no TXT record \"%s\" found on %s or its parents", want,
                 c->names[0]);
    else if (res == DNS_CHECK_FAILED)
        snprintf(reason, rlen,
                 "the DNS lookup of the TXT records of %s failed (%s), so the TXT record "
                 "\"%s\" could not be checked; try again later",
                 c->names[fail_at], status_text(fail_status), want);
    check_free(c);
    return res;
}
