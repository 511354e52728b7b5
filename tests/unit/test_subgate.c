/* Unit tests for the subscription gate (src/node/subgate.c): its bound on
 * the subscriptions a container holds in the router (max_subscriptions).
 * The gate runs for real on sockets in a temporary directory; a child that
 * became a container's uid sends it packets, and this process plays the
 * router, counting what the gate forwards.  Root only (setresuid). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <time.h>

#include "../../src/node/clustercrypt.h"
#include "../../src/node/subgate.h"
#include "subscription_packet.h"

#define UID 30123u
#define RUN "/containers/30123/run/"

static char dir[32], gate_path[64], router_path[64];
static uid_t send_uid = UID;           /* send_packets' container */
static useconds_t send_gap = 20000;    /* and its pause between packets */

static int bind_dgram(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    return fd;
}

/* The container's side, in a child: each step a packet, in order. */
typedef struct {
    int cmd;
    const char *sock;
} step_t;

/* Send ready packets as the container, in order. */
static void send_packets(const pkt_t *pkts, size_t n)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setresgid(send_uid, send_uid, send_uid) < 0 ||
            setresuid(send_uid, send_uid, send_uid) < 0)
            _exit(2);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un to = {.sun_family = AF_UNIX};
        snprintf(to.sun_path, sizeof to.sun_path, "%s", gate_path);
        for (size_t i = 0; i < n; i++) {
            if (sendto(fd, pkts[i].b, pkts[i].len, 0, (struct sockaddr *)&to, sizeof to) < 0)
                _exit(3);
            usleep(send_gap); /* in order: the gate reads one at a time (a check reads files) */
        }
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void send_as_container(const step_t *steps, size_t n)
{
    pkt_t pkts[16];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++) {
        char addr[128];
        snprintf(addr, sizeof addr, RUN "%s", steps[i].sock);
        pkts[i] = packet(steps[i].cmd, "example.org", addr);
    }
    send_packets(pkts, n);
}

/* What reached a router socket: "+s0 -s0 ..." (+ subscribe, - unsubscribe;
 * a socket in the container's run/ by its name, any other address whole). */
static void forwarded(int fd, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, 500) > 0) {
        unsigned char b[SUBSCRIPTION_MAX];
        ssize_t n = recv(fd, b, sizeof b, 0);
        assert_true(n > 0);
        subscription_t s;
        char why[512];
        assert_int_equal(subscription_parse(b, (size_t)n, &s, why, sizeof why), 0);
        const char *a = strncmp(s.address, RUN, strlen(RUN)) ? s.address : s.address + strlen(RUN);
        used += (size_t)snprintf(out + used, len - used, "%s%c%s", used ? " " : "",
                                 s.unsubscribe ? '-' : '+', a);
    }
}

static void test_a_container_holds_at_most_max_subscriptions(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    snprintf(dir, sizeof dir, "/tmp/imp-subgate-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0755), 0); /* the container's uid reaches the gate */
    snprintf(gate_path, sizeof gate_path, "%s/gate.sock", dir);
    snprintf(router_path, sizeof router_path, "%s/router.sock", dir);
    int router = bind_dgram(router_path);
    assert_true(router >= 0);
    err_t e = {0};
    subgate_opts_t o = {.listen_path = gate_path,
                        .router_path = router_path,
                        .router_uid = 0,
                        .containers_dir = dir, /* no homes: nothing told */
                        .max_subscriptions = 3};
    subgate_t *g = subgate_start(&o, &e);
    if (!g)
        fail_msg("%s", e.msg);

    const step_t steps[] = {
        {0, "s0"}, {0, "s1"}, {0, "s2"}, {0, "s3"}, {0, "s4"}, /* 3 and 4: past the bound */
        {0, "s0"},                                          /* held: announced again */
        {1, "s0"}, {0, "s4"},                               /* a place freed, taken */
        {0, "s3"},                                          /* full again */
    };
    send_as_container(steps, sizeof steps / sizeof *steps);
    char got[512];
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "+s0 +s1 +s2 +s0 -s0 +s4");

    subgate_stop(g);
    close(router);
    unlink(gate_path);
    unlink(router_path);
    rmdir(dir);
}

/* An ssl-domain packet for socket `sock`. */
static pkt_t tls_packet(const char *key, const char *sock, const char *k, const char *c)
{
    char addr[128];
    snprintf(addr, sizeof addr, RUN "%s", sock);
    pkt_t p = packet(0, key, addr);
    add_item(&p, "sni_key", k);
    add_item(&p, "sni_crt", c);
    return p;
}

static char acme_seen[256];

