/* shells.c - alarms to the terminals of a container's shells (shells.h).
 *
 * A session's terminal is found from the processes, not from a path: for
 * each process of the container's cgroup whose stat names a controlling tty
 * (field 7, tty_nr), the fd of that process pointing at the same character
 * device is reopened through /proc/<pid>/fd/<n>.  The device number alone
 * would be ambiguous: ssh sessions use the host's devpts while a customer's
 * own `script` or tmux inside uses the container's devpts instance, whose
 * numbers overlap the host's.  Reopening the process's own fd always
 * reaches the right instance.  Opens are O_NOCTTY|O_NONBLOCK and the file is
 * checked again after the open (a FIFO swapped in is never waited on, and
 * never written). */
#include "shells.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/pidfd.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "../runtime/state.h"

#define MAX_TTYS 256

typedef struct {
    dev_t dev, rdev;
} tty_id_t;

/* Field 7 of /proc/<pid>/stat; 0 when none or unreadable. */
static unsigned long tty_of(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    for (int field = 3; field <= 7; field++) {
        p = strchr(p, ' ');
        if (!p)
            return 0;
        p++;
    }
    return strtoul(p, NULL, 10);
}

/* Length of the valid UTF-8 sequence at p (shortest form, no surrogates,
 * at most U+10FFFF) with its code point in *cp; 0 when invalid. */
static size_t utf8_seq(const unsigned char *p, unsigned *cp)
{
    size_t n;
    unsigned c, min;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2, c = p[0] & 0x1f, min = 0x80;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3, c = p[0] & 0x0f, min = 0x800;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4, c = p[0] & 0x07, min = 0x10000;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
            return 0;
        c = (c << 6) | (p[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

/* Terminals act on C0 (0x00-0x1f, 0x7f) and C1 controls (U+0080-U+009F,
 * which an 8-bit terminal also takes from the raw bytes 0x80-0x9f): ESC or
 * CSI sequences could move the cursor, rewrite the screen or answer back
 * into the shell.  Kept: tab, newline (as CRLF), printable ASCII and valid
 * UTF-8 of U+00A0 and above; everything else, including bytes that are not
 * valid UTF-8, is dropped. */
char *shells_frame(const char *msg)
{
    size_t len = strlen(msg);
    char *out = malloc(2 * len + 32);
    if (!out)
        return NULL;
    char *o = out;
    o += sprintf(o, "\r\n[imperium] ");
    for (const unsigned char *p = (const unsigned char *)msg; *p;) {
        unsigned cp;
        size_t n;
        if (*p == '\n') {
            *o++ = '\r';
            *o++ = '\n';
            p++;
        } else if (*p == '\t' || (*p >= 0x20 && *p < 0x7f)) {
            *o++ = (char)*p++;
        } else if (*p < 0x80) {
            p++; /* C0 control or DEL */
        } else if ((n = utf8_seq(p, &cp)) == 0) {
            p++; /* not UTF-8: a raw C1 byte or garbage */
        } else {
            if (cp > 0x9f) {
                memcpy(o, p, n);
                o += n;
            }
            p += n;
        }
    }
    o += sprintf(o, "\r\n");
    *o = '\0';
    return out;
}

/* tty_nr of /proc/<pid>/stat is the kernel's new_encode_dev(): minor bits
 * 0-7, major bits 8-19, minor bits 8-19 in bits 20-31; glibc's dev_t is
 * laid out differently once the minor passes 255 (pts/256 and up). */
dev_t shells_tty_dev(unsigned long tty_nr)
{
    unsigned major = (unsigned)((tty_nr >> 8) & 0xfff);
    unsigned minor = (unsigned)((tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00));
    return makedev(major, minor);
}

/* Write to the terminal of pid if it is one not yet seen; 1 if written. */
static int write_tty_of(int pid, unsigned long tty, const char *text, tty_id_t *seen,
                        size_t *n_seen)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", pid);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int written = 0;
    struct dirent *de;
    while (!written && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[384];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != shells_tty_dev(tty))
            continue;
        int fd = open(path, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st2;
        if (fstat(fd, &st2) < 0 || !S_ISCHR(st2.st_mode) || st2.st_rdev != shells_tty_dev(tty) ||
            !isatty(fd)) {
            close(fd);
            continue;
        }
        bool dup = false;
        for (size_t i = 0; i < *n_seen; i++)
            if (seen[i].dev == st2.st_dev && seen[i].rdev == st2.st_rdev)
                dup = true;
        if (!dup && *n_seen < MAX_TTYS) {
            seen[(*n_seen)++] = (tty_id_t){st2.st_dev, st2.st_rdev};
            size_t len = strlen(text);
            if (write(fd, text, len) > 0)
                written = 1;
        } else if (dup) {
            written = -1; /* this terminal is done */
        }
        close(fd);
    }
    closedir(d);
    return written > 0;
}

/* write_tty_of for a process of the container's uid only: a pid listed in
 * cgroup.procs may have died and been reused by a process of someone else
 * (whose terminal must not be written).  The uid is checked once a pidfd
 * holds the process; if it has died by the end, it is not counted.  (Left:
 * a death and a reuse of its pid between the check and the open.) */
static int write_pinned(int pid, int uid, unsigned long tty, const char *text, tty_id_t *seen,
                        size_t *n_seen)
{
    int pidfd = pidfd_open(pid, 0);
    if (pidfd < 0)
        return 0;
    int n = 0;
    if (proc_uid(pid) == uid) {
        n = write_tty_of(pid, tty, text, seen, n_seen);
        if (pidfd_send_signal(pidfd, 0, NULL, 0) < 0)
            n = 0; /* gone meanwhile: not counted (it was its terminal, though) */
    }
    close(pidfd);
    return n;
}

int shells_broadcast(const char *state_dir, int uid, const char *msg, err_t *e)
{
    state_t st;
    int loaded = state_load(state_dir, uid, &st, e);
    if (loaded < 0)
        return -1;
    if (loaded == 0 || !state_init_alive(&st) || !st.cgroup[0])
        return err_set(e, ERR_CONFLICT, "container %d is not running", uid);
    char path[STATE_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/cgroup.procs", st.cgroup);
    FILE *f = fopen(path, "re");
    if (!f)
        return err_set(e, ERR_INTERNAL, "container %d: %s: %s", uid, path, strerror(errno));
    char *text = shells_frame(msg);
    if (!text) {
        fclose(f);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    tty_id_t *seen = calloc(MAX_TTYS, sizeof *seen);
    if (!seen) {
        free(text);
        fclose(f);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    size_t n_seen = 0;
    int count = 0, pid;
    while (fscanf(f, "%d", &pid) == 1) {
        unsigned long tty = tty_of(pid);
        if (tty)
            count += write_pinned(pid, uid, tty, text, seen, &n_seen);
    }
    fclose(f);
    free(seen);
    free(text);
    return count;
}
