/* Unit tests for src/node/clustercrypt.c: the envelopes legion members
 * send each other.  A round trip, then every way an envelope must be
 * refused: another legion's key, one byte changed anywhere, out of its
 * time window, replayed, too large, cut short or garbage; an empty legion
 * key is never a key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/node/clustercrypt.h"

#define NOW 1800000000LL
#define LEGION "milan"
#define SENDER "203.0.113.3"

static const char secret[] = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n";

static cluster_key_t key_of(const char *legion_key)
{
    cluster_key_t k;
    err_t e = {0};
    if (cluster_key_derive(legion_key, &k, &e) < 0)
        fail_msg("%s", e.msg);
    return k;
}

/* An envelope of `payload` sealed with `legion_key` at `when`. */
static size_t seal(const char *legion_key, long long when, const void *payload, size_t len,
                   unsigned char *out)
{
    cluster_key_t k = key_of(legion_key);
    err_t e = {0};
    ssize_t n = cluster_seal(&k, CLUSTER_CERT, LEGION, SENDER, when, payload, len, out,
                             CLUSTER_MAX_ENVELOPE, &e);
    if (n < 0)
        fail_msg("%s", e.msg);
    return (size_t)n;
}

/* Peek then open env with `legion_key` at `now`: the payload's length or
 * -1, e.msg saying why. */
static ssize_t open_with(const char *legion_key, cluster_replay_t *r, long long now,
                         const unsigned char *env, size_t len, unsigned char *out, err_t *e)
{
    cluster_key_t k = key_of(legion_key);
    cluster_header_t h;
    if (cluster_peek(env, len, &h, e) < 0)
        return -1;
    return cluster_open(&k, &h, r, now, env, len, out, CLUSTER_MAX_PAYLOAD, e);
}

static void refused(ssize_t n, const err_t *e, const char *want)
{
    assert_int_equal(n, -1);
    if (!strstr(e->msg, want))
        fail_msg("got \"%s\", want \"%s\"", e->msg, want);
}

static unsigned char env[CLUSTER_MAX_ENVELOPE], out[CLUSTER_MAX_PAYLOAD];

static void test_round_trip_and_the_header(void **state)
{
    (void)state;
    size_t n = seal("s3cret", NOW, secret, sizeof secret, env);
    cluster_header_t h;
    err_t e = {0};
    assert_int_equal(cluster_peek(env, n, &h, &e), 0);
    assert_int_equal(h.type, CLUSTER_CERT);
    assert_true(h.unix_time == NOW);
    assert_string_equal(h.legion, LEGION);
    assert_string_equal(h.sender, SENDER);
    /* The payload is nowhere in clear. */
    assert_null(memmem(env, n, "PRIVATE KEY", 11));
    assert_null(memmem(env, n, "MIIEvQIBADAN", 12));
    cluster_replay_t *r = cluster_replay_new();
    assert_non_null(r);
    ssize_t got = open_with("s3cret", r, NOW + 3, env, n, out, &e);
    if (got < 0)
        fail_msg("%s", e.msg);
    assert_int_equal(got, sizeof secret);
    assert_memory_equal(out, secret, sizeof secret);
    /* Two seals of one payload differ (a random nonce each). */
    static unsigned char again[CLUSTER_MAX_ENVELOPE];
    size_t n2 = seal("s3cret", NOW, secret, sizeof secret, again);
    assert_int_equal(n2, n);
    assert_memory_not_equal(again, env, n);
    /* An empty payload travels too (a NEED may be small). */
    n = seal("s3cret", NOW, NULL, 0, env);
    assert_int_equal(open_with("s3cret", r, NOW, env, n, out, &e), 0);
    cluster_replay_free(r);
}

static void test_another_legions_key_cannot_open(void **state)
{
    (void)state;
    size_t n = seal("s3cret", NOW, secret, sizeof secret, env);
    cluster_replay_t *r = cluster_replay_new();
    err_t e = {0};
    refused(open_with("s3cret!", r, NOW, env, n, out, &e), &e, "forged or not of legion milan");
    /* Nor did the failed attempt use up the nonce: the right key opens it. */
    assert_int_equal(open_with("s3cret", r, NOW, env, n, out, &e), sizeof secret);
    cluster_replay_free(r);
}

/* Flip each byte of the envelope in turn (header and box): every one is
 * refused, at peek (the magic, a length) or at open. */