/* Takes every name but refused.org (as acme_want refuses another
 * customer's domain). */
static bool acme_want(void *arg, const char *name, uid_t uid, char *why, size_t why_len)
{
    snprintf(acme_seen, sizeof acme_seen, "%s %s %u", (const char *)arg, name, (unsigned)uid);
    if (strcmp(name, "refused.org") == 0) {
        snprintf(why, why_len, "the domain refused.org belongs to another customer");
        return false;
    }
    return true;
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (; (s = strstr(s, what)); s++)
        n++;
    return n;
}

static void read_file(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    out[0] = '\0';
    if (!f)
        return;
    size_t n = fread(out, 1, len - 1, f);
    out[n] = '\0';
    fclose(f);
}

static subgate_t *tls_gate(const char *homes, bool acme)
{
    err_t e = {0};
    subgate_opts_t o = {.listen_path = gate_path, .router_path = router_path, .router_uid = 0,
                        .containers_dir = dir, .router_homes = homes, .router_gid = 0,
                        .max_subscriptions = 2,
                        .acme_want = acme ? acme_want : NULL, .acme_arg = "arg"};
    subgate_t *g = subgate_start(&o, &e);
    if (!g)
        fail_msg("%s", e.msg);
    return g;
}

static void test_https_subscriptions_go_through_only_with_good_files(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    snprintf(dir, sizeof dir, "/tmp/imp-subgate-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0755), 0);
    snprintf(gate_path, sizeof gate_path, "%s/gate.sock", dir);
    snprintf(router_path, sizeof router_path, "%s/router.sock", dir);
    char cmd[1024], homes[96], log[128], copy[128];
    snprintf(homes, sizeof homes, "%s/homes", dir);
    snprintf(log, sizeof log, "%s/%u/logs/router.log", dir, UID);
    snprintf(copy, sizeof copy, "%s/%u/a.crt", homes, UID);
    snprintf(cmd, sizeof cmd,
             "cd %s && mkdir -p homes %u/logs && chown %u %u/logs && cd %u && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout a.key -out a.crt -days 9 "
             "-subj /CN=example.org && openssl req -x509 -newkey rsa:2048 -nodes -keyout b.key "
             "-out b.crt -days 9 -subj /CN=example.org >/dev/null 2>&1 && chown %u a.* b.*",
             dir, UID, UID, UID, UID, UID);
    assert_int_equal(system(cmd), 0);
    int router = bind_dgram(router_path);
    assert_true(router >= 0);
    subgate_t *g = tls_gate(homes, false);
    /* Refused packets hold no place among the 2 max_subscriptions: the
     * good one, last, still goes. */
    pkt_t pkts[] = {
        tls_packet("example.org", "s1", "/containers/30123/b.key", "/containers/30123/a.crt"),
        tls_packet("example.org", "s2", "/run/imperium-router/acme/certs/example.org.key",
                   "/run/imperium-router/acme/certs/example.org.crt"),
        tls_packet("example.org", "s0", "/containers/30123/a.key", "/containers/30123/a.crt"),
    };
    send_packets(pkts, 3);
    char got[512], logged[8192];
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "+s0");
    struct stat st;
    assert_int_equal(stat(copy, &st), 0);
    read_file(log, logged, sizeof logged);
    assert_non_null(strstr(logged, "subscription of example.org refused: the key does not match "
                                   "the certificate (key /containers/30123/b.key, certificate "
                                   "/containers/30123/a.crt)"));
    assert_non_null(strstr(logged, "subscription of example.org refused: automatic certificates "
                                   "are not enabled on this node (acme_directory)"));
    /* A flood of different refusals: 10 lines a minute for the container
     * (2 were said above), whatever the reasons. */
    pkt_t flood[12];
    for (int i = 0; i < 12; i++) {
        char addr[64];
        snprintf(addr, sizeof addr, RUN "bad:%d", i);
        flood[i] = packet(0, "example.org", addr);
    }
    send_packets(flood, 12);
    forwarded(router, got, sizeof got);
    read_file(log, logged, sizeof logged);
    assert_int_equal(count(logged, "refused:"), 10);
    assert_non_null(strstr(logged, "bad:7"));
    assert_null(strstr(logged, "bad:8"));
    subgate_stop(g);

    /* With ACME on: asked for, and forwarded; a name ACME refuses is
     * refused with its reason. */
    unlink(log);
    g = tls_gate(homes, true);
    send_packets(&pkts[1], 1);
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "+s2");
    assert_string_equal(acme_seen, "arg example.org 30123");
    pkt_t theirs = tls_packet("refused.org", "s3", "/run/imperium-router/acme/certs/refused.org.key",
                              "/run/imperium-router/acme/certs/refused.org.crt");
    send_packets(&theirs, 1);
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "");
    read_file(log, logged, sizeof logged);
    assert_non_null(strstr(logged, "subscription of refused.org refused: the domain refused.org "
                                   "belongs to another customer"));
    subgate_stop(g);

    /* A gate without router_homes (no router_https) copies nothing but
     * forwards the packet (the name keeps its plain-HTTP record) and tells
     * the customer why there is no HTTPS. */
    unlink(log);
    snprintf(cmd, sizeof cmd, "rm -rf %s/%u", homes, UID);
    assert_int_equal(system(cmd), 0);
    g = tls_gate(NULL, false);
    send_packets(&pkts[2], 1);
    forwarded(router, got, sizeof got);
    assert_string_not_equal(got, "");
    read_file(log, logged, sizeof logged);
    assert_non_null(strstr(logged, "is served over plain HTTP only: this node does not serve HTTPS"));
    assert_int_equal(stat(copy, &st), -1);
    subgate_stop(g);
    close(router);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- cluster-domain -------------------------------------------------------------- */

