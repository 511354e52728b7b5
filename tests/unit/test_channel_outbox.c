/* Unit tests for the channel's outbox (src/node/channel.c, channel_post):
 * the bounds in bodies and bytes (the oldest metrics dropped first, alarms
 * last), the save at channel_free and the reload at channel_new (with the
 * same bounds), and which answers of the API drop a body: a small HTTP
 * server in a thread answers what each test scripts.  The API's side is
 * tests/e2e/test_node_metrics.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../src/common/clock.h"
#include "../../src/common/strutil.h"
#include "../../src/node/channel.h"
#include "../../src/node/nodestats.h"

static char dir[64], file[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/imp-outbox-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(file, sizeof file, "%s/%s", dir, CHANNEL_OUTBOX_FILE);
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    unlink(file);
    rmdir(dir);
    curl_global_cleanup();
    return 0;
}

static channel_t *new_channel_at(const char *url, int max, size_t max_bytes, const char *f)
{
    err_t e = {0};
    channel_opts_t o = {.api_url = url,
                        .node_prefix = "/node",
                        .user = "srv",
                        .secret = "s",
                        .notify_fd = -1,
                        .outbox_max = max,
                        .outbox_max_bytes = max_bytes,
                        .outbox_file = f};
    channel_t *c = channel_new(&o, &e);
    if (!c)
        fail_msg("%s", e.msg);
    return c;
}

static channel_t *new_channel(int max)
{
    return new_channel_at("http://127.0.0.1:1", max, 0, file);
}

static void post(channel_t *c, const char *route, int n)
{
    channel_post(c, route, str_printf("{\"n\":%d}", n));
}

/* The saved file as "route:n route:n ...". */
static void saved(char *out, size_t len)
{
    json_error_t je;
    json_t *j = json_load_file(file, 0, &je);
    assert_non_null(j);
    size_t i, used = 0;
    json_t *v;
    out[0] = '\0';
    json_array_foreach(json_object_get(j, "outbox"), i, v)
    {
        json_t *body = json_loads(json_string_value(json_object_get(v, "body")), 0, &je);
        assert_non_null(body);
        used += (size_t)snprintf(out + used, len - used, "%s%s:%lld", i ? " " : "",
                                 json_string_value(json_object_get(v, "route")),
                                 (long long)json_integer_value(json_object_get(body, "n")));
        json_decref(body);
    }
    json_decref(j);
}

static void test_bound_drops_oldest_metrics_first(void **state)
{
    (void)state;
    unsigned long long dropped = nodestats_get(NS_METRICS_DROPPED);
    channel_t *c = new_channel(3);
    post(c, "metrics", 1);
    post(c, "alarms", 2);
    post(c, "metrics", 3);
    assert_int_equal(channel_outbox_length(c), 3);
    post(c, "metrics", 4); /* full: metrics 1 goes */
    post(c, "alarms", 5);  /* full: metrics 3 goes */
    assert_int_equal(channel_outbox_length(c), 3);
    assert_int_equal(nodestats_get(NS_METRICS_DROPPED) - dropped, 2);
    assert_int_equal(nodestats_get(NS_OUTBOX_LENGTH), 3);
    channel_free(c);
    char got[256];
    saved(got, sizeof got);
    assert_string_equal(got, "alarms:2 metrics:4 alarms:5");
}

static void test_only_alarms_left_drops_the_oldest_alarm(void **state)
{
    (void)state;
    unlink(file);
    channel_t *c = new_channel(2);
    post(c, "alarms", 1);
    post(c, "alarms", 2);
    post(c, "alarms", 3);
    channel_free(c);
    char got[256];
    saved(got, sizeof got);
    assert_string_equal(got, "alarms:2 alarms:3");
}

static void test_reloaded_first_and_file_removed(void **state)
{
    (void)state;
    unlink(file);
    channel_t *c = new_channel(10);
    post(c, "metrics", 1);
    post(c, "alarms", 2);
    channel_free(c);
    assert_int_equal(access(file, F_OK), 0);

    c = new_channel(10);
    assert_int_equal(channel_outbox_length(c), 2);
    assert_int_equal(access(file, F_OK), -1); /* read once: a crash must not resend it */
    post(c, "metrics", 3);
    channel_free(c);
    char got[256];
    saved(got, sizeof got);
    assert_string_equal(got, "metrics:1 alarms:2 metrics:3");

    /* Nothing left: no file. */
    c = new_channel(10);
    channel_free(c); /* saves the 3 again */
    unlink(file);
    c = new_channel(10);
    assert_int_equal(channel_outbox_length(c), 0);
    channel_free(c);
    assert_int_equal(access(file, F_OK), -1);
}

