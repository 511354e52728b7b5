/* Unit tests for the node's alarms (src/node/alarms.c) and the request
 * formats and URL rule of their delivery (src/node/deliver.c): the rate
 * limit with its held count, the quota threshold's arm and re-arm, the
 * bodies of Pushover, Pushbullet and Slack, and the slack_webhook host check.
 * The clock, the quota usage, the delivery and the channel are the opts'
 * seams: nothing here sleeps or touches the network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/common/validate.h"
#include "../../src/node/alarms.h"
#include "../../src/node/deliver.h"

#define UID 30001

static long long fake_now;
static uint64_t fake_used, fake_limit;
static char *sent[16];
static size_t n_sent;
static char *posted[16];
static size_t n_posted;

static long long fake_clock(void) { return fake_now; }

static int fake_usage(quota_kind_t k, const char *dir, int uid, uint64_t *used, uint64_t *limit,
                      err_t *e)
{
    (void)k, (void)dir, (void)e;
    assert_int_equal(uid, UID);
    *used = fake_used;
    *limit = fake_limit;
    return 0;
}

static bool sent_pushbullet; /* the last delivery's settings had a pushbullet_token */
static bool sent_pushover;

static void fake_sink(void *ctx, long long uid, const spec_alarms_t *al, const char *text)
{
    (void)ctx;
    sent_pushbullet = al->pushbullet_token != NULL;
    sent_pushover = al->pushover_token != NULL && al->pushover_user != NULL;
    assert_int_equal(uid, UID);
    assert_true(n_sent < 16);
    sent[n_sent++] = strdup(text);
}

static void fake_post(void *ctx, const char *route, char *body)
{
    (void)ctx;
    assert_string_equal(route, "alarms");
    assert_true(n_posted < 16);
    posted[n_posted++] = body;
}

static void reset(void)
{
    for (size_t i = 0; i < n_sent; i++)
        free(sent[i]);
    for (size_t i = 0; i < n_posted; i++)
        free(posted[i]);
    n_sent = n_posted = 0;
    fake_now = 1000000;
    fake_used = 0;
    fake_limit = 100ull << 20;
}

static spec_container_t ctr(long long freq, long long threshold)
{
    return (spec_container_t){.uid = UID,
                              .name = "web",
                              .quota_threshold = threshold,
                              .alarms = {.freq = freq, .jid = "a@b"}};
}

static alarms_t *make(spec_container_t *c, int quota_every)
{
    alarms_opts_t o = {.quota = QUOTA_LOOP,
                       .containers_dir = "/nonexistent",
                       .quota_check_interval = quota_every,
                       .clock = fake_clock,
                       .usage = fake_usage,
                       .sink = fake_sink,
                       .post = fake_post};
    err_t e = {0};
    alarms_t *a = alarms_new(&o, NULL, &e);
    assert_non_null(a);
    spec_state_t st = {.containers = c, .n_containers = 1};
    alarms_set_state(a, &st);
    return a;
}

/* The posted body's one alarm: its ref, class and msg. */
static void posted_alarm(size_t i, const char *cls, const char *msg_part, char *ref, size_t size)
{
    json_t *j = json_loads(posted[i], 0, NULL);
    assert_non_null(j);
    json_t *al = json_array_get(json_object_get(j, "alarms"), 0);
    assert_int_equal(json_integer_value(json_object_get(al, "uid")), UID);
    assert_true(json_integer_value(json_object_get(al, "unix")) > 0);
    assert_string_equal(json_string_value(json_object_get(al, "class")), cls);
    assert_non_null(strstr(json_string_value(json_object_get(al, "msg")), msg_part));
    snprintf(ref, size, "%s", json_string_value(json_object_get(al, "ref")));
    json_decref(j);
}