#define LEGION_KEY "the legion's secret"
#define SELF "127.0.0.1"
#define BUDGET_DOMAINS 25 /* more than the gate's ENDPOINTS_PER_SEC (20) */

static char cluster_path[64], fr_path[64];
static int gate_port;

static int udp_on(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    return fd;
}

/* What a member (fd) received from the gate: each envelope opened with the
 * legion's key, from SELF: "+addr -addr ...". */
static void member_got(int fd, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    cluster_key_t k;
    err_t e = {0};
    assert_int_equal(cluster_key_derive(LEGION_KEY, &k, &e), 0);
    cluster_replay_t *r = cluster_replay_new();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, 400) > 0) {
        unsigned char env[CLUSTER_MAX_ENVELOPE], pkt[SUBSCRIPTION_MAX];
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, env, sizeof env, 0, (struct sockaddr *)&from, &fl);
        assert_true(n > 0);
        char src[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &from.sin_addr, src, sizeof src);
        assert_string_equal(src, SELF);
        cluster_header_t h;
        assert_int_equal(cluster_peek(env, (size_t)n, &h, &e), 0);
        assert_int_equal(h.type, CLUSTER_SUB);
        assert_string_equal(h.sender, SELF);
        assert_string_equal(h.legion, "milan");
        ssize_t pl = cluster_open(&k, &h, r, (long long)time(NULL), env, (size_t)n, pkt,
                                  sizeof pkt, &e);
        if (pl < 0)
            fail_msg("%s", e.msg);
        subscription_t s;
        char why[512];
        assert_int_equal(subscription_parse(pkt, (size_t)pl, &s, why, sizeof why), 0);
        used += (size_t)snprintf(out + used, len - used, "%s%c%s", used ? " " : "",
                                 s.unsubscribe ? '-' : '+', s.address);
    }
    cluster_replay_free(r);
}

static EVP_PKEY *owner_key, *other_key;
static char owner_pem[4096];

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_RSA_gen(2048);
    assert_non_null(k);
    return k;
}

/* As a vassal signs it (sign=SHA1:key): over the body before "sign";
 * with sni_key and sni_crt when sni_key is not NULL (ssl-cluster-domain). */
static pkt_t signed_tls_packet(int cmd, const char *key, const char *addr, EVP_PKEY *k,
                               const char *sni_key, const char *sni_crt)
{
    pkt_t p;
    memset(&p, 0, sizeof p);
    p.b[0] = 224;
    p.b[3] = (unsigned char)cmd;
    p.len = 4;
    item(&p, "key", key);
    item(&p, "address", addr);
    item(&p, "modifier1", "0");
    if (sni_key) {
        item(&p, "sni_key", sni_key);
        item(&p, "sni_crt", sni_crt);
    }
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    add_item(&p, "unix", now);
    unsigned char sig[512];
    size_t sl = sizeof sig;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_true(ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha1(), NULL, k) == 1 &&
                EVP_DigestSign(ctx, sig, &sl, p.b + 4, p.len - 4) == 1);
    EVP_MD_CTX_free(ctx);
    /* The signature is binary (item() takes text): written by hand. */
    p.b[p.len++] = 4;
    p.b[p.len++] = 0;
    memcpy(p.b + p.len, "sign", 4);
    p.len += 4;
    p.b[p.len++] = (unsigned char)(sl & 0xff);
    p.b[p.len++] = (unsigned char)(sl >> 8);
    memcpy(p.b + p.len, sig, sl);
    p.len += sl;
    p.b[1] = (unsigned char)((p.len - 4) & 0xff);
    p.b[2] = (unsigned char)((p.len - 4) >> 8);
    return p;
}

