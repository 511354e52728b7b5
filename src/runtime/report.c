/* report.c - how the container's setup tells the node what failed: one
 * line on the sync socket (runtime.h).  Used by the node's child between
 * clone and exec and by imperium-init, so it is async-signal-safe and
 * allocates nothing. */
#include "runtime.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

int rt_fail(err_t *e, const char *step)
{
    /* strerrordesc_np: no locale lookup, nothing allocated. */
    const char *desc = strerrordesc_np(errno);
    return err_set(e, ERR_INTERNAL, "%s: %s", step, desc ? desc : "unknown error");
}

void rt_report_fd(int fd, const err_t *e)
{
    /* One short message; MSG_NOSIGNAL: a parent that gave up is no reason
     * to die of SIGPIPE. */
    size_t len = strnlen(e->msg, sizeof e->msg);
    if (fd >= 0 && len > 0) {
        ssize_t n = send(fd, e->msg, len, MSG_NOSIGNAL);
        (void)n;
    }
}

void rt_report(const rt_plan_t *p, const err_t *e) { rt_report_fd(p->sync_fd, e); }