static void test_not_an_outbox_is_ignored(void **state)
{
    (void)state;
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("{not json", f);
    fclose(f);
    channel_t *c = new_channel(10);
    assert_int_equal(channel_outbox_length(c), 0);
    channel_free(c);
    char bad[160];
    snprintf(bad, sizeof bad, "%s.bad", file);
    assert_int_equal(access(file, F_OK), -1);
    assert_int_equal(access(bad, F_OK), 0); /* kept for a look */
    unlink(bad);
}

/* Each body below is {"n":N}: 7 bytes for N < 10. */
static void test_byte_bound_drops_oldest_metrics_first(void **state)
{
    (void)state;
    unlink(file);
    unsigned long long dropped = nodestats_get(NS_METRICS_DROPPED);
    channel_t *c = new_channel_at("http://127.0.0.1:1", 100, 30, file);
    post(c, "metrics", 1);
    post(c, "alarms", 2);
    post(c, "metrics", 3);
    post(c, "metrics", 4); /* 28 bytes */
    assert_int_equal(channel_outbox_length(c), 4);
    post(c, "metrics", 5); /* 35 > 30: metrics 1 goes */
    assert_int_equal(channel_outbox_length(c), 4);
    assert_int_equal(nodestats_get(NS_METRICS_DROPPED) - dropped, 1);
    channel_free(c);
    char got[256];
    saved(got, sizeof got);
    assert_string_equal(got, "alarms:2 metrics:3 metrics:4 metrics:5");
}

static void test_a_body_over_the_byte_bound_is_dropped_alone(void **state)
{
    (void)state;
    unlink(file);
    channel_t *c = new_channel_at("http://127.0.0.1:1", 100, 10, file);
    post(c, "metrics", 1);
    channel_post(c, "metrics", strdup("{\"n\":2,\"pad\":\"xxxxxxxxxx\"}"));
    assert_int_equal(channel_outbox_length(c), 1); /* metrics 1 stays */
    channel_free(c);
    char got[256];
    saved(got, sizeof got);
    assert_string_equal(got, "metrics:1");
}

/* A saved outbox larger than this daemon's bounds is read back within
 * them, in the same order of eviction. */
static void test_reload_keeps_the_bounds(void **state)
{
    (void)state;
    unlink(file);
    channel_t *c = new_channel(100);
    post(c, "metrics", 1);
    post(c, "alarms", 2);
    post(c, "metrics", 3);
    post(c, "metrics", 4);
    post(c, "metrics", 5);
    channel_free(c);

    c = new_channel_at("http://127.0.0.1:1", 100, 21, file); /* 3 bodies */
    assert_int_equal(channel_outbox_length(c), 3);
    channel_free(c);
    char got[256];
    saved(got, sizeof got);
    assert_string_equal(got, "alarms:2 metrics:4 metrics:5");

    c = new_channel_at("http://127.0.0.1:1", 2, 0, file); /* 2 bodies */
    assert_int_equal(channel_outbox_length(c), 2);
    channel_free(c);
    saved(got, sizeof got);
    assert_string_equal(got, "alarms:2 metrics:5");
    unlink(file);
}

/* ---- the API's answers: a scripted HTTP server ---------------------------- */

static struct {
    int fd, port;
    pthread_t thread;
    volatile int stop;
    int script[8], n_script; /* statuses for POST /node/metrics, in order */
    volatile int posts;      /* POSTs answered */
    long long post_ms[8];    /* when the first ones came */
} srv;

#define ANSWER "{\"error\":\"scripted\"}"