static pkt_t signed_packet(int cmd, const char *key, const char *addr, EVP_PKEY *k)
{
    return signed_tls_packet(cmd, key, addr, k, NULL, NULL);
}

static void make_keys(void)
{
    if (owner_key)
        return;
    owner_key = new_key();
    other_key = new_key();
    BIO *b = BIO_new(BIO_s_mem());
    assert_true(b && PEM_write_bio_PUBKEY(b, owner_key) == 1);
    int n = BIO_read(b, owner_pem, sizeof owner_pem - 1);
    assert_true(n > 0);
    owner_pem[n] = '\0';
    BIO_free(b);
}

static subgate_t *cluster_gate(void)
{
    snprintf(dir, sizeof dir, "/tmp/imp-subgate-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0755), 0);
    snprintf(gate_path, sizeof gate_path, "%s/gate.sock", dir);
    snprintf(cluster_path, sizeof cluster_path, "%s/cluster.sock", dir);
    snprintf(router_path, sizeof router_path, "%s/router.sock", dir);
    snprintf(fr_path, sizeof fr_path, "%s/fr.sock", dir);
    gate_port = 20000 + (int)(getpid() % 20000);
    err_t e = {0};
    subgate_opts_t o = {.listen_path = gate_path, .router_path = router_path, .router_uid = 0,
                        .containers_dir = dir, .max_subscriptions = 64,
                        .cluster_listen_path = cluster_path, .cluster_router_path = fr_path,
                        .cluster_port = 3032, .cluster_gate_port = gate_port,
                        .cluster_gate_bind = SELF};
    subgate_t *g = subgate_start(&o, &e);
    if (!g)
        fail_msg("%s", e.msg);
    return g;
}

static void cluster_state(subgate_t *g, const char *self, size_t n_legions)
{
    static char *nodes[] = {"127.0.0.1", "127.0.0.2", "127.0.0.3"};
    spec_legion_t l = {.id = 1, .name = "milan", .key = LEGION_KEY, .quorum = 2,
                       .nodes = nodes, .n_nodes = 3};
    make_keys();
    /* The state's domains (whether or not the server is in a legion):
     * example.org and d0.org..d24.org are the owner's, other.org has no key. */
    static char names[BUDGET_DOMAINS][24];
    spec_domain_t d[2 + BUDGET_DOMAINS] = {{.name = "example.org", .pubkey = owner_pem},
                                           {.name = "other.org"}};
    for (int i = 0; i < BUDGET_DOMAINS; i++) {
        snprintf(names[i], sizeof names[i], "d%d.org", i);
        d[2 + i] = (spec_domain_t){.name = names[i], .pubkey = owner_pem};
    }
    subgate_set_cluster(g, self, &l, n_legions, d, 2 + BUDGET_DOMAINS);
}

static void cluster_done(subgate_t *g, int *fds, size_t n)
{
    subgate_stop(g);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_cluster_socket_announces_the_endpoint_to_the_members(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subgate_t *g = cluster_gate();
    int router = bind_dgram(router_path), fr = bind_dgram(fr_path);
    int m2 = udp_on("127.0.0.2", gate_port), m3 = udp_on("127.0.0.3", gate_port);
    assert_true(router >= 0 && fr >= 0 && m2 >= 0 && m3 >= 0);
    cluster_state(g, SELF, 1);
    snprintf(gate_path, sizeof gate_path, "%s", cluster_path); /* send_packets' target */
    EVP_PKEY *k = owner_key;
    pkt_t pkts[] = {
        signed_packet(0, "example.org", SELF ":3032", k),     /* no socket of it held: refused */
        signed_packet(0, "example.org", RUN "s0", k),         /* to the fastrouter */
        signed_packet(0, "example.org", SELF ":3032", k),     /* to both members */
        signed_packet(0, "example.org", "127.0.0.9:3032", k), /* not this node's endpoint */
        signed_packet(0, "example.org", "127.0.0.2:3032", k), /* another member's */
        signed_packet(0, "example.org", RUN "s1", k),         /* a second vassal */
        signed_packet(1, "example.org", RUN "s0", k),         /* the first one stops: */
        signed_packet(1, "example.org", SELF ":3032", k),     /*   kept, s1 serves it */
        signed_packet(1, "example.org", RUN "s1", k),         /* the last one stops: */
        signed_packet(1, "example.org", SELF ":3032", k),     /*   the members drop the node */
    };
    send_packets(pkts, sizeof pkts / sizeof *pkts);
    char got[512];
    member_got(m2, got, sizeof got);
    assert_string_equal(got, "+" SELF ":3032 -" SELF ":3032");
    member_got(m3, got, sizeof got);
    assert_string_equal(got, "+" SELF ":3032 -" SELF ":3032");
    forwarded(fr, got, sizeof got);
    assert_string_equal(got, "+s0 +s1 -s0 -s1");
    forwarded(router, got, sizeof got);
    assert_string_equal(got, ""); /* the http router gets nothing from this socket */

    /* Out of the legion (the state lists none): the endpoint is refused. */
    cluster_state(g, SELF, 0);
    pkt_t again[] = {signed_packet(0, "example.org", RUN "s0", k),
                     signed_packet(0, "example.org", SELF ":3032", k)};
    send_packets(again, 2);
    member_got(m2, got, sizeof got);
    assert_string_equal(got, "");
    forwarded(fr, got, sizeof got);
    assert_string_equal(got, "+s0");
    int fds[] = {router, fr, m2, m3};
    cluster_done(g, fds, 4);
}

/* The container's logs/router.log, made writable for it (the gate writes
 * it as the container's uid); its path in log. */
static void container_logs(uid_t uid, char *log, size_t len)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/%u/logs && chown %u %s/%u/logs", dir, (unsigned)uid,
             (unsigned)uid, dir, (unsigned)uid);
    assert_int_equal(system(cmd), 0);
    snprintf(log, len, "%s/%u/logs/router.log", dir, (unsigned)uid);
}

