/* shells.h - write a message to the terminals of a container's shells
 * (alarms reach the customer's open ssh sessions). */
#ifndef IMP_NODE_SHELLS_H
#define IMP_NODE_SHELLS_H

#include "../common/err.h"

/* Write msg (control characters other than newline and tab are dropped,
 * newlines become CRLF) framed as "\r\n[imperium] <msg>\r\n" to every
 * terminal that a process of container `uid` has as its controlling tty:
 * processes are those of the container's cgroup (recorded in
 * <state_dir>/<uid>/state.json), each terminal is written once.  Returns the
 * number of terminals written (0: no open shell); -1 with e set when the
 * container does not run or its cgroup cannot be read. */
int shells_broadcast(const char *state_dir, int uid, const char *msg, err_t *e);

#endif
