/* legion_hook_main.c - `imperium-legion-hook`, the hooks and the guard of a
 * node's uWSGI legion member (legion.h, docs/CLUSTER.md):
 *
 *   imperium-legion-hook lord ADDR IFNAME     ADDR/32 added to IFNAME, gratuitous ARP
 *   imperium-legion-hook unlord ADDR IFNAME   ADDR/32 removed (absent is fine)
 *   imperium-legion-hook guard ADDR|- IFNAME|- UWSGI ARGS...
 *                                             runs the member as its single-threaded
 *                                             parent; ADDR/32 removed when it ends
 *
 * lord/unlord run synchronously in the member's legion thread (nothing is
 * announced meanwhile): a few netlink and packet-socket calls, no waiting.
 * Exit 0 done, 1 refused or failed (the reason on stderr, the member's log);
 * guard exits with the member's status (128 + signal when killed). */
#include <stdio.h>
#include <string.h>

#include "legion.h"

int main(int argc, char **argv)
{
    err_t e;
    err_clear(&e);
    int rc = argc > 1 && !strcmp(argv[1], "guard") ? legion_guard_run(argc, argv, &e)
                                                    : legion_hook_run(argc, argv, &e);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", LEGION_HOOK_NAME, e.msg);
        return 1;
    }
    return rc;
}
