/* legion_hook_main.c - `imperium-legion-hook`, the hook a node's uWSGI
 * legion member runs (legion.h, docs/CLUSTER.md):
 *
 *   imperium-legion-hook lord ADDR IFNAME     ADDR/32 added to IFNAME, gratuitous ARP
 *   imperium-legion-hook unlord ADDR IFNAME   ADDR/32 removed (absent is fine)
 *
 * It runs synchronously in the member's legion thread (nothing is announced
 * meanwhile): a few netlink and packet-socket calls, no waiting.  Exit 0
 * done, 1 refused or failed (the reason on stderr, the member's log). */
#include <stdio.h>

#include "legion.h"

int main(int argc, char **argv)
{
    err_t e;
    err_clear(&e);
    if (legion_hook_run(argc, argv, &e) < 0) {
        fprintf(stderr, "%s: %s\n", LEGION_HOOK_NAME, e.msg);
        return 1;
    }
    return 0;
}
