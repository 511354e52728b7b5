/* loop_fixture.h - for unit tests with real loop devices (root). */
#ifndef IMP_TEST_LOOP_FIXTURE_H
#define IMP_TEST_LOOP_FIXTURE_H

#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>

#include "../../src/runtime/loopdev.h"

/* Autoclear frees a device a moment after its last user (a mount is put
 * off to a work queue): true once no device backs the file sb, within 3 s. */
static bool loop_freed(const struct stat *sb)
{
    char dev[64];
    for (int i = 0; i < 300; i++) {
        if (loopdev_find(sb->st_dev, sb->st_ino, dev, sizeof dev) < 0)
            return true;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

#endif