/* One container cannot make the gate seal envelopes without bound (each
 * takes a place in every member's replay cache): an endpoint goes at most
 * once a second per (container, key, address), at most ENDPOINTS_PER_SEC
 * (20) a second per container; the last holder's unsubscription still
 * goes at once. */
static void test_endpoints_go_to_the_members_at_most_once_a_second_within_a_budget(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subgate_t *g = cluster_gate();
    int fr = bind_dgram(fr_path), m2 = udp_on("127.0.0.2", gate_port);
    assert_true(fr >= 0 && m2 >= 0);
    cluster_state(g, SELF, 1);
    char log[128], logged[8192], got[4096];
    container_logs(UID, log, sizeof log);
    snprintf(gate_path, sizeof gate_path, "%s", cluster_path); /* send_packets' target */
    EVP_PKEY *k = owner_key;
    pkt_t ep = signed_packet(0, "example.org", SELF ":3032", k);
    pkt_t burst[] = {signed_packet(0, "example.org", RUN "s0", k), ep, ep, ep, ep};
    send_packets(burst, 5);
    member_got(m2, got, sizeof got);
    assert_string_equal(got, "+" SELF ":3032");
    usleep(1000000); /* a second later (member_got waited too): again */
    send_packets(&ep, 1);
    member_got(m2, got, sizeof got);
    assert_string_equal(got, "+" SELF ":3032");
    /* The last holder leaves: at once, within the second; once. */
    pkt_t stop[] = {signed_packet(1, "example.org", RUN "s0", k),
                    signed_packet(1, "example.org", SELF ":3032", k),
                    signed_packet(1, "example.org", SELF ":3032", k)};
    send_packets(stop, 3);
    member_got(m2, got, sizeof got);
    assert_string_equal(got, "-" SELF ":3032");

    /* 25 names with a socket each, then their 25 endpoints in one second:
     * 20 go, the rest are said in the container's log. */
    static pkt_t many[2 * BUDGET_DOMAINS];
    for (int i = 0; i < BUDGET_DOMAINS; i++) {
        char name[24], sock[64];
        snprintf(name, sizeof name, "d%d.org", i);
        snprintf(sock, sizeof sock, RUN "s%d", i);
        many[i] = signed_packet(0, name, sock, k);
        many[BUDGET_DOMAINS + i] = signed_packet(0, name, SELF ":3032", k);
    }
    usleep(1000000); /* the second of the endpoint above is over */
    send_gap = 2000;
    send_packets(many, 2 * BUDGET_DOMAINS);
    send_gap = 20000;
    member_got(m2, got, sizeof got);
    assert_int_equal(count(got, "+" SELF ":3032"), 20);
    read_file(log, logged, sizeof logged);
    assert_non_null(strstr(logged, "this container announced more than 20 cluster endpoints "
                                   "this second: not sent to the members"));
    int fds[] = {fr, m2};
    cluster_done(g, fds, 2);
}

#define UID2 30124u
#define RUN2 "/containers/30124/run/"

