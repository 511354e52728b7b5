/* shells.h - write a message to the terminals of a container's shells
 * (alarms reach the customer's open ssh sessions). */
#ifndef IMP_SSH_SHELLS_H
#define IMP_SSH_SHELLS_H

#include <sys/types.h>

#include "../common/err.h"

/* Write msg (control characters other than newline and tab are dropped,
 * newlines become CRLF) framed as "\r\n[imperium] <msg>\r\n" to every
 * terminal that a process of container `uid` has as its controlling tty:
 * processes are those of the container's cgroup (recorded in
 * <state_dir>/<uid>/state.json), each terminal is written once.  Returns the
 * number of terminals written (0: no open shell); -1 with e set when the
 * container does not run or its cgroup cannot be read. */
int shells_broadcast(const char *state_dir, int uid, const char *msg, err_t *e);

/* "\r\n[imperium] <msg>\r\n" with every C0 and C1 control but tab and
 * newline dropped (C1 both as UTF-8, U+0080-U+009F, and as raw bytes
 * 0x80-0x9f), as are bytes that are not valid UTF-8; newlines become CRLF.
 * NULL when out of memory; free() it. */
char *shells_frame(const char *msg);
/* The device number of a tty_nr field of /proc/<pid>/stat. */
dev_t shells_tty_dev(unsigned long tty_nr);

#endif
