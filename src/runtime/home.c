/* home.c - the customer's home layout (see home.h). */
#include "home.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/beneath.h"
#include "../common/fsutil.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "quota.h"

/* strict: the node mounts it or writes into it as root, so it must be a
 * real directory; otherwise a symlink the customer made is their choice. */
struct dir_rule {
    const char *name;
    mode_t mode;
    bool strict;
};

static const struct dir_rule rules[] = {
    {"vassals", 0755, false}, {"logs", 0755, true}, {"etc", 0755, true},      {".ssh", 0700, true},
    {"run", 0755, true},      {"tmp", 01777, true}, {"distros", 0755, false}, {NULL, 0, false},
};

const char *const home_dirs[] = {"vassals", "logs", "etc", ".ssh", "run", "tmp", "distros", NULL};

static const struct dir_rule *rule(const char *name)
{
    for (const struct dir_rule *r = rules; r->name; r++)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

/* Open (creating it if needed) the home itself, owned by the uid. */
static int open_home(const container_spec_t *s, err_t *e)
{
    /* The directories above it are the node's own (root-owned paths). */
    if (fs_mkdir_parents(s->home, e) < 0)
        return -1;
    bool created = mkdir(s->home, 0700) == 0;
    if (!created && errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "create home %s: %s", s->home, strerror(errno));
    int fd = open(s->home, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "home %s: %s", s->home, strerror(errno));
    if ((created && fchmod(fd, 0700) < 0) || fchown(fd, s->uid, s->uid) < 0) {
        int err = errno;
        close(fd);
        return err_set(e, ERR_INTERNAL, "home %s: set owner: %s", s->home, strerror(err));
    }
    return fd;
}

/* A directory of the layout: its fd, -2 when a lenient entry is something
 * the customer made (left alone), -1 on error. */
static int ensure_dir(int home, const struct dir_rule *r, int uid, err_t *e)
{
    bool created = mkdirat(home, r->name, 0700) == 0;
    if (!created && errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "home: create %s: %s", r->name, strerror(errno));
    int fd = openat(home, r->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (!r->strict && (err == ELOOP || err == ENOTDIR))
            return -2;
        struct stat sb;
        bool link = fstatat(home, r->name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode);
        return err_set(e, ERR_INPUT, "home: %s is not a directory (%s); refusing to use it",
                       r->name, link ? "a symbolic link" : strerror(err));
    }
    if ((created && fchmod(fd, r->mode) < 0) ||
        ((created || r->strict) && fchown(fd, uid, uid) < 0)) {
        int err = errno;
        close(fd);
        return err_set(e, ERR_INTERNAL, "home: set owner of %s: %s", r->name, strerror(err));
    }
    return fd;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Replace dir/name atomically: a fresh file (O_EXCL|O_NOFOLLOW) renamed
 * over the old name, so a planted symlink is replaced, never followed. */
static int write_file_at(int dir, const char *dname, const char *name, const char *data,
                         mode_t mode, int uid, err_t *e)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, ".%s.imperium-tmp", name);
    if (unlinkat(dir, tmp, 0) < 0 && errno != ENOENT)
        return err_set(e, ERR_INTERNAL, "home: remove %s/%s: %s", dname, tmp, strerror(errno));
    int fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "home: create %s/%s: %s", dname, tmp, strerror(errno));
    int rc = write_all(fd, data, strlen(data));
    if (rc == 0)
        rc = fchown(fd, uid, uid);
    if (rc == 0)
        rc = fchmod(fd, mode);
    int err = errno;
    if (close(fd) < 0 && rc == 0) {
        rc = -1;
        err = errno;
    }
    if (rc == 0 && renameat(dir, tmp, dir, name) < 0) {
        rc = -1;
        err = errno;
    }
    if (rc < 0) {
        unlinkat(dir, tmp, 0);
        return err_set(e, ERR_INTERNAL, "home: write %s/%s: %s", dname, name, strerror(err));
    }
    return 0;
}

