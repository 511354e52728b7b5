/* Unit tests for resp_cache.h: keys, versions, the memory bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/api/resp_cache.h"

static struct MHD_Response *body(size_t len)
{
    static char text[80 * 1024];
    memset(text, 'x', sizeof text);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_COPY);
    assert_non_null(r);
    return r;
}

static void key_of(resp_cache_t *c, const char *a, const char *b, unsigned char k[32])
{
    const char *parts[] = {a, b};
    resp_cache_key(c, parts, 2, k);
}

static void test_keys(void **state)
{
    (void)state;
    resp_cache_t *c = resp_cache_new(60, 1 << 20);
    assert_non_null(c);
    unsigned char k1[32], k2[32];
    key_of(c, "/api/me", "Basic a", k1);
    key_of(c, "/api/me", "Basic a", k2);
    assert_memory_equal(k1, k2, 32);
    key_of(c, "/api/me", "Basic b", k2);
    assert_memory_not_equal(k1, k2, 32);
    /* No header and an empty header are different callers. */
    key_of(c, "/api/me", NULL, k1);
    key_of(c, "/api/me", "", k2);
    assert_memory_not_equal(k1, k2, 32);
    /* Moving bytes across parts makes another key. */
    key_of(c, "/api/meB", "asic a", k1);
    key_of(c, "/api/me", "Basic a", k2);
    assert_memory_not_equal(k1, k2, 32);
    resp_cache_free(c);
}

static void test_versions(void **state)
{
    (void)state;
    resp_cache_t *c = resp_cache_new(60, 1 << 20);
    unsigned char k[32], other[32];
    key_of(c, "/api/containers/30001", "Basic a", k);
    key_of(c, "/api/containers/30002", "Basic a", other);
    assert_null(resp_cache_get(c, k, 7));
    resp_cache_put(c, k, 7, body(100), 100, "kratos");
    resp_entry_t *e = resp_cache_get(c, k, 7);
    assert_non_null(e);
    assert_string_equal(resp_entry_user(e), "kratos");
    assert_non_null(resp_entry_response(e));
    assert_null(resp_cache_get(c, other, 7));
    /* A write since: not served, and gone for good. */
    assert_null(resp_cache_get(c, k, 8));
    assert_null(resp_cache_get(c, k, 7));
    resp_entry_release(e); /* the borrowed entry outlives its removal */
    resp_cache_free(c);
}

static void test_disabled(void **state)
{
    (void)state;
    resp_cache_t *off[] = {resp_cache_new(0, 1 << 20), resp_cache_new(60, 0)};
    for (int i = 0; i < 2; i++) {
        assert_false(resp_cache_enabled(off[i]));
        unsigned char k[32];
        key_of(off[i], "/api/me", "x", k);
        resp_cache_put(off[i], k, 1, body(10), 10, "u");
        assert_null(resp_cache_get(off[i], k, 1));
        resp_cache_free(off[i]);
    }
}

static void test_memory_bound(void **state)
{
    (void)state;
    resp_cache_t *c = resp_cache_new(60, 100);
    unsigned char k[4][32];
    /* keys in different slots (the slot is the key's first two bytes) */
    for (int i = 0, n = 0; n < 4; i++) {
        char path[32];
        snprintf(path, sizeof path, "/api/tags/%d", i);
        key_of(c, path, "a", k[n]);
        bool clash = false;
        for (int j = 0; j < n; j++)
            clash |= k[j][0] == k[n][0] && k[j][1] == k[n][1];
        n += !clash;
    }
    resp_cache_put(c, k[0], 1, body(80), 80, "u");
    resp_cache_put(c, k[1], 1, body(80), 80, "u"); /* full: refused */
    resp_entry_t *e = resp_cache_get(c, k[0], 1);
    assert_non_null(e);
    resp_entry_release(e);
    assert_null(resp_cache_get(c, k[1], 1));
    /* At a newer version the old entry can never be served: it makes room. */
    resp_cache_put(c, k[2], 2, body(80), 80, "u");
    assert_non_null(e = resp_cache_get(c, k[2], 2));
    resp_entry_release(e);
    /* Larger than an entry may be: never kept. */
    resp_cache_t *big = resp_cache_new(60, 1 << 20);
    resp_cache_put(big, k[3], 1, body(65 * 1024), 65 * 1024, "u");
    assert_null(resp_cache_get(big, k[3], 1));
    resp_cache_free(big);
    resp_cache_free(c);
}

static void test_lifetime(void **state)
{
    (void)state;
    resp_cache_t *c = resp_cache_new(1, 1 << 20);
    unsigned char k[32];
    key_of(c, "/api/me", "Basic a", k);
    resp_cache_put(c, k, 1, body(10), 10, "u");
    sleep(2);
    assert_null(resp_cache_get(c, k, 1));
    resp_cache_free(c);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),          cmocka_unit_test(test_versions),
        cmocka_unit_test(test_disabled),      cmocka_unit_test(test_memory_bound),
        cmocka_unit_test(test_lifetime),
    };
    return cmocka_run_group_tests_name("resp_cache", tests, NULL, NULL);
}
