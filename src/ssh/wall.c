/* wall.c - imperium-wall: shells_broadcast() from the command line.
 *
 *     imperium-wall --state-dir DIR UID MESSAGE
 *
 * Writes MESSAGE to the terminal of every open shell of container UID (what
 * the node does with an alarm).  Prints how many terminals were written.
 * Exit 0 done (even with no shell open), 1 failure, 2 usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/validate.h"
#include "shells.h"

int main(int argc, char **argv)
{
    if (argc != 5 || strcmp(argv[1], "--state-dir") != 0) {
        fprintf(stderr, "usage: imperium-wall --state-dir DIR UID MESSAGE\n");
        return 2;
    }
    char *end;
    long uid = strtol(argv[3], &end, 10);
    if (*end || uid <= UID_BASE || uid > 2147483647L) {
        fprintf(stderr, "imperium-wall: not a container uid: %s\n", argv[3]);
        return 2;
    }
    err_t e = {0};
    int n = shells_broadcast(argv[2], (int)uid, argv[4], &e);
    if (n < 0) {
        fprintf(stderr, "imperium-wall: %s\n", e.msg);
        return 1;
    }
    printf("%d\n", n);
    return 0;
}
