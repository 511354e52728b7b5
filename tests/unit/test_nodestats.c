/* Unit tests for the node's own health metrics (src/node/nodestats.c): the
 * Prometheus text (every family has HELP and TYPE before its samples,
 * counters end in _total, every sample line parses, the numbers are the
 * counters'), the metrics_listen rules (the setting's row refuses a bad
 * value with a sentence), and the server itself on a free loopback port:
 * GET /metrics answers the text with the 0.0.4 content type, another path
 * 404, another method 405, a taken port is an error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/common/strutil.h"
#include "../../src/node/agent.h"
#include "../../src/node/nodestats.h"

/* The value of the sample line that starts with `series` + ' ', or -1. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (!strncmp(l, series, n) && l[n] == ' ')
            return strtod(l + n + 1, NULL);
    return -1;
}

static void test_render_shape(void **state)
{
    (void)state;
    char *text = nodestats_render();
    assert_non_null(text);
    assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
    regex_t line, help, type;
    assert_int_equal(regcomp(&line,
                             "^(imperium_node_[a-z_]+)(\\{[a-z]+=\"[a-z]+\"(,[a-z]+=\"[a-z]+\")*\\})? "
                             "[0-9]+(\\.[0-9]+)?$",
                             REG_EXTENDED),
                     0);
    assert_int_equal(regcomp(&help, "^# HELP (imperium_node_[a-z_]+) [A-Z].*\\.$", REG_EXTENDED),
                     0);
    assert_int_equal(regcomp(&type, "^# TYPE (imperium_node_[a-z_]+) (counter|gauge)$",
                             REG_EXTENDED),
                     0);
    char *copy = strdup(text), *save = NULL, family[128] = "", kind[16] = "";
    int samples = 0, families = 0;
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        regmatch_t m[3];
        if (!regexec(&help, l, 2, m, 0)) {
            snprintf(family, sizeof family, "%.*s", (int)(m[1].rm_eo - m[1].rm_so), l + m[1].rm_so);
            kind[0] = '\0';
            families++;
        } else if (!regexec(&type, l, 3, m, 0)) {
            /* TYPE names the family HELP just named. */
            assert_int_equal(strncmp(l + m[1].rm_so, family, strlen(family)), 0);
            snprintf(kind, sizeof kind, "%.*s", (int)(m[2].rm_eo - m[2].rm_so), l + m[2].rm_so);
            if (!strcmp(kind, "counter"))
                assert_non_null(strstr(family, "_total"));
        } else {
            if (regexec(&line, l, 2, m, 0))
                fail_msg("not a Prometheus sample line: '%s'", l);
            /* A sample of the family announced above it, after its TYPE. */
            assert_string_not_equal(kind, "");
            assert_int_equal((int)(m[1].rm_eo - m[1].rm_so), (int)strlen(family));
            assert_int_equal(strncmp(l, family, strlen(family)), 0);
            samples++;
        }
    }
    assert_true(families >= 10);
    assert_true(samples >= families);
    regfree(&line);
    regfree(&help);
    regfree(&type);
    free(copy);
    free(text);
}

static void test_counters_and_gauges(void **state)
{
    (void)state;
    char *before = nodestats_render();
    assert_non_null(before);
    double starts = sample(before, "imperium_node_container_starts_total");
    double sent = sample(before, "imperium_node_alarm_deliveries_total{channel=\"xmpp\",result=\"sent\"}");
    double failed =
        sample(before, "imperium_node_alarm_deliveries_total{channel=\"slack\",result=\"failed\"}");
    assert_true(starts >= 0 && sent >= 0 && failed >= 0);
    free(before);

    nodestats_add(NS_STARTS, 3);
    nodestats_set(NS_CONTAINERS_RUNNING, 7);
    nodestats_set(NS_CONTAINERS_RUNNING, 5); /* a gauge is set, not added */
    nodestats_set(NS_CONTAINERS_FAILED, 2);
    nodestats_set(NS_OUTBOX_LENGTH, 11);
    nodestats_delivery(DC_XMPP, 1);
    nodestats_delivery(DC_XMPP, 1);
    nodestats_delivery(DC_SLACK, 0);
    nodestats_add(NS_SAMPLE_USEC, 1500001);
    nodestats_add(NS__COUNT, 1); /* out of range: ignored, not a crash */
    nodestats_delivery(DC__COUNT, 1);
    assert_int_equal(nodestats_get(NS__COUNT), 0);

    char *text = nodestats_render();
    assert_non_null(text);
    assert_true(sample(text, "imperium_node_container_starts_total") == starts + 3);
    assert_true(sample(text, "imperium_node_containers{state=\"running\"}") == 5);
    assert_true(sample(text, "imperium_node_containers{state=\"failed\"}") == 2);
    assert_true(sample(text, "imperium_node_containers{state=\"starting\"}") == 0);
    assert_true(sample(text, "imperium_node_outbox_length") == 11);
    assert_true(sample(text, "imperium_node_alarm_deliveries_total{channel=\"xmpp\",result=\"sent\"}") ==
                sent + 2);
    assert_true(sample(text,
                       "imperium_node_alarm_deliveries_total{channel=\"slack\",result=\"failed\"}") ==
                failed + 1);
    /* Microseconds rendered as seconds, not rounded away. */
    assert_non_null(strstr(text, "imperium_node_sample_seconds_total 1.500001\n"));
    free(text);
}