static void test_rate_limit_and_held_count(void **state)
{
    (void)state;
    reset();
    spec_container_t c = ctr(60, 0);
    alarms_t *a = make(&c, 0);

    alarms_raise(a, UID, "oom", "first");
    assert_int_equal(n_sent, 1);
    assert_string_equal(sent[0], "[imperium] web (30001): first");
    assert_int_equal(alarms_next_deadline(a), -1); /* nothing held, no quota check */

    fake_now += 1000;
    alarms_raise(a, UID, "oom", "second");
    fake_now += 1000;
    alarms_raise(a, UID, "crashloop", "third");
    assert_int_equal(n_sent, 1); /* held: within alarm_freq */
    assert_int_equal(n_posted, 3); /* but every one goes to the API */
    assert_int_equal(alarms_next_deadline(a), 1000000 + 60000);

    fake_now = 1000000 + 59999;
    alarms_tick(a);
    assert_int_equal(n_sent, 1);
    fake_now = 1000000 + 60000;
    alarms_tick(a);
    assert_int_equal(n_sent, 2);
    assert_non_null(strstr(sent[1], "[imperium] web (30001): third (1 more alarm since "));
    assert_int_equal(alarms_next_deadline(a), -1);

    /* One held alone is said as it is. */
    fake_now += 5000;
    alarms_raise(a, UID, "oom", "fourth");
    assert_int_equal(n_sent, 2);
    fake_now += 55000;
    alarms_tick(a);
    assert_int_equal(n_sent, 3);
    assert_string_equal(sent[2], "[imperium] web (30001): fourth");

    /* Refs are unique. */
    char r0[64], r1[64], r2[64];
    posted_alarm(0, "oom", "first", r0, sizeof r0);
    posted_alarm(1, "oom", "second", r1, sizeof r1);
    posted_alarm(2, "crashloop", "third", r2, sizeof r2);
    assert_string_not_equal(r0, r1);
    assert_string_not_equal(r1, r2);
    alarms_free(a);
    reset();
}

static void test_default_freq_and_unknown_container(void **state)
{
    (void)state;
    reset();
    spec_container_t c = ctr(0, 0);
    alarms_t *a = make(&c, 0);
    alarms_raise(a, UID, "oom", "one");
    fake_now += 59999;
    alarms_raise(a, UID, "oom", "two");
    assert_int_equal(n_sent, 1);
    assert_int_equal(alarms_next_deadline(a), 1000000 + 60000);
    /* A container not in the state: stored, not delivered. */
    alarms_raise(a, UID + 1, "oom", "elsewhere");
    assert_int_equal(n_posted, 3);
    assert_int_equal(n_sent, 1);
    alarms_free(a);
    reset();
}

/* alarm_freq outside the API's bounds (an older API's state) is clamped:
 * a huge one keeps the rate limit (a week) and its deadline in the future
 * (freq * 1000 overflowed: the limit vanished or the deadline went
 * negative and the main loop spun); a small one is the minimum. */
static void test_freq_is_clamped(void **state)
{
    (void)state;
    long long huge[] = {LLONG_MAX, LLONG_MAX / 1000 + 1, 9223372036854776LL, ALARM_FREQ_MAX + 1};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        reset();
        spec_container_t c = ctr(huge[i], 0);
        alarms_t *a = make(&c, 0);
        alarms_raise(a, UID, "oom", "one");
        fake_now += 1000;
        alarms_raise(a, UID, "oom", "two");
        assert_int_equal(n_sent, 1); /* held */
        assert_int_equal(alarms_next_deadline(a), 1000000 + ALARM_FREQ_MAX * 1000LL);
        fake_now = 1000000 + ALARM_FREQ_MAX * 1000LL;
        alarms_tick(a);
        assert_int_equal(n_sent, 2);
        alarms_free(a);
    }
    reset();
    spec_container_t c = ctr(5, 0);
    alarms_t *a = make(&c, 0);
    alarms_raise(a, UID, "oom", "one");
    fake_now += 5000;
    alarms_raise(a, UID, "oom", "two");
    assert_int_equal(n_sent, 1);
    assert_int_equal(alarms_next_deadline(a), 1000000 + ALARM_FREQ_MIN * 1000LL);
    alarms_free(a);
    reset();
}

/* A service key outside [A-Za-z0-9._-] in the state (an older API's) is
 * dropped: its channel is not used (a CR LF would inject a header). */