static char *keys_text(const container_spec_t *s, err_t *e)
{
    buf_t b = {0};
    if (buf_appends(&b, "") < 0)
        goto oom;
    for (size_t i = 0; i < s->n_ssh_keys; i++) {
        /* The API validated each key when it was stored, under the rules of
         * that day (a key stored before the options were allowed may not
         * pass today's ssh_key_valid, yet sshd reads it fine).  What the file
         * needs is that each key stays one line: a line break would smuggle
         * in an entry of its own. */
        if (strpbrk(s->ssh_keys[i], "\r\n")) {
            buf_free(&b);
            err_set(e, ERR_INPUT, "ssh key %zu spans more than one line", i + 1);
            return NULL;
        }
        if (buf_appends(&b, s->ssh_keys[i]) < 0 || buf_appends(&b, "\n") < 0)
            goto oom;
    }
    return b.data;
oom:
    buf_free(&b);
    err_set(e, ERR_INTERNAL, "out of memory");
    return NULL;
}

static int write_keys_at(int home, const container_spec_t *s, err_t *e)
{
    int ssh = ensure_dir(home, rule(".ssh"), s->uid, e);
    if (ssh < 0)
        return -1;
    char *text = keys_text(s, e);
    int rc = text ? write_file_at(ssh, ".ssh", "uwsgi_authorized_keys", text, 0600, s->uid, e) : -1;
    free(text);
    close(ssh);
    return rc;
}

static int write_etc(int home, const container_spec_t *s, err_t *e)
{
    int etc = ensure_dir(home, rule("etc"), s->uid, e);
    if (etc < 0)
        return -1;
    char *hosts = s->etc_hosts ? strdup(s->etc_hosts)
                               : str_printf("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n"
                                            "::1\tlocalhost ip6-localhost ip6-loopback\n",
                                            s->hostname);
    char *hostname = str_printf("%s\n", s->hostname);
    int rc = -1;
    if (!hosts || !hostname) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto out;
    }
    if (write_file_at(etc, "etc", "hosts", hosts, 0644, s->uid, e) < 0 ||
        write_file_at(etc, "etc", "resolv.conf", s->etc_resolv_conf ? s->etc_resolv_conf : "", 0644,
                      s->uid, e) < 0 ||
        write_file_at(etc, "etc", "hostname", hostname, 0644, s->uid, e) < 0)
        goto out;
    if (s->rsa_key && write_file_at(etc, "etc", "uwsgi.key", s->rsa_key, 0600, s->uid, e) < 0)
        goto out;
    if (s->rsa_pubkey &&
        write_file_at(etc, "etc", "uwsgi.pubkey", s->rsa_pubkey, 0644, s->uid, e) < 0)
        goto out;
    rc = 0;
out:
    free(hosts);
    free(hostname);
    close(etc);
    return rc;
}

int home_prepare(const container_spec_t *s, err_t *e)
{
    int home = open_home(s, e);
    if (home < 0)
        return -1;
    int rc = 0;
    for (const struct dir_rule *r = rules; r->name && rc == 0; r++) {
        int fd = ensure_dir(home, r, s->uid, e);
        if (fd == -1)
            rc = -1;
        else if (fd >= 0)
            close(fd);
    }
    if (rc == 0)
        rc = write_etc(home, s, e);
    if (rc == 0)
        rc = write_keys_at(home, s, e);
    close(home);
    return rc;
}

int home_write_keys(const container_spec_t *s, err_t *e)
{
    int home = open(s->home, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (home < 0)
        return err_set(e, ERR_NOTFOUND, "home %s: %s", s->home, strerror(errno));
    int rc = write_keys_at(home, s, e);
    close(home);
    return rc;
}

/* ---- whose home: records, retirement, purge ------------------------------- */

/* The containers directory itself (the supplier's, root-owned). */
static int open_containers(const char *dir, err_t *e)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        err_set(e, ERR_INTERNAL, "containers directory %s: %s", dir, strerror(errno));
    return fd;
}

/* <containers_dir>/<name>, a directory for root alone (0700, root-owned,
 * whatever it was): the customers can neither list nor enter it. */
