/* legion.c - the legion members, their watchdog and the floating address
 * (legion.h; docs/CLUSTER.md "Membership and the floating address"). */
#include "legion.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libmnl/libmnl.h>
#include <linux/if_packet.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/if_ether.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/rawfork.h"
#include "../common/strutil.h"
#include "../runtime/net.h"
#include "netpolicy.h"

/* The context of the key derivation: the same on every member. */
#define DERIVE_CONTEXT "imperium legion uwsgi"
#define NAME_MAX_CHARS 64
#define STATS_TIMEOUT_MS 200
#define STATS_MAX (256 * 1024)
/* Readings in a row (~1 s) before the watchdog acts: longer than a hook runs. */
#define LEGION_WATCH_SAME 4
/* A listening member whose stats do not answer listens a second more, this
 * many times, before it takes the highest valor. */
#define LEGION_PROBE_RETRIES 3

/* ---- pure parts ------------------------------------------------------------ */

int legion_derive(const char *key, char out_key[LEGION_KEY_CHARS + 1],
                  char out_iv[LEGION_IV_CHARS + 1], err_t *e)
{
    unsigned char h[(LEGION_KEY_CHARS + LEGION_IV_CHARS) / 2];
    crypto_generichash_state st;
    if (sodium_init() < 0 || crypto_generichash_init(&st, NULL, 0, sizeof h) != 0 ||
        crypto_generichash_update(&st, (const unsigned char *)DERIVE_CONTEXT,
                                  strlen(DERIVE_CONTEXT) + 1) != 0 ||
        crypto_generichash_update(&st, (const unsigned char *)key, strlen(key)) != 0 ||
        crypto_generichash_final(&st, h, sizeof h) != 0)
        return err_set(e, ERR_INTERNAL, "legion: libsodium failed to derive the cipher key");
    char hex[sizeof h * 2 + 1];
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    memcpy(out_key, hex, LEGION_KEY_CHARS);
    out_key[LEGION_KEY_CHARS] = '\0';
    memcpy(out_iv, hex + LEGION_KEY_CHARS, LEGION_IV_CHARS);
    out_iv[LEGION_IV_CHARS] = '\0';
    sodium_memzero(hex, sizeof hex);
    sodium_memzero(h, sizeof h);
    return 0;
}

/* A name that is safe in a path, an ini line and a shell word. */
static bool plain_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (!n || n > max || s[0] == '.' || s[0] == '-')
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static bool is_ipv4(const char *s)
{
    struct in_addr a;
    return s && inet_pton(AF_INET, s, &a) == 1;
}

bool legion_can_lord(const legion_opts_t *o)
{
    return o->router && o->uplink && *o->uplink;
}

const char *legion_refusal(const legion_opts_t *o, const spec_legion_t *lg, const char *self)
{
    if (!o->network)
        return "needs network = on (its ports are kept to its members by the node's nft table)";
    if (!lg->key || !*lg->key)
        return "has no key: an unencrypted legion is never joined (imperium admin legion modify "
               "NAME --key K)";
    if (!plain_name(lg->name, NAME_MAX_CHARS))
        return "its name is not made of letters, digits, '.', '_' and '-' (at most 64)";
    if (!is_ipv4(lg->address))
        return "its address is not an IPv4 address";
    if (!is_ipv4(self))
        return "this server's address is not an IPv4 address";
    if (lg->id < 1 || (long long)o->port + lg->id > 65535)
        return "legion_port + its id is beyond 65535 (lower legion_port)";
    for (size_t i = 0; i < lg->n_nodes; i++)
        if (!is_ipv4(lg->nodes[i]))
            return "a member's address is not an IPv4 address";
    return NULL;
}

/* Shorter keys are warned about (docs/ADMIN.md). */
#define LEGION_MIN_KEY_CHARS 32

const char *legion_quorum_warning(const spec_legion_t *lg)
{
    if (lg->quorum > (long long)lg->n_nodes)
        return "its quorum is larger than its members: no Lord can ever be elected";
    if (lg->quorum * 2 <= (long long)lg->n_nodes)
        return "its quorum is not a majority of its members: a partition can make two Lords";
    return NULL;
}

