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

static void send_as_container(const step_t *steps, size_t n)
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
            char addr[128];
            snprintf(addr, sizeof addr, RUN "%s", steps[i].sock);
            pkt_t p = packet(steps[i].cmd, "example.org", addr);
            if (sendto(fd, p.b, p.len, 0, (struct sockaddr *)&to, sizeof to) < 0)
                _exit(3);
            usleep(2000); /* in order: the gate reads one at a time */
        }
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_container_holds_at_most_max_subscriptions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