/* A packet on the cluster socket counts (as a holder, or for the members)
 * only when signed by its domain's owner: customer X's vassal claiming Y's
 * name holds nothing, so Y's last unsubscription still goes. */
static void test_only_the_owner_holds_a_cluster_domain(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subgate_t *g = cluster_gate();
    int fr = bind_dgram(fr_path), m2 = udp_on("127.0.0.2", gate_port);
    assert_true(fr >= 0 && m2 >= 0);
    cluster_state(g, SELF, 1);
    char log[128], logged[8192], got[1024];
    container_logs(UID, log, sizeof log);
    snprintf(gate_path, sizeof gate_path, "%s", cluster_path);
    pkt_t y_on[] = {signed_packet(0, "example.org", RUN2 "s0", owner_key),
                    signed_packet(0, "example.org", SELF ":3032", owner_key)};
    pkt_t x[] = {signed_packet(0, "example.org", RUN "x0", other_key),
                 signed_packet(0, "example.org", SELF ":3032", other_key),
                 packet(0, "example.org", RUN "x1"), /* a signature that is no signature */
                 signed_packet(0, "unknown.org", RUN "x2", owner_key)};
    pkt_t y_off[] = {signed_packet(1, "example.org", RUN2 "s0", owner_key),
                     signed_packet(1, "example.org", SELF ":3032", owner_key)};
    send_uid = UID2;
    send_packets(y_on, 2);
    send_uid = UID;
    send_packets(x, 4);
    send_uid = UID2;
    send_packets(y_off, 2);
    send_uid = UID;
    member_got(m2, got, sizeof got);
    assert_string_equal(got, "+" SELF ":3032 -" SELF ":3032");
    forwarded(fr, got, sizeof got);
    assert_string_equal(got, "+" RUN2 "s0 -" RUN2 "s0");
    read_file(log, logged, sizeof logged);
    assert_non_null(strstr(logged, "subscription of example.org refused: the packet for "
                                   "example.org is not signed by its owner"));
    assert_non_null(strstr(logged, "unknown.org is not a domain this node knows"));
    int fds[] = {fr, m2};
    cluster_done(g, fds, 2);
}

/* Send envelope env (n bytes) to the gate from `from`. */
static void envelope_from(const char *from, const unsigned char *env, ssize_t n)
{
    int fd = udp_on(from, 0);
    assert_true(fd >= 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)gate_port)};
    inet_pton(AF_INET, SELF, &to.sin_addr);
    assert_int_equal(sendto(fd, env, (size_t)n, 0, (struct sockaddr *)&to, sizeof to), n);
    close(fd);
    usleep(20000);
}

/* An envelope as member `sender` would seal it, sent from `from`. */
static void member_sends(const char *from, const char *sender, const char *legion_key,
                         const char *legion, const pkt_t *p)
{
    cluster_key_t k;
    err_t e = {0};
    assert_int_equal(cluster_key_derive(legion_key, &k, &e), 0);
    unsigned char env[CLUSTER_MAX_ENVELOPE];
    ssize_t n = cluster_seal(&k, CLUSTER_SUB, legion, sender, (long long)time(NULL), p->b, p->len,
                             env, sizeof env, &e);
    if (n < 0)
        fail_msg("%s", e.msg);
    envelope_from(from, env, n);
}

/* A replayed envelope is refused, also after a new state (the legion keeps
 * its own replay cache from state to state). */
static void test_a_replayed_envelope_is_refused_across_states(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subgate_t *g = cluster_gate();
    int router = bind_dgram(router_path);
    assert_true(router >= 0);
    cluster_state(g, SELF, 1);
    pkt_t good = signed_packet(0, "example.org", "127.0.0.2:3032", owner_key);
    cluster_key_t k;
    err_t e = {0};
    assert_int_equal(cluster_key_derive(LEGION_KEY, &k, &e), 0);
    unsigned char env[CLUSTER_MAX_ENVELOPE];
    ssize_t n = cluster_seal(&k, CLUSTER_SUB, "milan", "127.0.0.2", (long long)time(NULL), good.b,
                             good.len, env, sizeof env, &e);
    assert_true(n > 0);
    envelope_from("127.0.0.2", env, n);
    char got[512];
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "+127.0.0.2:3032");
    envelope_from("127.0.0.2", env, n);
    cluster_state(g, SELF, 1); /* a new state, the same legion */
    envelope_from("127.0.0.2", env, n);
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "");
    int fds[] = {router};
    cluster_done(g, fds, 1);
}

