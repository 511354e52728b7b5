/* Unit tests for the delivery thread (src/node/deliver.c) against local
 * stand-ins: an HTTP receiver on 127.0.0.1 (an ephemeral port) that answers
 * every request 500 with a marked body, and an imperium-wall that never
 * ends.  The service's answer never reaches the node's stdout, a service
 * key holding CR LF is never sent (it would inject a header), and a wall
 * child that outlives its job is killed and reaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/common/clock.h"
#include "../../src/node/deliver.h"

#define MARKER "SERVICE-ANSWER-MARKER"
#define WAIT_MS 5000

/* ---- the HTTP receiver ---------------------------------------------------- */

typedef struct {
    int lfd;
    unsigned short port;
    pthread_t thread;
    pthread_mutex_t mu;
    char requests[16384]; /* every request, one after the other */
    size_t len;
    int count;
    int stop; /* atomic */
} receiver_t;

/* One request (headers and a Content-Length body), answered 500. */
static void serve_one(receiver_t *rv, int fd)
{
    char buf[8192];
    size_t len = 0;
    long long until = now_ms() + WAIT_MS;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (now_ms() > until || poll(&p, 1, 100) < 0)
            break;
        if (!(p.revents & (POLLIN | POLLHUP)))
            continue;
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        const char *cl = strcasestr(buf, "Content-Length:");
        if (end && len >= (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0))
            break;
    }
    pthread_mutex_lock(&rv->mu);
    if (rv->len + len < sizeof rv->requests) {
        memcpy(rv->requests + rv->len, buf, len);
        rv->len += len;
        rv->requests[rv->len] = '\0';
    }
    rv->count++;
    pthread_mutex_unlock(&rv->mu);
    const char *body = MARKER " the service's own words\n";
    char answer[512];
    int n = snprintf(answer, sizeof answer,
                     "HTTP/1.1 500 Internal Server Error\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     strlen(body), body);
    assert_int_equal(write(fd, answer, (size_t)n), n);
    close(fd);
}

static void *receiver_main(void *arg)
{
    receiver_t *rv = arg;
    while (!__atomic_load_n(&rv->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd p = {.fd = rv->lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept4(rv->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            serve_one(rv, fd);
    }
    return NULL;
}

static void receiver_start(receiver_t *rv)
{
    memset(rv, 0, sizeof *rv);
    pthread_mutex_init(&rv->mu, NULL);
    rv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(rv->lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(rv->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(rv->lfd, 8), 0);
    assert_int_equal(getsockname(rv->lfd, (struct sockaddr *)&sa, &sl), 0);
    rv->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&rv->thread, NULL, receiver_main, rv), 0);
}

static void receiver_stop(receiver_t *rv)
{
    __atomic_store_n(&rv->stop, 1, __ATOMIC_RELEASE);
    pthread_join(rv->thread, NULL);
    close(rv->lfd);
    pthread_mutex_destroy(&rv->mu);
}

static int receiver_count(receiver_t *rv)
{
    pthread_mutex_lock(&rv->mu);
    int n = rv->count;
    pthread_mutex_unlock(&rv->mu);
    return n;
}

/* ---- tests --------------------------------------------------------------- */

static void test_http_answer_and_bad_key(void **state)
{
    (void)state;
    receiver_t rv;
    receiver_start(&rv);
    char po[128], pb[128];
    snprintf(po, sizeof po, "http://127.0.0.1:%u/pushover", rv.port);
    snprintf(pb, sizeof pb, "http://127.0.0.1:%u/pushbullet", rv.port);
    deliver_opts_t o = {.pushover_url = po,
                        .pushbullet_url = pb,
                        .slack_hosts = "",
                        .insecure_http = true,
                        .wall = "/nonexistent/imperium-wall",
                        .state_dir = "/nonexistent",
                        .retry_base_ms = 600000};

    /* The node's stdout, caught in a file while the thread runs. */
    char out_path[] = "/tmp/test_deliver_out.XXXXXX";
    int out = mkstemp(out_path);
    assert_true(out >= 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(out, STDOUT_FILENO) >= 0);

    err_t e = {0};
    deliver_t *d = deliver_new(&o, &e);
    assert_non_null(d);
    spec_alarms_t al = {.pushover_user = "u1",
                        .pushover_token = "t1",
                        .pushbullet_token = "tok\r\nX-Injected: 1"};
    deliver_push(d, 30001, &al, "[imperium] web (30001): hello");
    long long until = now_ms() + WAIT_MS;
    while (receiver_count(&rv) < 1 && now_ms() < until)
        usleep(10000);
    usleep(500000); /* libcurl reads the answer; a second request would come */
    deliver_free(d);

    fflush(stdout);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    char got[4096] = "";
    ssize_t n = pread(out, got, sizeof got - 1, 0);
    assert_true(n >= 0);
    got[n] = '\0';
    close(out);
    unlink(out_path);
    receiver_stop(&rv);

    assert_null(strstr(got, MARKER)); /* the answer went nowhere near stdout */
    assert_int_equal(rv.count, 1);    /* Pushover only: the bad key made no request */
    assert_non_null(strstr(rv.requests, "POST /pushover"));
    assert_null(strstr(rv.requests, "/pushbullet"));
    assert_null(strstr(rv.requests, "X-Injected"));
}

/* A wall child still running when its job times out is killed and reaped
 * (no sv_reap here: the delivery thread must do it). */
static void test_wall_timeout_kills_the_child(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_deliver_wall.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char wall[256], pidfile[256], script[1024];
    snprintf(wall, sizeof wall, "%s/imperium-wall", dir);
    snprintf(pidfile, sizeof pidfile, "%s/pid", dir);
    snprintf(script, sizeof script, "#!/bin/sh\necho $$ > %s.tmp\nmv %s.tmp %s\nexec sleep 30\n",
             pidfile, pidfile, pidfile);
    FILE *f = fopen(wall, "w");
    assert_non_null(f);
    fputs(script, f);
    fclose(f);
    assert_int_equal(chmod(wall, 0700), 0);

    deliver_opts_t o = {.slack_hosts = "",
                        .wall = wall,
                        .state_dir = dir,
                        .retry_base_ms = 600000,
                        .job_timeout_ms = 200};
    err_t e = {0};
    deliver_t *d = deliver_new(&o, &e);
    assert_non_null(d);
    deliver_push(d, 30001, NULL, "[imperium] web (30001): hello");

    long long until = now_ms() + WAIT_MS;
    pid_t pid = 0;
    while (!pid && now_ms() < until) {
        FILE *p = fopen(pidfile, "r");
        int v = 0;
        if (p && fscanf(p, "%d", &v) == 1)
            pid = v;
        if (p)
            fclose(p);
        usleep(10000);
    }
    assert_true(pid > 0);
    /* Gone (killed and reaped: a zombie would still answer kill 0). */
    bool gone = false;
    until = now_ms() + WAIT_MS;
    while (!gone && now_ms() < until) {
        gone = kill(pid, 0) < 0 && errno == ESRCH;
        if (!gone)
            usleep(20000);
    }
    if (!gone)
        kill(pid, SIGKILL); /* not left behind by a failing test */
    deliver_free(d);
    unlink(pidfile);
    unlink(wall);
    rmdir(dir);
    assert_true(gone);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_answer_and_bad_key),
        cmocka_unit_test(test_wall_timeout_kills_the_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