static int root_only_dir(int cd, const char *dir, const char *name, err_t *e)
{
    int fd = beneath_mkdir(cd, name, 0700, true, 0, 0, 0);
    if (fd < 0)
        err_set(e, ERR_INTERNAL, "%s/%s: %s", dir, name, strerror(errno));
    return fd;
}

/* The uuid recorded for uid into out ("" when none); -1 on a read error. */
static int owner_read(int owners, int uid, char *out, size_t len, err_t *e)
{
    char name[16];
    snprintf(name, sizeof name, "%d", uid);
    out[0] = '\0';
    int fd = openat(owners, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : err_set(e, ERR_INTERNAL, "read the owner of home %d: %s",
                                             uid, strerror(errno));
    ssize_t n = read(fd, out, len - 1);
    close(fd);
    if (n < 0)
        return err_set(e, ERR_INTERNAL, "read the owner of home %d: %s", uid, strerror(errno));
    out[n] = '\0';
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

static int owner_write(int owners, int uid, const char *uuid, err_t *e)
{
    char name[16], text[128];
    snprintf(name, sizeof name, "%d", uid);
    snprintf(text, sizeof text, "%s\n", uuid);
    return write_file_at(owners, HOME_OWNERS_DIR, name, text, 0600, 0, e);
}

/* The home's disk image (quota.h), if any, follows its tree: to
 * .deleted/<name>.ext4, purged with it. */
static int retire_image(int cd, int del, const char *dir, int uid, const char *name, err_t *e)
{
    int images = openat(cd, QUOTA_IMAGES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (images < 0)
        return errno == ENOENT ? 0 : err_set(e, ERR_INTERNAL, "%s/%s: %s", dir,
                                             QUOTA_IMAGES_DIR, strerror(errno));
    char img[32], to[80];
    snprintf(img, sizeof img, "%d.ext4", uid);
    snprintf(to, sizeof to, "%s.ext4", name);
    int rc = renameat2(images, img, del, to, RENAME_NOREPLACE);
    int err = errno;
    close(images);
    if (rc < 0 && err != ENOENT)
        return err_set(e, ERR_INTERNAL, "move the home image %s/%s/%s to %s/: %s", dir,
                       QUOTA_IMAGES_DIR, img, HOME_DELETED_DIR, strerror(err));
    return 0;
}

/* Move <cd>/<uid> to .deleted/<uid>-<now> (".<n>" added if taken), its
 * image unmounted first and moved beside it. */
static int retire_at(int cd, const char *dir, int uid, err_t *e)
{
    char home[16];
    snprintf(home, sizeof home, "%d", uid);
    if (quota_release(QUOTA_LOOP, dir, uid, e) < 0)
        return -1;
    int del = root_only_dir(cd, dir, HOME_DELETED_DIR, e);
    if (del < 0)
        return -1;
    long long now = (long long)time(NULL);
    int rc = -1;
    char to[64];
    for (int n = 0; n < 100 && rc < 0; n++) {
        if (n)
            snprintf(to, sizeof to, "%d-%lld.%d", uid, now, n);
        else
            snprintf(to, sizeof to, "%d-%lld", uid, now);
        rc = renameat2(cd, home, del, to, RENAME_NOREPLACE);
        if (rc < 0 && errno != EEXIST)
            break;
    }
    int err = errno;
    if (rc == 0)
        rc = retire_image(cd, del, dir, uid, to, e);
    else
        err_set(e, ERR_INTERNAL, "move home %s/%d to %s/: %s", dir, uid, HOME_DELETED_DIR,
                strerror(err));
    close(del);
    return rc < 0 ? -1 : 0;
}

int home_retire(const char *containers_dir, int uid, err_t *e)
{
    int cd = open_containers(containers_dir, e);
    if (cd < 0)
        return -1;
    char home[16];
    snprintf(home, sizeof home, "%d", uid);
    struct stat sb;
    int rc = 0;
    if (fstatat(cd, home, &sb, AT_SYMLINK_NOFOLLOW) == 0)
        rc = retire_at(cd, containers_dir, uid, e) < 0 ? -1 : 1;
    else if (errno != ENOENT)
        rc = err_set(e, ERR_INTERNAL, "home %s/%d: %s", containers_dir, uid, strerror(errno));
    if (rc >= 0) {
        /* The record goes with the home: a new home starts unowned. */
        int owners = openat(cd, HOME_OWNERS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (owners >= 0) {
            if (unlinkat(owners, home, 0) < 0 && errno != ENOENT)
                rc = err_set(e, ERR_INTERNAL, "forget the owner of home %d: %s", uid,
                             strerror(errno));
            close(owners);
        }
    }
    close(cd);
    return rc;
}

int home_claim(const char *containers_dir, int uid, const char *uuid, bool known, err_t *e)
{
    int cd = open_containers(containers_dir, e);
    if (cd < 0)
        return -1;
    int owners = root_only_dir(cd, containers_dir, HOME_OWNERS_DIR, e);
    if (owners < 0) {
        close(cd);
        return -1;
    }
    char home[16], owner[128];
    snprintf(home, sizeof home, "%d", uid);
    struct stat sb;
    bool exists = fstatat(cd, home, &sb, AT_SYMLINK_NOFOLLOW) == 0;
    int rc = 0;
    if (!exists && errno != ENOENT)
        rc = err_set(e, ERR_INTERNAL, "home %s/%d: %s", containers_dir, uid, strerror(errno));
    else if (owner_read(owners, uid, owner, sizeof owner, e) < 0)
        rc = -1;
    else if (strcmp(owner, uuid) == 0)
        rc = 0;
    else if (exists && !(known && !owner[0]))
        /* Another container's home (or one nobody vouches for). */
        rc = retire_at(cd, containers_dir, uid, e) < 0 ? -1 : HOME_CLAIM_MOVED;
    else
        rc = exists ? HOME_CLAIM_ADOPTED : 0;
    if (rc >= 0 && strcmp(owner, uuid) != 0 && owner_write(owners, uid, uuid, e) < 0)
        rc = -1;
    close(owners);
    close(cd);
    return rc;
}

/* ---- purge: remove a retired home without following anything -------------- */

#define PURGE_DEPTH 64

/* Empty the directory fd.  Subdirectories deeper than PURGE_DEPTH are
 * renamed into `top` (flattening the tree; *again is set), so no tree is
 * too deep and the number of open descriptors stays bounded. */
static int empty_dir(int fd, int top, int depth, bool *again, unsigned *moved)
{
    /* A description of its own (not dup): a new pass reads from the start. */
    int dup_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0)
            close(dup_fd);
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
            continue;
        if (unlinkat(fd, n, 0) == 0 || errno == ENOENT)
            continue;
        if (errno != EISDIR && errno != EPERM) {
            rc = -1;
            continue;
        }
        if (depth >= PURGE_DEPTH) {
            char to[32];
            snprintf(to, sizeof to, ".purge-%u", (*moved)++);
            if (renameat(fd, n, top, to) < 0)
                rc = -1;
            *again = true;
            continue;
        }
        int sub = openat(fd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0 || empty_dir(sub, top, depth + 1, again, moved) < 0)
            rc = -1;
        if (sub >= 0)
            close(sub);
        if (unlinkat(fd, n, AT_REMOVEDIR) < 0 && errno != ENOENT && errno != ENOTEMPTY)
            rc = -1;
    }
    closedir(d);
    return rc;
}

static int remove_tree(int parent, const char *name)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOTDIR || errno == ELOOP ? unlinkat(parent, name, 0) : -1;
    /* The customer's modes (a 0500 directory) do not stop root; the
     * immutable attribute would, and is reported. */
    int rc = 0;
    unsigned moved = 0;
    for (int pass = 0; pass < 1000; pass++) {
        bool again = false;
        rc = empty_dir(fd, fd, 0, &again, &moved);
        if (!again)
            break;
    }
    close(fd);
    return rc < 0 ? -1 : unlinkat(parent, name, AT_REMOVEDIR);
}

/* The time in a .deleted entry's name "<uid>-<time>[.<n>]"; -1 if not one. */
static long long retired_at(const char *name)
{
    const char *dash = strchr(name, '-');
    if (!dash || dash == name)
        return -1;
    char buf[32];
    size_t n = strcspn(dash + 1, ".");
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, dash + 1, n);
    buf[n] = '\0';
    long long t;
    return str_to_ll(buf, &t) && t >= 0 ? t : -1;
}