static void test_one_changed_byte_anywhere_is_refused(void **state)
{
    (void)state;
    size_t n = seal("s3cret", NOW, secret, sizeof secret, env);
    cluster_replay_t *r = cluster_replay_new();
    for (size_t i = 0; i < n; i++) {
        static unsigned char bad[CLUSTER_MAX_ENVELOPE];
        memcpy(bad, env, n);
        bad[i] ^= 0x01;
        err_t e = {0};
        ssize_t got = open_with("s3cret", r, NOW, bad, n, out, &e);
        if (got >= 0)
            fail_msg("byte %zu changed, the envelope still opened", i);
    }
    cluster_replay_free(r);
}

static void test_stale_and_future_envelopes_are_refused(void **state)
{
    (void)state;
    cluster_replay_t *r = cluster_replay_new();
    err_t e = {0};
    size_t n = seal("s3cret", NOW - CLUSTER_MAX_SKEW - 1, secret, sizeof secret, env);
    refused(open_with("s3cret", r, NOW, env, n, out, &e), &e, "stale envelope");
    n = seal("s3cret", NOW + CLUSTER_MAX_SKEW + 1, secret, sizeof secret, env);
    refused(open_with("s3cret", r, NOW, env, n, out, &e), &e, "in the future, from 203.0.113.3");
    /* At the edges of the window it is accepted. */
    n = seal("s3cret", NOW - CLUSTER_MAX_SKEW, secret, sizeof secret, env);
    assert_int_equal(open_with("s3cret", r, NOW, env, n, out, &e), sizeof secret);
    n = seal("s3cret", NOW + CLUSTER_MAX_SKEW, secret, sizeof secret, env);
    assert_int_equal(open_with("s3cret", r, NOW, env, n, out, &e), sizeof secret);
    cluster_replay_free(r);
}

static void test_a_replayed_envelope_is_refused(void **state)
{
    (void)state;
    cluster_replay_t *r = cluster_replay_new();
    err_t e = {0};
    size_t n = seal("s3cret", NOW, secret, sizeof secret, env);
    assert_int_equal(open_with("s3cret", r, NOW, env, n, out, &e), sizeof secret);
    memset(out, 0x55, sizeof secret);
    refused(open_with("s3cret", r, NOW + 1, env, n, out, &e), &e, "replayed envelope");
    /* The refused payload was wiped from the caller's buffer. */
    for (size_t i = 0; i < sizeof secret; i++)
        assert_int_equal(out[i], 0);
    refused(open_with("s3cret", r, NOW + CLUSTER_MAX_SKEW, env, n, out, &e), &e, "replayed");
    /* Past the window the time check refuses it anyway. */
    refused(open_with("s3cret", r, NOW + CLUSTER_REPLAY_S, env, n, out, &e), &e, "stale");
    cluster_replay_free(r);
}

/* The cache is bounded: full of young nonces it refuses, never forgets
 * one early; once they age out it accepts again. */
static void test_the_replay_cache_is_bounded(void **state)
{
    (void)state;
    cluster_replay_t *r = cluster_replay_new();
    err_t e = {0};
    size_t i = 0;
    for (;; i++) {
        size_t n = seal("k", NOW, "x", 1, env);
        ssize_t got = open_with("k", r, NOW, env, n, out, &e);
        if (got < 0) {
            refused(got, &e, "replay cache is full");
            break;
        }
        if (i > 100000)
            fail_msg("the replay cache never fills");
    }
    assert_int_equal(i, 32768);
    /* The nonces age on CLOCK_MONOTONIC: a wall clock stepped forward
     * (the `now` passed) does not empty the cache. */
    size_t n = seal("k", NOW + CLUSTER_REPLAY_S, "x", 1, env);
    refused(open_with("k", r, NOW + CLUSTER_REPLAY_S, env, n, out, &e), &e,
            "replay cache is full");
    cluster_replay_free(r);
}

/* Opened first at the window's early edge (dated 30 s ahead of this
 * node's clock) and replayed at its late edge, 60 s of wall clock later:
 * a cache aging on the wall clock passed in had forgotten it. */
