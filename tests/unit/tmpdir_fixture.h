/* tmpdir_fixture.h - a fresh directory under /tmp for each test (cmocka
 * setup/teardown), removed afterwards: `base` holds its path.  Define
 * TMPDIR_FIXTURE_NAME (a word naming the suite) before including it. */
#ifndef IMP_TEST_TMPDIR_FIXTURE_H
#define IMP_TEST_TMPDIR_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#ifndef TMPDIR_FIXTURE_NAME
#error "define TMPDIR_FIXTURE_NAME before including tmpdir_fixture.h"
#endif

static char base[64];

static int make_base(void **state)
{
    (void)state;
    snprintf(base, sizeof base, "/tmp/imp-%s-XXXXXX", TMPDIR_FIXTURE_NAME);
    return mkdtemp(base) ? 0 : -1;
}

static int remove_base(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