char *legion_ini(const legion_opts_t *o, const spec_legion_t *lg, const char *self,
                 const char *dir, const char *hook, long long valor, err_t *e)
{
    char key[LEGION_KEY_CHARS + 1], iv[LEGION_IV_CHARS + 1];
    if (legion_derive(lg->key, key, iv, e) < 0)
        return NULL;
    int port = o->port + (int)lg->id;
    bool lord = legion_can_lord(o) && valor > 0;
    buf_t b = {0};
    int rc = buf_printf(&b,
                        "; written by imperium-node for legion %s: do not edit\n"
                        "[uwsgi]\nmaster = true\ncheap = true\ndie-on-term = true\n"
                        "socket = %s/idle.sock\nstats = %s/stats.sock\n"
                        "legion-freq = %d\nlegion-tolerance = %d\n"
                        "legion-death-on-lord-error = 5\n"
                        "legion = %s %s:%d %lld %s:%s %s\n",
                        lg->name, dir, dir, o->freq, o->tolerance, lg->name, self, port,
                        lord ? valor : 0, LEGION_CIPHER, key, iv);
    sodium_memzero(key, sizeof key);
    sodium_memzero(iv, sizeof iv);
    for (size_t i = 0; rc == 0 && i < lg->n_nodes; i++)
        if (strcmp(lg->nodes[i], self))
            rc = buf_printf(&b, "legion-node = %s %s:%d\n", lg->name, lg->nodes[i], port);
    if (rc == 0)
        rc = buf_printf(&b, "legion-quorum = %s %lld\n", lg->name, lg->quorum);
    static const char *const hooks[][2] = {
        {"legion-lord", "lord"}, {"legion-unlord", "unlord"}, {"legion-death", "unlord"}};
    for (size_t i = 0; rc == 0 && lord && i < 3; i++)
        rc = buf_printf(&b, "%s = %s cmd:%s %s %s %s\n", hooks[i][0], lg->name, hook,
                        hooks[i][1], lg->address, o->uplink);
    if (rc < 0) {
        if (b.data)
            sodium_memzero(b.data, b.len);
        buf_free(&b);
        err_set(e, ERR_INTERNAL, "legion %s: out of memory", lg->name);
        return NULL;
    }
    return b.data;
}

int legion_parse_stats(const char *json, const char *name, legion_stats_t *out, err_t *e)
{
    json_error_t je;
    json_t *root = json_loads(json, 0, &je);
    if (!root)
        return err_set(e, ERR_INPUT, "the member's stats are not JSON: %s", je.text);
    json_t *all = json_object_get(root, "legions"), *l;
    size_t i;
    int rc = err_set(e, ERR_NOTFOUND, "the member's stats have no legion %s", name);
    json_array_foreach(all, i, l) {
        if (!json_is_string(json_object_get(l, "legion")) ||
            strcmp(json_string_value(json_object_get(l, "legion")), name))
            continue;
        json_t *members = json_object_get(l, "members"), *m;
        out->lord = json_integer_value(json_object_get(l, "i_am_the_lord")) != 0;
        out->members = json_is_array(members) ? (int)json_array_size(members) : 0;
        out->min_valor = 0;
        size_t k;
        json_array_foreach(members, k, m) {
            long long v = json_integer_value(json_object_get(m, "valor"));
            if (v > 0 && (!out->min_valor || v < out->min_valor))
                out->min_valor = v;
        }
        err_clear(e);
        rc = 0;
        break;
    }
    json_decref(root);
    return rc;
}

bool legion_want_address(const legion_stats_t *st, long long quorum, bool can_lord)
{
    return can_lord && st->lord && 1 + (long long)st->members >= quorum;
}

long long legion_valor_below(const legion_stats_t *st)
{
    if (st->min_valor <= 0)
        return LEGION_VALOR_MAX;
    return st->min_valor > 1 ? st->min_valor - 1 : 1;
}

/* ---- the address ------------------------------------------------------------ */

/* addr parsed into *a and ifname's index (> 0), or -1 with e. */
static int target_of(const char *addr, const char *ifname, struct in_addr *a, err_t *e)
{
    if (inet_pton(AF_INET, addr, a) != 1)
        return err_set(e, ERR_INPUT, "legion: %s is not an IPv4 address", addr);
    unsigned idx = if_nametoindex(ifname);
    if (!idx)
        return err_set(e, ERR_INTERNAL, "legion: interface %s: %s", ifname, strerror(errno));
    return (int)idx;
}