static void test_a_replay_across_the_whole_window_is_refused(void **state)
{
    (void)state;
    cluster_replay_t *r = cluster_replay_new();
    err_t e = {0};
    size_t n = seal("s3cret", NOW, secret, sizeof secret, env);
    assert_int_equal(open_with("s3cret", r, NOW - CLUSTER_MAX_SKEW, env, n, out, &e),
                     sizeof secret);
    refused(open_with("s3cret", r, NOW + CLUSTER_MAX_SKEW, env, n, out, &e), &e, "replayed");
    cluster_replay_free(r);
}

/* A header's time is any 64-bit number before authentication: the
 * extremes are refused as out of the window (no overflow, which UBSan
 * would abort on) and never printed. */
static void test_extreme_times_are_refused_without_overflow(void **state)
{
    (void)state;
    cluster_replay_t *r = cluster_replay_new();
    err_t e = {0};
    const long long odd[] = {LLONG_MIN, LLONG_MIN + 1, LLONG_MAX, -1, 0};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        size_t n = seal("s3cret", odd[i], secret, sizeof secret, env);
        refused(open_with("s3cret", r, NOW, env, n, out, &e), &e, "stale envelope");
        assert_null(strstr(e.msg, "922337"));
    }
    /* And a node whose own clock is at an extreme does not overflow either. */
    size_t n = seal("s3cret", LLONG_MAX, secret, sizeof secret, env);
    assert_int_equal(open_with("s3cret", r, LLONG_MAX, env, n, out, &e), sizeof secret);
    n = seal("s3cret", NOW, secret, sizeof secret, env);
    refused(open_with("s3cret", r, LLONG_MIN, env, n, out, &e), &e, "stale envelope");
    cluster_replay_free(r);
}

/* Names are read (and logged) before authentication: only
 * [A-Za-z0-9.:_-] is taken, at peek and at seal. */
static void test_names_of_other_bytes_are_refused(void **state)
{
    (void)state;
    cluster_key_t k = key_of("s3cret");
    err_t e = {0};
    const char *bad[] = {"a b", "a\nforged log line", "caf\xc3\xa9", "a/b", "a%n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        refused(cluster_seal(&k, CLUSTER_SUB, bad[i], SENDER, NOW, "abc", 3, env, sizeof env, &e),
                &e, "[A-Za-z0-9.:_-]");
        refused(cluster_seal(&k, CLUSTER_SUB, LEGION, bad[i], NOW, "abc", 3, env, sizeof env, &e),
                &e, "[A-Za-z0-9.:_-]");
    }
    /* An address with a port, IPv6 and a legion name of every allowed kind. */
    assert_true(cluster_seal(&k, CLUSTER_SUB, "Milan_2.eu-west", "2001:db8::1", NOW, "abc", 3,
                             env, sizeof env, &e) > 0);
    /* A received header with a byte outside the set: not an envelope. */
    size_t n = seal("s3cret", NOW, "x", 1, env);
    cluster_header_t h;
    assert_int_equal(cluster_peek(env, n, &h, &e), 0);
    env[5 + 1 + 8 + 24 + 1 + 6 + 1 + 3] = '\n'; /* inside "203.0.113.3" */
    refused(cluster_peek(env, n, &h, &e), &e, "not a legion envelope");
}

static void test_too_large_payloads_and_bad_names(void **state)
{
    (void)state;
    cluster_key_t k = key_of("s3cret");
    err_t e = {0};
    static unsigned char big[CLUSTER_MAX_PAYLOAD + 1];
    refused(cluster_seal(&k, CLUSTER_CERT, LEGION, SENDER, NOW, big, sizeof big, env,
                         CLUSTER_MAX_ENVELOPE, &e),
            &e, "do not fit in one envelope");
    /* The largest payload with the longest names fits CLUSTER_MAX_ENVELOPE. */
    char name[256];
    memset(name, 'n', 255);
    name[255] = '\0';
    ssize_t n = cluster_seal(&k, CLUSTER_CERT, name, name, NOW, big, CLUSTER_MAX_PAYLOAD, env,
                             CLUSTER_MAX_ENVELOPE, &e);
    assert_true(n > 0 && n <= CLUSTER_MAX_ENVELOPE);
    cluster_replay_t *r = cluster_replay_new();
    cluster_header_t h;
    assert_int_equal(cluster_peek(env, (size_t)n, &h, &e), 0);
    assert_int_equal(cluster_open(&k, &h, r, NOW, env, (size_t)n, out, sizeof out, &e),
                     CLUSTER_MAX_PAYLOAD);
    cluster_replay_free(r);
    /* A buffer too small is said, not overrun. */
    refused(cluster_seal(&k, CLUSTER_SUB, LEGION, SENDER, NOW, "abc", 3, env, 40, &e), &e,
            "does not fit");
    refused(cluster_seal(&k, CLUSTER_SUB, "", SENDER, NOW, "abc", 3, env, sizeof env, &e), &e,
            "1 to 255 bytes");
    char longer[300];
    memset(longer, 's', 299);
    longer[299] = '\0';
    refused(cluster_seal(&k, CLUSTER_SUB, LEGION, longer, NOW, "abc", 3, env, sizeof env, &e), &e,
            "1 to 255 bytes");
}