int home_purge(const char *containers_dir, long long before, err_t *e)
{
    int cd = open_containers(containers_dir, e);
    if (cd < 0)
        return -1;
    int del = openat(cd, HOME_DELETED_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(cd);
    if (del < 0)
        return errno == ENOENT ? 0 : err_set(e, ERR_INTERNAL, "%s/%s: %s", containers_dir,
                                             HOME_DELETED_DIR, strerror(errno));
    int dup_fd = dup(del);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0)
            close(dup_fd);
        close(del);
        return err_set(e, ERR_INTERNAL, "read %s/%s: %s", containers_dir, HOME_DELETED_DIR,
                       strerror(errno));
    }
    int removed = 0, failed = 0;
    char first[256] = "";
    struct dirent *de;
    while ((de = readdir(d))) {
        long long t = retired_at(de->d_name);
        if (t < 0 || t >= before)
            continue;
        if (remove_tree(del, de->d_name) == 0) {
            removed++;
        } else if (!failed++) {
            snprintf(first, sizeof first, "%s", de->d_name);
        }
    }
    closedir(d);
    close(del);
    if (failed)
        return err_set(e, ERR_INTERNAL, "purge %s/%s: %d entries not removed (%s first)",
                       containers_dir, HOME_DELETED_DIR, failed, first);
    return removed;
}