static void test_members_envelopes_are_checked_where_they_arrive(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subgate_t *g = cluster_gate();
    int router = bind_dgram(router_path), fr = bind_dgram(fr_path);
    assert_true(router >= 0 && fr >= 0);
    cluster_state(g, SELF, 1);
    make_keys();
    pkt_t good = signed_packet(0, "example.org", "127.0.0.2:3032", owner_key);
    pkt_t theirs = signed_packet(0, "example.org", "127.0.0.3:3032", owner_key);
    pkt_t unknown = signed_packet(0, "unknown.org", "127.0.0.2:3032", owner_key);
    pkt_t unix_path = signed_packet(0, "example.org", "/containers/30123/run/s0", owner_key);
    pkt_t hijack = signed_packet(0, "example.org", "127.0.0.2:3032", other_key);
    pkt_t unsigned_one = packet(0, "example.org", "127.0.0.2:3032");
    pkt_t keyless = signed_packet(0, "other.org", "127.0.0.2:3032", owner_key);
    /* A non-member (127.0.0.4 is not in the legion), with the key. */
    pkt_t stranger = signed_packet(0, "example.org", "127.0.0.4:3032", owner_key);
    member_sends("127.0.0.4", "127.0.0.4", LEGION_KEY, "milan", &stranger);
    /* A member naming another as its sender. */
    member_sends("127.0.0.2", "127.0.0.3", LEGION_KEY, "milan", &theirs);
    /* A packet whose address is not its sender's endpoint. */
    member_sends("127.0.0.2", "127.0.0.2", LEGION_KEY, "milan", &theirs);
    member_sends("127.0.0.2", "127.0.0.2", LEGION_KEY, "milan", &unix_path);
    /* Not a domain of this node; another key; another legion; itself. */
    member_sends("127.0.0.2", "127.0.0.2", LEGION_KEY, "milan", &unknown);
    member_sends("127.0.0.2", "127.0.0.2", "not the legion's secret", "milan", &good);
    member_sends("127.0.0.2", "127.0.0.2", LEGION_KEY, "rome", &good);
    member_sends(SELF, SELF, LEGION_KEY, "milan", &(pkt_t){0});
    /* Another customer's claim, a forged signature, a domain without a key. */
    member_sends("127.0.0.2", "127.0.0.2", LEGION_KEY, "milan", &hijack);
    member_sends("127.0.0.2", "127.0.0.2", LEGION_KEY, "milan", &unsigned_one);
    member_sends("127.0.0.2", "127.0.0.2", LEGION_KEY, "milan", &keyless);
    char got[512];
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "");
    /* The good one: to the http router, unchanged; not to the fastrouter. */
    member_sends("127.0.0.2", "127.0.0.2", LEGION_KEY, "milan", &good);
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "+127.0.0.2:3032");
    forwarded(fr, got, sizeof got);
    assert_string_equal(got, "");
    /* The legion left the state: its envelopes go nowhere. */
    cluster_state(g, SELF, 0);
    member_sends("127.0.0.2", "127.0.0.2", LEGION_KEY, "milan", &good);
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "");
    int fds[] = {router, fr};
    cluster_done(g, fds, 2);
}

/* Refusals of envelopes reach the node's log at most 10 a minute per
 * source address and 60 a minute in all, however the senders vary what
 * they control (here the legion's name, in every line). */
static void test_envelope_refusals_are_limited_per_source_and_in_all(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    subgate_t *g = cluster_gate();
    cluster_state(g, SELF, 1);
    char err_path[64];
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    int saved = dup(2), out = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && out >= 0);
    fflush(stderr);
    assert_int_equal(dup2(out, 2), 2);
    pkt_t p = signed_packet(0, "example.org", "127.0.0.2:3032", owner_key);
    for (int src = 2; src <= 8; src++) /* 7 sources, 12 lines each: 84 */
        for (int i = 0; i < 12; i++) {
            char from[24], legion[24];
            snprintf(from, sizeof from, "127.0.0.%d", src);
            snprintf(legion, sizeof legion, "l%d", i);
            member_sends(from, from, LEGION_KEY, legion, &p);
        }
    usleep(100000);
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    close(out);
    static char logged[65536];
    read_file(err_path, logged, sizeof logged);
    assert_int_equal(count(logged, "cluster gate: envelope from 127.0.0.2 refused"), 10);
    assert_int_equal(count(logged, "cluster gate: envelope from "), 60);
    cluster_done(g, NULL, 0);
}

/* ---- ssl-cluster-domain ---------------------------------------------------------- */

/* A gate with HTTPS and a cluster side for this test: its sockets in d,
 * the router's copies in d/homes, the gate-to-gate socket on ip. */