static void test_listen_rules(void **state)
{
    (void)state;
    err_t e;
    err_clear(&e);
    assert_int_equal(nodestats_check_listen("metrics_listen", "127.0.0.1:9101", &e), 0);
    assert_int_equal(nodestats_check_listen("metrics_listen", "0.0.0.0:65535", &e), 0);
    const char *bad[] = {"127.0.0.1",  "127.0.0.1:0",    "127.0.0.1:65536", "localhost:9101",
                         ":9101",      "127.0.0.1:91x",  "[::1]:9101",      "1.2.3:9101",
                         "127.0.0.1:", "127.0.0.1:-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        if (nodestats_check_listen("metrics_listen", bad[i], &e) != -1)
            fail_msg("'%s' accepted", bad[i]);
        assert_non_null(strstr(e.msg, "metrics_listen"));
    }
    /* The setting's row: empty is off, a bad value a sentence naming it. */
    agent_cfg_t c;
    memset(&c, 0, sizeof c);
    assert_int_equal(settings_defaults(agent_settings, &c, &e), 0);
    assert_string_equal(c.metrics_listen, "");
    assert_int_equal(c.node.emperor_log_maxsize, 104857600);
    assert_int_equal(settings_set(agent_settings, &c, "metrics_listen", "127.0.0.1:9101", &e), 0);
    err_clear(&e);
    assert_int_equal(settings_set(agent_settings, &c, "metrics_listen", "localhost:80", &e), -1);
    assert_non_null(strstr(e.msg, "metrics_listen"));
    assert_non_null(strstr(e.msg, "IPv4"));
    assert_int_equal(settings_set(agent_settings, &c, "emperor_log_maxsize", "2048", &e), 0);
    assert_int_equal(c.node.emperor_log_maxsize, 2048);
    err_clear(&e);
    assert_int_equal(settings_set(agent_settings, &c, "emperor_log_maxsize", "10", &e), -1);
    assert_non_null(strstr(e.msg, "emperor_log_maxsize"));
}

/* A loopback port nobody listens on (bound, read, closed). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* One HTTP/1.0 request; the whole answer, malloc'd. */
static char *http(int port, const char *method, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: x\r\n\r\n", method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    ssize_t r;
    while (out && len < cap - 1 && (r = read(fd, out + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    close(fd);
    assert_non_null(out);
    return out;
}

static void test_server(void **state)
{
    (void)state;
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", free_port());
    int port = atoi(strchr(listen, ':') + 1);
    err_t e;
    err_clear(&e);
    nodestats_server_t *s = nodestats_serve(listen, &e);
    if (!s)
        fail_msg("serve %s: %s", listen, e.msg);

    char *ok = http(port, "GET", "/metrics");
    assert_true(str_starts_with(ok, "HTTP/1.0 200") || str_starts_with(ok, "HTTP/1.1 200"));
    assert_non_null(strstr(ok, "text/plain; version=0.0.4; charset=utf-8"));
    assert_non_null(strstr(ok, "\r\n\r\n# HELP imperium_node_"));
    assert_non_null(strstr(ok, "imperium_node_containers{state=\"running\"}"));
    free(ok);
    char *missing = http(port, "GET", "/metricsx");
    assert_non_null(strstr(missing, " 404 "));
    free(missing);
    char *post = http(port, "POST", "/metrics");
    assert_non_null(strstr(post, " 405 "));
    free(post);

    /* The same port twice: the second one says so. */
    err_clear(&e);
    assert_null(nodestats_serve(listen, &e));
    assert_non_null(strstr(e.msg, "cannot listen on"));
    assert_non_null(strstr(e.msg, listen));
    nodestats_serve_stop(s);
    nodestats_serve_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_shape),
        cmocka_unit_test(test_counters_and_gauges),
        cmocka_unit_test(test_listen_rules),
        cmocka_unit_test(test_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
