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

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/node/subgate.h"
#include "subscription_packet.h"

#define UID 30123u
#define RUN "/containers/30123/run/"

static char dir[32], gate_path[64], router_path[64];

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
        if (setresgid(UID, UID, UID) < 0 || setresuid(UID, UID, UID) < 0)
            _exit(2);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un to = {.sun_family = AF_UNIX};
        snprintf(to.sun_path, sizeof to.sun_path, "%s", gate_path);
        for (size_t i = 0; i < n; i++) {
            if (sendto(fd, pkts[i].b, pkts[i].len, 0, (struct sockaddr *)&to, sizeof to) < 0)
                _exit(3);
            usleep(20000); /* in order: the gate reads one at a time (a check reads files) */
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

/* What reached the router: "+s0 -s0 ..." (+ subscribe, - unsubscribe). */
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
        assert_int_equal(subscription_check(b, (size_t)n, UID, &s, why, sizeof why), 0);
        used += (size_t)snprintf(out + used, len - used, "%s%c%s", used ? " " : "",
                                 s.unsubscribe ? '-' : '+', s.address + strlen(RUN));
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_container_holds_at_most_max_subscriptions),
        cmocka_unit_test(test_https_subscriptions_go_through_only_with_good_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