int legion_address(const char *addr, const char *ifname, bool add, err_t *e)
{
    struct in_addr a;
    int idx = target_of(addr, ifname, &a, e);
    if (idx < 0)
        return -1;
    char buf[NET_MSG_MAX];
    int type = add ? RTM_NEWADDR : RTM_DELADDR;
    struct nlmsghdr *nlh = net_msg(buf, type, add ? NLM_F_CREATE | NLM_F_EXCL : 0);
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof *ifa);
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = 32;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = (unsigned)idx;
    mnl_attr_put_u32(nlh, IFA_LOCAL, a.s_addr);
    mnl_attr_put_u32(nlh, IFA_ADDRESS, a.s_addr);
    char what[128];
    snprintf(what, sizeof what, "legion: %s %s/32 %s %s", add ? "add" : "remove", addr,
             add ? "to" : "from", ifname);
    int rc = net_request(nlh, add ? EEXIST : EADDRNOTAVAIL, what, e);
    return rc < 0 ? -1 : rc == 1 ? 0 : 1;
}

int legion_garp(const char *addr, const char *ifname, err_t *e)
{
    struct in_addr a;
    int idx = target_of(addr, ifname, &a, e);
    if (idx < 0)
        return -1;
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0 || ioctl(s, SIOCGIFHWADDR, &ifr) < 0) {
        int err = errno;
        if (s >= 0)
            close(s);
        return err_set(e, ERR_INTERNAL, "legion: the MAC address of %s: %s", ifname,
                       strerror(err));
    }
    close(s);
    /* A request with sender = target = addr: every neighbour updates its
     * cache entry for addr (RFC 5227 "ARP announcement"). */
    struct ether_arp arp = {0};
    arp.arp_hrd = htons(ARPHRD_ETHER);
    arp.arp_pro = htons(ETHERTYPE_IP);
    arp.arp_hln = ETH_ALEN;
    arp.arp_pln = 4;
    arp.arp_op = htons(ARPOP_REQUEST);
    memcpy(arp.arp_sha, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
    memcpy(arp.arp_spa, &a.s_addr, 4);
    memcpy(arp.arp_tpa, &a.s_addr, 4);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP),
                             .sll_ifindex = idx, .sll_halen = ETH_ALEN};
    memset(to.sll_addr, 0xff, ETH_ALEN);
    int p = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP));
    if (p < 0)
        return err_set(e, ERR_INTERNAL, "legion: packet socket: %s", strerror(errno));
    ssize_t n = sendto(p, &arp, sizeof arp, 0, (struct sockaddr *)&to, sizeof to);
    int err = errno;
    close(p);
    if (n != (ssize_t)sizeof arp)
        return err_set(e, ERR_INTERNAL, "legion: gratuitous ARP for %s on %s: %s", addr, ifname,
                       n < 0 ? strerror(err) : "short write");
    return 0;
}

int legion_hook_run(int argc, char **argv, err_t *e)
{
    if (argc != 4 || (strcmp(argv[1], "lord") && strcmp(argv[1], "unlord")))
        return err_set(e, ERR_INPUT, "usage: %s lord|unlord ADDR IFNAME", LEGION_HOOK_NAME);
    if (!is_ipv4(argv[2]))
        return err_set(e, ERR_INPUT, "%s is not an IPv4 address", argv[2]);
    if (netpolicy_check_ifname(argv[3], e) < 0 || !*argv[3])
        return e->msg[0] ? -1 : err_set(e, ERR_INPUT, "the interface name is empty");
    bool lord = !strcmp(argv[1], "lord");
    if (legion_address(argv[2], argv[3], lord, e) < 0)
        return -1;
    /* The world's caches point here now; the watchdog repeats it. */
    return lord ? legion_garp(argv[2], argv[3], e) : 0;
}

/* ---- the members ------------------------------------------------------------ */