/* <rel> beneath hfd for appending, never following a symlink; created
 * (O_EXCL: *created says it is ours) when missing.  O_NONBLOCK: a fifo the
 * customer put there never blocks the node. */
static int open_log(int hfd, const char *rel, bool *created)
{
    const int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
    for (int tries = 0; tries < 2; tries++) { /* deleted, or made, between the two */
        int fd = beneath_open(hfd, rel, flags, 0, 0);
        if (fd >= 0 || errno != ENOENT)
            return fd;
        fd = beneath_open(hfd, rel, flags | O_CREAT | O_EXCL, 0644, 0);
        if (fd >= 0) {
            *created = true;
            return fd;
        }
        if (errno != EEXIST)
            return -1;
    }
    return -1;
}

int home_append_log(const char *home, int uid, const char *rel, const char *who,
                    const char *line, long long max_bytes)
{
    int hfd = open(home, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (hfd < 0)
        return -1;
    bool created = false;
    int fd = open_log(hfd, rel, &created);
    int err = errno;
    close(hfd);
    if (fd < 0) {
        errno = err;
        return -1;
    }
    struct stat st;
    int rc = -1;
    /* Created just now: the customer's.  Never an existing file of
     * someone else's (root's included: a hard link to one is refused by
     * its link count, a file root owns is not given away). */
    if (created && fchown(fd, (uid_t)uid, (gid_t)uid) < 0)
        goto out;
    if (fstat(fd, &st) < 0)
        goto out;
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != (uid_t)uid ||
        (max_bytes > 0 && st.st_size >= max_bytes)) {
        errno = S_ISREG(st.st_mode) && st.st_nlink == 1 && st.st_uid == (uid_t)uid ? EFBIG
                                                                                   : EPERM;
        goto out;
    }
    char stamp[32], buf[2048];
    time_t t = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", gmtime_r(&t, &tm));
    int n = snprintf(buf, sizeof buf, "%s UTC imperium %s: %s\n", stamp, who, line);
    if (n < 0)
        goto out;
    if ((size_t)n >= sizeof buf) { /* cut, still one line */
        n = (int)sizeof buf - 1;
        buf[n - 1] = '\n';
    }
    /* One write with O_APPEND: lines of concurrent writers never interleave. */
    rc = write(fd, buf, (size_t)n) == n ? 0 : -1;
out:
    err = errno;
    close(fd);
    errno = err;
    return rc;
}
