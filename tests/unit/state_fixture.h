/* state_fixture.h - what the node's unit tests share: a node state parsed
 * from JSON text (as the channel would), and text assertions that print
 * the whole text on failure (an nft table, `ip` output).  Include after
 * <cmocka.h>. */
#ifndef IMP_TEST_STATE_FIXTURE_H
#define IMP_TEST_STATE_FIXTURE_H

#include <jansson.h>
#include <string.h>

#include "../../src/node/spec.h"

static inline spec_state_t *state_of(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j)
        fail_msg("bad test JSON: %s", je.text);
    err_t e;
    err_clear(&e);
    spec_state_t *s = spec_parse(j, &e);
    json_decref(j);
    if (!s)
        fail_msg("spec_parse: %s", e.msg);
    return s;
}

static inline void has(const char *text, const char *what)
{
    if (!strstr(text, what))
        fail_msg("expected \"%s\" in:\n%s", what, text);
}

static inline void lacks(const char *text, const char *what)
{
    if (strstr(text, what))
        fail_msg("unexpected \"%s\" in:\n%s", what, text);
}

#endif
