/* acme_hook_main.c - `imperium-acme-hook`, the challenge hook the node's
 * ACME thread gives uacme (acme.h, docs/ROUTER.md "Automatic HTTPS").
 *
 *   imperium-acme-hook METHOD TYPE IDENT TOKEN AUTH      (as uacme calls it)
 *
 * begin: writes AUTH to $IMPERIUM_ACME_CHALLENGES/TOKEN (root and the
 * directory's group, 0640, atomically), which the router serves as
 * /.well-known/acme-challenge/TOKEN; done and failed: removes it.  Only
 * http-01 is accepted (any other type is declined: exit 1).  Exit 0 done,
 * 1 refused or failed (the reason on stderr, which uacme shows). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acme.h"

int main(int argc, char **argv)
{
    err_t e;
    err_clear(&e);
    const char *dir = getenv(ACME_HOOK_ENV);
    if (!dir || dir[0] != '/') {
        fprintf(stderr, "%s: %s must name the challenges directory (an absolute path)\n",
                ACME_HOOK_NAME, ACME_HOOK_ENV);
        return 1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "%s: %s: %s\n", ACME_HOOK_NAME, dir, strerror(errno));
        return 1;
    }
    int rc = acme_hook_run(fd, argc, argv, &e);
    close(fd);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", ACME_HOOK_NAME, e.msg);
        return 1;
    }
    return 0;
}