static void test_truncated_and_garbage_input_is_refused(void **state)
{
    (void)state;
    size_t n = seal("s3cret", NOW, secret, sizeof secret, env);
    cluster_replay_t *r = cluster_replay_new();
    err_t e = {0};
    /* Every shorter prefix: refused at peek or open. */
    for (size_t len = 0; len < n; len++)
        if (open_with("s3cret", r, NOW, env, len, out, &e) >= 0)
            fail_msg("a %zu-byte prefix of a %zu-byte envelope opened", len, n);
    /* A byte more. */
    env[n] = 0;
    refused(open_with("s3cret", r, NOW, env, n + 1, out, &e), &e, "forged");
    /* Garbage, and a legion name with a NUL in it. */
    cluster_header_t h;
    refused(cluster_peek((const unsigned char *)"hello world", 11, &h, &e), &e,
            "not a legion envelope");
    static unsigned char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(i * 7 + 3);
    refused(cluster_peek(junk, sizeof junk, &h, &e), &e, "not a legion envelope");
    memcpy(junk, env, n);
    junk[5 + 1 + 8 + 24 + 1 + 2] = '\0'; /* inside "milan" */
    refused(cluster_peek(junk, n, &h, &e), &e, "not a legion envelope");
    /* A header that is not the envelope's is the caller's mistake. */
    assert_int_equal(cluster_peek(env, n, &h, &e), 0);
    h.unix_time++;
    cluster_key_t k = key_of("s3cret");
    refused(cluster_open(&k, &h, r, NOW, env, n, out, sizeof out, &e), &e, "not this envelope's");
    /* An out buffer too small for the payload. */
    assert_int_equal(cluster_peek(env, n, &h, &e), 0);
    refused(cluster_open(&k, &h, r, NOW, env, n, out, 4, &e), &e, "does not fit");
    cluster_replay_free(r);
}

static void test_an_empty_legion_key_is_refused(void **state)
{
    (void)state;
    cluster_key_t k;
    err_t e = {0};
    refused(cluster_key_derive("", &k, &e), &e, "no key");
    refused(cluster_key_derive(NULL, &k, &e), &e, "no key");
    /* Keys of any length >= 1 derive, each its own. */
    cluster_key_t a = key_of("a"), b = key_of("b");
    char longkey[200];
    memset(longkey, 'z', 199);
    longkey[199] = '\0';
    cluster_key_t c = key_of(longkey);
    assert_memory_not_equal(a.k, b.k, 32);
    assert_memory_not_equal(a.k, c.k, 32);
    /* Derived, not the key itself. */
    cluster_key_t d = key_of("0123456789abcdef0123456789abcdef");
    assert_memory_not_equal(d.k, "0123456789abcdef0123456789abcdef", 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_the_header),
        cmocka_unit_test(test_another_legions_key_cannot_open),
        cmocka_unit_test(test_one_changed_byte_anywhere_is_refused),
        cmocka_unit_test(test_stale_and_future_envelopes_are_refused),
        cmocka_unit_test(test_a_replayed_envelope_is_refused),
        cmocka_unit_test(test_the_replay_cache_is_bounded),
        cmocka_unit_test(test_a_replay_across_the_whole_window_is_refused),
        cmocka_unit_test(test_extreme_times_are_refused_without_overflow),
        cmocka_unit_test(test_names_of_other_bytes_are_refused),
        cmocka_unit_test(test_too_large_payloads_and_bad_names),
        cmocka_unit_test(test_truncated_and_garbage_input_is_refused),
        cmocka_unit_test(test_an_empty_legion_key_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