static subgate_t *ssl_cluster_gate(const char *d, const char *ip, char *homes, size_t hl)
{
    char listen[96], router[96], cluster[96], fastrouter[96];
    snprintf(listen, sizeof listen, "%s/gate.sock", d);
    snprintf(router, sizeof router, "%s/router.sock", d);
    snprintf(cluster, sizeof cluster, "%s/cluster.sock", d);
    snprintf(fastrouter, sizeof fastrouter, "%s/fr.sock", d);
    snprintf(homes, hl, "%s/homes", d);
    assert_int_equal(mkdir(homes, 0755), 0);
    err_t e = {0};
    subgate_opts_t o = {.listen_path = listen, .router_path = router, .router_uid = 0,
                        .containers_dir = d, .max_subscriptions = 8, .router_homes = homes,
                        .router_gid = 0, .cluster_listen_path = cluster,
                        .cluster_router_path = fastrouter, .cluster_port = 3032,
                        .cluster_gate_port = gate_port, .cluster_gate_bind = ip};
    subgate_t *g = subgate_start(&o, &e);
    if (!g)
        fail_msg("%s", e.msg);
    return g;
}

/* Member A (127.0.0.1) has the container and its files; member B
 * (127.0.0.2) gets the endpoint packet with the set's digest, asks for the
 * set, installs what A sends and only then hands the packet to its router. */
static void test_ssl_cluster_sets_travel_to_the_members_sealed(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char a_dir[32] = "/tmp/imp-subgate-XXXXXX", b_dir[32] = "/tmp/imp-subgate-XXXXXX";
    assert_non_null(mkdtemp(a_dir));
    assert_non_null(mkdtemp(b_dir));
    assert_int_equal(chmod(a_dir, 0755), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd %s && mkdir -p %u/logs %u/certs && chown %u %u/logs %u/certs && cd %u/certs && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout a.key -out a.crt -days 9 "
             "-subj /CN=example.org >/dev/null 2>&1 && chown %u a.key a.crt",
             a_dir, UID, UID, UID, UID, UID, UID, UID);
    assert_int_equal(system(cmd), 0);
    gate_port = 20000 + (int)(getpid() % 20000);
    char a_homes[64], b_homes[64], b_router[96], b_copy[128];
    subgate_t *a = ssl_cluster_gate(a_dir, "127.0.0.1", a_homes, sizeof a_homes);
    subgate_t *b = ssl_cluster_gate(b_dir, "127.0.0.2", b_homes, sizeof b_homes);
    snprintf(b_router, sizeof b_router, "%s/router.sock", b_dir);
    snprintf(b_copy, sizeof b_copy, "%s/%u/certs/a.crt", b_homes, UID);
    int router = bind_dgram(b_router);
    assert_true(router >= 0);
    cluster_state(a, "127.0.0.1", 1);
    cluster_state(b, "127.0.0.2", 1);
    snprintf(gate_path, sizeof gate_path, "%s/cluster.sock", a_dir); /* send_packets' target */
    pkt_t endpoint = signed_tls_packet(0, "example.org", "127.0.0.1:3032", owner_key,
                                       "/containers/30123/certs/a.key",
                                       "/containers/30123/certs/a.crt");
    pkt_t first[] = {signed_packet(0, "example.org", RUN "s0", owner_key), endpoint};
    send_packets(first, 2);
    char got[512];
    /* Held back while B asks for the set and A sends it. */
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "");
    struct stat st;
    assert_int_equal(stat(b_copy, &st), 0);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    /* The next announcement (a vassal's come every 2 s; the gate sends one
     * at most once a second) goes through: the set is B's now. */
    usleep(1000000);
    send_packets(&endpoint, 1);
    forwarded(router, got, sizeof got);
    assert_string_equal(got, "+127.0.0.1:3032");
    subgate_stop(a);
    subgate_stop(b);
    close(router);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", a_dir, b_dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_container_holds_at_most_max_subscriptions),
        cmocka_unit_test(test_https_subscriptions_go_through_only_with_good_files),
        cmocka_unit_test(test_cluster_socket_announces_the_endpoint_to_the_members),
        cmocka_unit_test(test_members_envelopes_are_checked_where_they_arrive),
        cmocka_unit_test(test_a_replayed_envelope_is_refused_across_states),
        cmocka_unit_test(test_endpoints_go_to_the_members_at_most_once_a_second_within_a_budget),
        cmocka_unit_test(test_only_the_owner_holds_a_cluster_domain),
        cmocka_unit_test(test_envelope_refusals_are_limited_per_source_and_in_all),
        cmocka_unit_test(test_ssl_cluster_sets_travel_to_the_members_sealed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