/* One request (headers and Content-Length body), answered and closed. */
static void serve_one(int fd)
{
    char req[8192];
    size_t len = 0;
    char *end = NULL;
    while (len < sizeof req - 1 && !end) {
        ssize_t n = read(fd, req + len, sizeof req - 1 - len);
        if (n <= 0)
            return;
        len += (size_t)n;
        req[len] = '\0';
        end = strstr(req, "\r\n\r\n");
    }
    if (!end)
        return;
    const char *cl = strstr(req, "Content-Length: ");
    size_t want = (size_t)(end + 4 - req) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
    while (len < want && len < sizeof req - 1) {
        ssize_t n = read(fd, req + len, sizeof req - 1 - len);
        if (n <= 0)
            return;
        len += (size_t)n;
    }
    int status = 503; /* the long poll: the API "away" */
    if (!strncmp(req, "POST /node/metrics ", 19)) {
        status = srv.posts < srv.n_script ? srv.script[srv.posts] : 200;
        if (srv.posts < 8)
            srv.post_ms[srv.posts] = now_ms();
        srv.posts++;
    }
    char *ans = str_printf("HTTP/1.1 %d Scripted\r\nContent-Type: application/json\r\n"
                           "%sContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                           status, status == 429 ? "Retry-After: 1\r\n" : "",
                           strlen(ANSWER), ANSWER);
    if (ans && write(fd, ans, strlen(ans)) < 0)
        fprintf(stderr, "test server: write: %s\n", strerror(errno));
    free(ans);
}

static void *serve(void *arg)
{
    (void)arg;
    while (!srv.stop) {
        struct pollfd p = {.fd = srv.fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(srv.fd, NULL, NULL);
        if (fd < 0)
            continue;
        serve_one(fd);
        close(fd);
    }
    return NULL;
}

static void srv_start(const int *script, int n)
{
    memset(&srv, 0, sizeof srv);
    memcpy(srv.script, script, (size_t)n * sizeof *script);
    srv.n_script = n;
    srv.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(srv.fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(srv.fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(srv.fd, 16), 0);
    assert_int_equal(getsockname(srv.fd, (struct sockaddr *)&a, &alen), 0);
    srv.port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&srv.thread, NULL, serve, NULL), 0);
}

static void srv_stop(void)
{
    srv.stop = 1;
    pthread_join(srv.thread, NULL);
    close(srv.fd);
}

/* Post one metrics body to a channel on the scripted server and wait (at
 * most 10 s) until the outbox is empty; the POSTs it took. */
static int send_through(const int *script, int n)
{
    srv_start(script, n);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", srv.port);
    channel_t *c = new_channel_at(url, 10, 0, NULL);
    err_t e = {0};
    assert_int_equal(channel_start(c, &e), 0);
    post(c, "metrics", 1);
    for (int i = 0; i < 200 && channel_outbox_length(c) > 0; i++) {
        struct timespec t = {0, 50 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    size_t left = channel_outbox_length(c);
    channel_free(c);
    srv_stop();
    assert_int_equal(left, 0);
    return srv.posts;
}

/* 401 (the node's secret rotated), 404 (an older API during an upgrade),
 * 408, 429 and 5xx say nothing about the body: it is kept and sent again
 * until the API takes it. */
static void test_answers_about_the_api_keep_the_body(void **state)
{
    (void)state;
    const int script[] = {401, 404, 408, 503, 429};
    assert_int_equal(send_through(script, 5), 6); /* the 6th answered 200 */
    /* The 429's Retry-After (1 s) is honoured, beyond the backoff. */
    assert_true(srv.post_ms[5] - srv.post_ms[4] >= 950);
}

/* 400, 413 and 422 say the body itself is bad: dropped after one try. */
static void test_answers_about_the_body_drop_it(void **state)
{
    (void)state;
    const int codes[] = {400, 413, 422};
    for (int i = 0; i < 3; i++) {
        unsigned long long errors = nodestats_get(NS_CHANNEL_ERRORS);
        assert_int_equal(send_through(&codes[i], 1), 1);
        assert_int_equal(nodestats_get(NS_CHANNEL_ERRORS) - errors, 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bound_drops_oldest_metrics_first),
        cmocka_unit_test(test_only_alarms_left_drops_the_oldest_alarm),
        cmocka_unit_test(test_reloaded_first_and_file_removed),
        cmocka_unit_test(test_not_an_outbox_is_ignored),
        cmocka_unit_test(test_byte_bound_drops_oldest_metrics_first),
        cmocka_unit_test(test_a_body_over_the_byte_bound_is_dropped_alone),
        cmocka_unit_test(test_reload_keeps_the_bounds),
        cmocka_unit_test(test_answers_about_the_api_keep_the_body),
        cmocka_unit_test(test_answers_about_the_body_drop_it),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