static void test_bad_keys_are_dropped(void **state)
{
    (void)state;
    reset();
    char bad_pb[] = "tok\r\nX-Injected: 1";
    spec_container_t c = ctr(0, 0);
    c.alarms.pushbullet_token = bad_pb;
    c.alarms.pushover_user = "u1";
    c.alarms.pushover_token = "t1";
    alarms_t *a = make(&c, 0);
    alarms_raise(a, UID, "oom", "one");
    assert_int_equal(n_sent, 1);
    assert_false(sent_pushbullet);
    assert_true(sent_pushover);
    /* A good one in a later state is used. */
    c.alarms.pushbullet_token = "o.good-token_1";
    spec_state_t st = {.containers = &c, .n_containers = 1};
    alarms_set_state(a, &st);
    fake_now += 60000;
    alarms_raise(a, UID, "oom", "two");
    assert_int_equal(n_sent, 2);
    assert_true(sent_pushbullet);
    alarms_free(a);
    reset();
}

/* The msg of a posted alarm. */
static const char *posted_msg(size_t i, json_t **j)
{
    assert_true(strlen(posted[i]) <= REPORT_MAX_BODY); /* the API takes it (not 413) */
    *j = json_loads(posted[i], 0, NULL);
    assert_non_null(*j);
    json_t *list = json_object_get(*j, "alarms");
    assert_int_equal(json_array_size(list), 1);
    return json_string_value(json_object_get(json_array_get(list, 0), "msg"));
}

/* A huge text (its every byte 6 as JSON) is cut so that its body fits the
 * API's, never inside a UTF-8 character (the API wants valid UTF-8). */
static void test_huge_msg_is_cut(void **state)
{
    (void)state;
    reset();
    spec_container_t c = ctr(0, 0);
    alarms_t *a = make(&c, 0);
    size_t big = 100000;
    char *msg = malloc(big + 1);
    assert_non_null(msg);
    memset(msg, '\x01', big);
    msg[big] = '\0';
    alarms_raise(a, UID, "crashloop", msg);
    memset(msg, 'x', big);
    memcpy(msg + 4095, "\xc3\xa9", 2); /* an e-acute across the 4096th byte */
    alarms_raise(a, UID, "crashloop", msg);
    free(msg);
    assert_int_equal(n_posted, 2);
    json_t *j;
    assert_int_equal(strlen(posted_msg(0, &j)), 4096);
    json_decref(j);
    const char *m = posted_msg(1, &j);
    assert_int_equal(strlen(m), 4095);
    assert_int_equal(strspn(m, "x"), 4095);
    json_decref(j);
    alarms_free(a);
    reset();
}

static void test_quota_threshold_arm_and_rearm(void **state)
{
    (void)state;
    reset();
    spec_container_t c = ctr(1, 90);
    alarms_t *a = make(&c, 5);

    fake_used = 50ull << 20;
    alarms_tick(a);
    assert_int_equal(n_posted, 0);
    assert_int_equal(alarms_next_deadline(a), fake_now + 5000);

    fake_now += 5000;
    fake_used = 95ull << 20;
    alarms_tick(a);
    assert_int_equal(n_posted, 1);
    char ref[64];
    posted_alarm(0, "quota", "95 MB used of 100 MB", ref, sizeof ref);
    assert_int_equal(n_sent, 1);

    /* Still over: not again. */
    fake_now += 5000;
    alarms_tick(a);
    fake_now += 2000; /* before the next check: nothing checked */
    fake_used = 10ull << 20;
    alarms_tick(a);
    assert_int_equal(n_posted, 1);

    /* Back below, then over again: one more. */
    fake_now += 3000;
    alarms_tick(a);
    fake_now += 5000;
    fake_used = 99ull << 20;
    alarms_tick(a);
    assert_int_equal(n_posted, 2);
    assert_int_equal(n_sent, 1); /* held: alarm_freq 1 is 60 s on the node too */

    /* No threshold: no check. */
    alarms_free(a);
    reset();
    spec_container_t none = ctr(1, 0);
    a = make(&none, 5);
    fake_used = fake_limit;
    alarms_tick(a);
    assert_int_equal(n_posted, 0);
    alarms_free(a);
    reset();
}