typedef struct {
    char *name;           /* the legion's (lg.name when started) */
    spec_legion_t lg;     /* its own copy of the legion's record: restarts render from it */
    char *self;           /* this server's address in that record */
    char *record;         /* what the member was started from: a change restarts it */
    char *dir, *ini, *stats, *log;
    pid_t pid;
    int pidfd;            /* -1: not running */
    int failures;         /* consecutive early deaths: the backoff */
    long long started_ms, restart_ms;
    bool held;            /* the address is on the uplink (as far as we did it) */
    bool seen;            /* in the current state (a pass marks, then sweeps) */
    long long garp_ms;    /* the next ARP refresh while held */
    int streak;           /* the watchdog's same readings in a row: > 0 want, < 0 not */
    bool probing;         /* listening as an arbiter, to rank below the others */
    long long probe_ms;   /* when it has heard them: restarted with its valor */
    int probe_misses;     /* its stats unread at probe_ms: it listens longer */
} member_t;

struct legions {
    legion_opts_t o;
    char *hook;
    char *base; /* <state_dir>/legion */
    member_t *m;
    size_t n, cap;
    long long watch_ms;
    /* Refusals are logged once per legion name and reason. */
    char **refused;
    size_t n_refused;
};

legions_t *legions_new(const legion_opts_t *o, err_t *e)
{
    legions_t *l = calloc(1, sizeof *l);
    if (!l) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    l->o = *o;
    char hook[4096];
    if (o->hook)
        snprintf(hook, sizeof hook, "%s", o->hook);
    else if (fs_beside_self(LEGION_HOOK_NAME, hook, sizeof hook, e) < 0)
        goto fail;
    l->hook = strdup(hook);
    l->base = str_printf("%s/%s", o->state_dir, LEGION_DIR);
    if (!l->hook || !l->base) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    /* The hook runs through /bin/sh -c (uWSGI's cmd:): its path must be one word. */
    if (strspn(hook, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-+") !=
        strlen(hook)) {
        err_set(e, ERR_INPUT, "legion: the hook path %s has characters a shell would read", hook);
        goto fail;
    }
    return l;
fail:
    free(l->hook);
    free(l->base);
    free(l);
    return NULL;
}

/* A legion record of the member's own (the state is freed after a pass). */
static void legion_copy_free(spec_legion_t *c)
{
    free(c->name);
    free(c->address);
    if (c->key)
        sodium_memzero(c->key, strlen(c->key));
    free(c->key);
    for (size_t i = 0; i < c->n_nodes; i++)
        free(c->nodes[i]);
    free(c->nodes);
    memset(c, 0, sizeof *c);
}

static int legion_copy(spec_legion_t *c, const spec_legion_t *lg)
{
    memset(c, 0, sizeof *c);
    c->id = lg->id;
    c->quorum = lg->quorum;
    c->name = strdup(lg->name);
    c->address = strdup(lg->address);
    c->key = strdup(lg->key);
    c->nodes = calloc(lg->n_nodes ? lg->n_nodes : 1, sizeof *c->nodes);
    bool ok = c->name && c->address && c->key && c->nodes;
    for (size_t i = 0; ok && i < lg->n_nodes; i++, c->n_nodes++)
        ok = (c->nodes[i] = strdup(lg->nodes[i])) != NULL;
    if (!ok)
        legion_copy_free(c);
    return ok ? 0 : -1;
}

static void member_clear(member_t *m)
{
    free(m->name);
    legion_copy_free(&m->lg);
    free(m->self);
    free(m->record);
    free(m->dir);
    free(m->ini);
    free(m->stats);
    free(m->log);
    memset(m, 0, sizeof *m);
    m->pidfd = -1;
}

/* The record a member is started from: any change restarts it. */
static char *record_of(const legion_opts_t *o, const spec_legion_t *lg, const char *self)
{
    buf_t b = {0};
    int rc = buf_printf(&b, "%lld|%s|%s|%s|%lld|%s|%s|%d", lg->id, lg->name, lg->address,
                        lg->key, lg->quorum, self, o->uplink ? o->uplink : "", o->router);
    for (size_t i = 0; rc == 0 && i < lg->n_nodes; i++)
        rc = buf_printf(&b, "|%s", lg->nodes[i]);
    if (rc < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static void address_off(legions_t *l, member_t *m, const char *why)
{
    if (!legion_can_lord(&l->o) || !m->lg.address)
        return;
    err_t e;
    err_clear(&e);
    int rc = legion_address(m->lg.address, l->o.uplink, false, &e);
    if (rc < 0)
        log_error("%s", e.msg);
    else if (rc == 1 || m->held)
        log_info("legion %s: this node is no longer the Lord (%s): %s removed from %s", m->name,
                 why, m->lg.address, l->o.uplink);
    m->held = false;
}

static void member_signal(member_t *m, int sig)
{
    if (m->pidfd >= 0 && pidfd_send_signal(m->pidfd, sig, NULL, 0) < 0 &&
        errno != ESRCH)
        log_error("legion %s: signal the member: %s", m->name, strerror(errno));
}

/* Reap the member if it ended; true when it did (or never ran). */
static bool member_reaped(member_t *m, int wait_ms)
{
    if (m->pidfd < 0)
        return true;
    struct pollfd p = {.fd = m->pidfd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) <= 0)
        return false;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int rc;
    /* An exec'd child is a SIGCHLD child again, whatever raw_fork said: the
     * supervisor's waitpid(-1) may have taken it first (ECHILD), status unknown. */
    while ((rc = waitid(P_PIDFD, (id_t)m->pidfd, &si, WEXITED)) < 0 && errno == EINTR)
        ;
    close(m->pidfd);
    m->pidfd = -1;
    m->pid = 0;
    if (rc < 0)
        log_info("legion %s: the member ended", m->name);
    else if (si.si_code == CLD_EXITED)
        log_info("legion %s: the member exited (status %d)", m->name, si.si_status);
    else
        log_info("legion %s: the member was killed by signal %d (code %d)", m->name,
                 si.si_status, si.si_code);
    return true;
}

static void member_stop(legions_t *l, member_t *m, const char *why)
{
    if (m->pidfd >= 0) {
        /* SIGINT: uWSGI runs its death hook and announces the death, so
         * another member takes the Lord in about a second. */
        member_signal(m, SIGINT);
        if (!member_reaped(m, LEGION_STOP_WAIT_MS)) {
            log_warn("legion %s: the member did not stop within %d ms: killed", m->name,
                     LEGION_STOP_WAIT_MS);
            member_signal(m, SIGKILL);
            member_reaped(m, -1);
        }
    }
    address_off(l, m, why);
}

/* In the child (a threaded parent: async-signal-safe calls only). */
static void __attribute__((noreturn)) member_exec(char *const argv[], char *const envp[],
                                                  int logfd, pid_t parent)
{
    sigset_t none;
    sigemptyset(&none);
    /* The daemon's main thread dies (kill -9 included): the guard stops
     * the member gracefully and removes the address. */
    if (prctl(PR_SET_PDEATHSIG, SIGINT, 0, 0, 0) < 0 || getppid() != parent)
        _exit(127);
    sigprocmask(SIG_SETMASK, &none, NULL); /* the daemon's signalfd mask */
    setsid();
    int in = open("/dev/null", O_RDONLY);
    if (in < 0 || dup2(in, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
        _exit(127);
    /* Root for the hooks' netlink and packet sockets: nothing else. */
    for (int cap = 0; cap <= 63; cap++)
        if (cap != 12 /* CAP_NET_ADMIN */ && cap != 13 /* CAP_NET_RAW */)
            prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || chdir("/") < 0)
        _exit(127);
    execve(argv[0], argv, envp);
    _exit(127);
}

static int member_spawn(legions_t *l, member_t *m, err_t *e)
{
    int logfd = open(m->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (logfd < 0)
        return err_set(e, ERR_INTERNAL, "legion %s: open %s: %s", m->name, m->log,
                       strerror(errno));
    /* The guard (legion_guard.c) is the member's parent: one SIGINT when
     * the daemon dies, the address removed when the member ends. */
    bool lord = legion_can_lord(&l->o);
    char *argv[] = {l->hook, "guard", lord ? m->lg.address : "-", lord ? (char *)l->o.uplink : "-",
                    (char *)l->o.uwsgi, "--ini", m->ini, NULL};
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    pid_t parent = getpid();
    int pidfd = -1;
    pid_t pid = raw_fork(SIGCHLD, &pidfd); /* for its pidfd (exec makes it SIGCHLD anyway) */
    if (pid == 0)
        member_exec(argv, envp, logfd, parent);
    int err = errno;
    close(logfd);
    if (pid < 0)
        return err_set(e, ERR_INTERNAL, "legion %s: fork: %s", m->name, strerror(err));
    m->pid = pid;
    m->pidfd = pidfd;
    m->started_ms = now_ms();
    return 0;
}

/* Write the ini and start the member: valor 0 (an arbiter) while probing. */
static int member_start(legions_t *l, member_t *m, long long valor, err_t *e)
{
    if (fs_mkdirs(l->base, 0700, e) < 0 || fs_mkdirs(m->dir, 0700, e) < 0)
        return -1;
    char *ini = legion_ini(&l->o, &m->lg, m->self, m->dir, l->hook, valor, e);
    if (!ini)
        return -1;
    size_t len = strlen(ini);
    int rc = fs_write_atomic(m->ini, ini, len, 0600, e);
    sodium_memzero(ini, len);
    free(ini);
    if (rc < 0)
        return -1;
    unlink(m->stats); /* a stale socket would answer nothing */
    if (member_spawn(l, m, e) < 0)
        return -1;
    if (!legion_can_lord(&l->o))
        log_info("legion %s: member started (pid %d, UDP %s:%lld, an arbiter: votes, never Lord)",
                 m->name, (int)m->pid, m->self, l->o.port + m->lg.id);
    else if (m->probing)
        log_info("legion %s: member started (pid %d, UDP %s:%lld), listening as an arbiter "
                 "first to rank below the members alive",
                 m->name, (int)m->pid, m->self, l->o.port + m->lg.id);
    else
        log_info("legion %s: member started (pid %d, UDP %s:%lld, valor %lld)", m->name,
                 (int)m->pid, m->self, l->o.port + m->lg.id, valor);
    return 0;
}

/* A (re)start: a node that may be Lord listens first (probing), then takes
 * a valor below every member alive (member_ranked). */
static void member_begin(legions_t *l, member_t *m)
{
    if (!m->record)
        return; /* its record could not be kept (out of memory) */
    m->probe_misses = 0;
    m->probing = legion_can_lord(&l->o);
    m->probe_ms = now_ms() + (2LL * l->o.freq + 1) * 1000;
    err_t e;
    err_clear(&e);
    if (member_start(l, m, 0, &e) < 0) {
        log_error("%s", e.msg);
        m->failures++;
        m->restart_ms = now_ms() + backoff_ms(m->failures);
    }
}

static member_t *member_find(legions_t *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->m[i].name, name))
            return &l->m[i];
    return NULL;
}

static bool refusal_logged(legions_t *l, const char *name, const char *why)
{
    char *key = str_printf("%s|%s", name, why);
    if (!key)
        return false;
    for (size_t i = 0; i < l->n_refused; i++)
        if (!strcmp(l->refused[i], key)) {
            free(key);
            return true;
        }
    char **more = realloc(l->refused, (l->n_refused + 1) * sizeof *more);
    if (!more) {
        free(key);
        return false;
    }
    l->refused = more;
    l->refused[l->n_refused++] = key;
    return false;
}

static member_t *member_add(legions_t *l, const spec_legion_t *lg)
{
    member_t *m = array_room(l->m, l->n, &l->cap, sizeof *l->m);
    if (!m)
        return NULL;
    l->m = m;
    m = &l->m[l->n];
    memset(m, 0, sizeof *m);
    m->pidfd = -1;
    m->name = strdup(lg->name);
    m->dir = str_printf("%s/%s", l->base, lg->name);
    m->ini = str_printf("%s/%s/member.ini", l->base, lg->name);
    m->stats = str_printf("%s/%s/stats.sock", l->base, lg->name);
    m->log = str_printf("%s/%s/member.log", l->base, lg->name);
    if (!m->name || !m->dir || !m->ini || !m->stats || !m->log) {
        member_clear(m);
        return NULL;
    }
    l->n++;
    return m;
}

static void legion_one(legions_t *l, const spec_legion_t *lg, const char *self)
{
    const char *why = legion_refusal(&l->o, lg, self);
    if (why) {
        if (!refusal_logged(l, lg->name ? lg->name : "", why))
            log_warn("legion %s: not joined: %s", lg->name ? lg->name : "?", why);
        return;
    }
    const char *warn = legion_quorum_warning(lg);
    if (warn && !refusal_logged(l, lg->name, warn))
        log_warn("legion %s: quorum %lld of %zu members: %s", lg->name, lg->quorum, lg->n_nodes,
                 warn);
    /* The API makes 64 hex characters when the supplier gives none. */
    if (strlen(lg->key) < LEGION_MIN_KEY_CHARS && !refusal_logged(l, lg->name, "short key"))
        log_warn("legion %s: its key has under %d characters: it can be guessed offline from "
                 "one captured packet (imperium admin legion modify %s --key \"$(openssl rand "
                 "-hex 32)\")",
                 lg->name, LEGION_MIN_KEY_CHARS, lg->name);
    if (!legion_can_lord(&l->o) && !refusal_logged(l, lg->name, "arbiter"))
        log_warn("legion %s: this node has no %s: it joins as an arbiter (votes, never Lord)",
                 lg->name, l->o.router ? "uplink" : "router_http");
    char *record = record_of(&l->o, lg, self);
    if (!record) {
        log_error("legion %s: out of memory", lg->name);
        return;
    }
    member_t *m = member_find(l, lg->name);
    if (m && m->record && !strcmp(m->record, record)) {
        free(record);
        m->seen = true;
        return;
    }
    if (m) {
        log_info("legion %s: its record changed: the member restarts", lg->name);
        member_stop(l, m, "its legion changed");
    } else if (!(m = member_add(l, lg))) {
        free(record);
        log_error("legion %s: out of memory", lg->name);
        return;
    }
    free(m->record);
    m->record = record;
    legion_copy_free(&m->lg);
    free(m->self);
    m->self = strdup(self);
    if (!m->self || legion_copy(&m->lg, lg) < 0) {
        /* Kept but not started: the next state retries (no record). */
        log_error("legion %s: out of memory", lg->name);
        free(m->record);
        m->record = NULL;
        m->seen = true;
        return;
    }
    m->seen = true;
    m->failures = 0;
    /* A fresh member is never Lord: an address left by a crash goes first. */
    address_off(l, m, "the member starts");
    member_begin(l, m);
}

void legions_set_state(legions_t *l, const spec_state_t *s)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        l->m[i].seen = false;
    const char *self = s->server.address ? s->server.address : "";
    for (size_t i = 0; i < s->n_legions; i++)
        legion_one(l, &s->legions[i], self);
    for (size_t i = 0; i < l->n;) {
        if (l->m[i].seen) {
            i++;
            continue;
        }
        log_info("legion %s: no longer in this server's state: the member stops", l->m[i].name);
        member_stop(l, &l->m[i], "the legion left this server");
        member_clear(&l->m[i]);
        l->m[i] = l->m[--l->n];
    }
}

/* ---- the watchdog ------------------------------------------------------------ */

/* The member's stats JSON (malloc'd), NULL when it does not answer. */
static char *read_stats(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return NULL;
    strcpy(sa.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return NULL;
    struct timeval tv = {.tv_usec = STATS_TIMEOUT_MS * 1000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    buf_t b = {0};
    bool ok = connect(s, (struct sockaddr *)&sa, sizeof sa) == 0;
    char chunk[8192];
    while (ok) {
        ssize_t n = read(s, chunk, sizeof chunk);
        if (n == 0)
            break;
        if (n < 0 || b.len + (size_t)n > STATS_MAX || buf_append(&b, chunk, (size_t)n) < 0)
            ok = false;
    }
    close(s);
    if (!ok || !b.data) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static void watch_one(legions_t *l, member_t *m, long long now)
{
    legion_stats_t st = {0};
    char *json = m->pidfd >= 0 ? read_stats(m->stats) : NULL;
    err_t e;
    err_clear(&e);
    bool known = json && legion_parse_stats(json, m->name, &st, &e) == 0;
    free(json);
    bool want = known && legion_want_address(&st, m->lg.quorum, legion_can_lord(&l->o));
    /* uWSGI runs the lord/unlord hook before it flips i_am_the_lord: reads
     * can fall between the two.  Only a reading that holds LEGION_WATCH_SAME
     * times in a row counts (the hooks act at once; this is the backstop). */
    m->streak = want ? (m->streak > 0 ? m->streak + 1 : 1) : (m->streak < 0 ? m->streak - 1 : -1);
    if (m->streak > -LEGION_WATCH_SAME && m->streak < LEGION_WATCH_SAME)
        return;
    if (!want) {
        if (m->held && known && st.lord)
            log_warn("legion %s: Lord without its quorum (hears %d of the %lld members needed)",
                     m->name, 1 + st.members, m->lg.quorum);
        if (m->held || now >= m->garp_ms) {
            /* Every second also when not held: a stale address goes. */
            address_off(l, m, known ? (st.lord ? "no quorum" : "another member is Lord")
                                    : "its member does not answer");
            m->garp_ms = now + 1000;
        }
        return;
    }
    int rc = legion_address(m->lg.address, l->o.uplink, true, &e);
    if (rc < 0) {
        log_error("%s", e.msg);
        return;
    }
    if (!m->held) {
        log_info("legion %s: this node is now the Lord: %s on %s", m->name, m->lg.address,
                 l->o.uplink);
        m->held = true;
        m->garp_ms = now; /* at once, then every LEGION_GARP_EVERY_MS */
    }
    if (rc == 1 || now >= m->garp_ms) {
        if (legion_garp(m->lg.address, l->o.uplink, &e) < 0)
            log_error("%s", e.msg);
        m->garp_ms = now + LEGION_GARP_EVERY_MS;
    }
}

/* A dead member: restarted after its backoff (a quick death counts). */
static void revive(legions_t *l, member_t *m, long long now)
{
    if (m->pidfd >= 0) {
        if (!member_reaped(m, 0))
            return;
        m->failures = now - m->started_ms < 10000 ? m->failures + 1 : 1;
        m->restart_ms = now + backoff_ms(m->failures);
        address_off(l, m, "its member died");
        log_warn("legion %s: the member died; restarted in %lld ms", m->name,
                 m->restart_ms - now);
        return;
    }
    if (now >= m->restart_ms)
        member_begin(l, m);
}

/* A probing member has heard the others: restarted with its rank. */
static void member_ranked(legions_t *l, member_t *m, long long now)
{
    if (!m->probing || m->pidfd < 0 || now < m->probe_ms)
        return;
    legion_stats_t st = {0};
    char *json = read_stats(m->stats);
    err_t e;
    err_clear(&e);
    bool heard = json && legion_parse_stats(json, m->name, &st, &e) == 0;
    free(json);
    if (!heard && ++m->probe_misses <= LEGION_PROBE_RETRIES) {
        /* Never the highest valor for want of a reading: it could tie
         * with the Lord and take it back. */
        log_warn("legion %s: the listening member's stats: %s: listening one more second",
                 m->name, e.msg[0] ? e.msg : "no answer");
        m->probe_ms = now + 1000;
        return;
    }
    if (!heard)
        log_warn("legion %s: the listening member's stats: %s: taking the highest valor",
                 m->name, e.msg[0] ? e.msg : "no answer");
    long long valor = legion_valor_below(&st);
    if (heard)
        log_info("legion %s: heard %d member(s), the lowest valor %lld: ranks at %lld", m->name,
                 st.members, st.min_valor, valor);
    m->probing = false;
    member_signal(m, SIGINT);
    if (!member_reaped(m, LEGION_STOP_WAIT_MS)) {
        member_signal(m, SIGKILL);
        member_reaped(m, -1);
    }
    err_clear(&e);
    if (member_start(l, m, valor, &e) < 0) {
        log_error("%s", e.msg);
        m->failures++;
        m->restart_ms = now + backoff_ms(m->failures);
    }
}

void legions_tick(legions_t *l)
{
    if (!l || !l->n)
        return;
    long long now = now_ms();
    for (size_t i = 0; i < l->n; i++) {
        revive(l, &l->m[i], now);
        member_ranked(l, &l->m[i], now);
    }
    if (now < l->watch_ms)
        return;
    l->watch_ms = now + LEGION_WATCH_MS;
    for (size_t i = 0; i < l->n; i++)
        watch_one(l, &l->m[i], now);
}

long long legions_next_deadline(const legions_t *l)
{
    if (!l || !l->n)
        return -1;
    long long next = l->watch_ms;
    for (size_t i = 0; i < l->n; i++) {
        if (l->m[i].pidfd < 0 && l->m[i].restart_ms < next)
            next = l->m[i].restart_ms;
        if (l->m[i].probing && l->m[i].probe_ms < next)
            next = l->m[i].probe_ms;
    }
    return next;
}

void legions_free(legions_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        member_stop(l, &l->m[i], "the node stops");
        member_clear(&l->m[i]);
    }
    for (size_t i = 0; i < l->n_refused; i++)
        free(l->refused[i]);
    free(l->refused);
    free(l->m);
    free(l->hook);
    free(l->base);
    free(l);
}
