/* Unit tests for req.c's error replies: each err.h kind's status, and the
 * database's transient failure (ERR_UNAVAILABLE) as a 503 the client may
 * retry, whichever reply a handler ends with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "../../src/api/req.h"

/* The status, Retry-After and "reason" of the reply to an error of `kind`,
 * sent through `fn` (reply_err or reply_internal). */
static void check_reply(void (*fn)(req_t *, const err_t *), enum err_kind kind,
                        int status, int retry_after, const char *reason)
{
    req_t r = {.method = "GET", .path = "/api/me", .status = 500};
    err_t e = {0};
    err_set(&e, kind, "the detail");
    fn(&r, &e);
    assert_int_equal(r.status, status);
    assert_int_equal(r.retry_after, retry_after);
    assert_non_null(r.out);
    json_t *why = json_object_get(r.out, "reason");
    if (reason)
        assert_string_equal(json_string_value(why), reason);
    else
        assert_null(why);
    req_free(&r);
}

static void test_kinds_map_to_statuses(void **state)
{
    (void)state;
    check_reply(reply_err, ERR_INPUT, 400, 0, "the detail");
    check_reply(reply_err, ERR_FORBIDDEN, 403, 0, "the detail");
    check_reply(reply_err, ERR_NOTFOUND, 404, 0, NULL);
    check_reply(reply_err, ERR_CONFLICT, 409, 0, "the detail");
    check_reply(reply_err, ERR_CONSTRAINT, 409, 0, "the detail");
    /* An internal error's detail is logged, never sent. */
    check_reply(reply_err, ERR_INTERNAL, 500, 0, NULL);
}

static void test_unavailable_is_a_503_to_retry(void **state)
{
    (void)state;
    const char *why = "the database is unavailable, try again";
    check_reply(reply_err, ERR_UNAVAILABLE, 503, 1, why);
    /* Handlers answer storage failures with reply_internal: the same. */
    check_reply(reply_internal, ERR_UNAVAILABLE, 503, 1, why);
    check_reply(reply_internal, ERR_INTERNAL, 500, 0, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds_map_to_statuses),
        cmocka_unit_test(test_unavailable_is_a_503_to_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