static void test_api_seq_starts_from_the_state(void **state)
{
    (void)state;
    reset();
    char dir[] = "/tmp/test_alarms_XXXXXX";
    assert_non_null(mkdtemp(dir));
    spec_container_t c = ctr(1, 0);
    alarms_opts_t o = {.state_dir = dir, .clock = fake_clock, .sink = fake_sink,
                       .post = fake_post};
    err_t e = {0};
    alarms_t *a = alarms_new(&o, NULL, &e);
    assert_non_null(a);
    spec_state_t st = {.containers = &c, .n_containers = 1, .server = {.alarm_seq = 7}};
    alarms_set_state(a, &st);
    char path[256], line[32] = "";
    snprintf(path, sizeof path, "%s/alarm_seq", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "7\n"); /* history is never delivered */
    assert_int_equal(alarms_next_deadline(a), -1);
    alarms_free(a);
    unlink(path);
    rmdir(dir);
    reset();
}

static void test_pushover_body(void **state)
{
    (void)state;
    char *b = deliver_pushover_body("TOK", "USR", "siren", "imperium alarm", "a b&c=d");
    assert_string_equal(b, "token=TOK&user=USR&message=a%20b%26c%3Dd&title=imperium%20alarm"
                           "&sound=siren");
    free(b);
    b = deliver_pushover_body("TOK", "USR", NULL, "t", "m");
    assert_string_equal(b, "token=TOK&user=USR&message=m&title=t");
    free(b);
}

static void test_pushbullet_and_slack_bodies(void **state)
{
    (void)state;
    char *b = deliver_pushbullet_body("imperium alarm", "say \"hi\"");
    json_t *j = json_loads(b, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "note");
    assert_string_equal(json_string_value(json_object_get(j, "title")), "imperium alarm");
    assert_string_equal(json_string_value(json_object_get(j, "body")), "say \"hi\"");
    assert_int_equal(json_object_size(j), 3);
    json_decref(j);
    free(b);
    b = deliver_slack_body("[imperium] web (30001): x");
    assert_string_equal(b, "{\"text\":\"[imperium] web (30001): x\"}");
    free(b);
}

static void test_slack_host_check(void **state)
{
    (void)state;
    err_t e = {0};
    const char *hosts = "hooks.slack.com";
    assert_int_equal(deliver_slack_url_ok("https://hooks.slack.com/services/T/B/X", hosts,
                                          false, &e),
                     0);
    assert_int_equal(deliver_slack_url_ok("https://HOOKS.slack.com:443/x", hosts, false, &e), 0);
    assert_int_equal(deliver_slack_url_ok("http://hooks.slack.com/x", hosts, false, &e), -1);
    assert_non_null(strstr(e.msg, "https://"));
    assert_int_equal(deliver_slack_url_ok("http://hooks.slack.com/x", hosts, true, &e), 0);
    assert_int_equal(deliver_slack_url_ok("https://169.254.169.254/latest", hosts, false, &e),
                     -1);
    assert_non_null(strstr(e.msg, "not in slack_hosts"));
    assert_int_equal(deliver_slack_url_ok("https://hooks.slack.com.evil.test/x", hosts, false,
                                          &e),
                     -1);
    assert_int_equal(deliver_slack_url_ok("https://hooks.slack.com@evil.test/x", hosts, false,
                                          &e),
                     -1);
    assert_int_equal(deliver_slack_url_ok("ftp://hooks.slack.com/x", hosts, true, &e), -1);
    assert_int_equal(deliver_slack_url_ok("https:///x", hosts, false, &e), -1);
    assert_int_equal(deliver_slack_url_ok("http://127.0.0.1:9/s", "a.test, 127.0.0.1", true, &e),
                     0);
    assert_int_equal(deliver_slack_url_ok("https://hooks.slack.com/x", "", false, &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_limit_and_held_count),
        cmocka_unit_test(test_default_freq_and_unknown_container),
        cmocka_unit_test(test_freq_is_clamped),
        cmocka_unit_test(test_bad_keys_are_dropped),
        cmocka_unit_test(test_huge_msg_is_cut),
        cmocka_unit_test(test_quota_threshold_arm_and_rearm),
        cmocka_unit_test(test_api_seq_starts_from_the_state),
        cmocka_unit_test(test_pushover_body),
        cmocka_unit_test(test_pushbullet_and_slack_bodies),
        cmocka_unit_test(test_slack_host_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
