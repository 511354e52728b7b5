/* subcerts.c - the gate's checked copies of a customer's certificate files
 * (subcerts.h). */
#include "subcerts.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/beneath.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "tlsfiles.h"

enum { F_KEY, F_CRT, F_CA, F_N };
static const char *const field[F_N] = {"key", "certificate", "CA file"};

/* What a source file was when it was last checked. */
struct src {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

/* One subscription's files and the outcome of their check. */
struct entry {
    uid_t uid;
    char *name, *path[F_N]; /* path[]: the packet's (/containers/<uid>/<rel>); CA NULL if none */
    size_t home_len;
    struct src st[F_N];
    bool ok, node_failed; /* node_failed: the node's fault, not the files' */
    char why[512];
    long long seen_ms;
    long long recheck_ms; /* the outcome stands until then, files unlooked at */
};

struct subcerts {
    char *containers_dir, *router_homes;
    gid_t gid;
    size_t max_pairs;
    long long forget_ms;
    struct entry *e;
    size_t n, cap;
    /* The sets other members sent (subcerts_install_set), by (uid, name,
     * paths): with e[], every user of a copy, so a copy is removed only
     * when neither a local entry nor a remote set names it. */
    struct entry *r;
    size_t rn, rcap;
};

/* The open sources of one check. */
struct files {
    int fd[F_N];
    struct src st[F_N];
    char *data[F_N];
    size_t len[F_N];
};

static void startup_sweep(const subcerts_t *c);

subcerts_t *subcerts_new(const subcerts_opts_t *o, err_t *e)
{
    subcerts_t *c = calloc(1, sizeof *c);
    if (!c || !(c->containers_dir = str_printf("%s", o->containers_dir)) ||
        !(c->router_homes = str_printf("%s", o->router_homes))) {
        subcerts_free(c);
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    c->gid = o->router_gid;
    c->max_pairs = o->max_pairs;
    c->forget_ms = o->forget_ms;
    startup_sweep(c);
    return c;
}

static void entry_free(struct entry *en)
{
    free(en->name);
    for (int i = 0; i < F_N; i++)
        free(en->path[i]);
}

void subcerts_free(subcerts_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        entry_free(&c->e[i]);
    free(c->e);
    for (size_t i = 0; i < c->rn; i++)
        entry_free(&c->r[i]);
    free(c->r);
    free(c->containers_dir);
    free(c->router_homes);
    free(c);
}

/* ---- the router's side: homes/<uid>/<rel> ------------------------------------ */

/* homes/<uid>, made root:router 0710 if the container's start has not. */
static int open_copies(const subcerts_t *c, uid_t uid)
{
    int top = open(c->router_homes, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (top < 0)
        return -1;
    char name[16];
    snprintf(name, sizeof name, "%u", (unsigned)uid);
    int fd = beneath_mkdir(top, name, 0710, false, 0, c->gid, 0);
    int err = errno;
    close(top);
    errno = err;
    return fd;
}

/* The directory of `rel` under homes/<uid> (each made root:router 0710 on
 * the way, never through a symbolic link) and, in *last, its file name. */
static int copy_dir(const subcerts_t *c, int uidfd, const char *rel, const char **last)
{
    const char *slash = strrchr(rel, '/');
    *last = slash ? slash + 1 : rel;
    int fd = dup(uidfd);
    for (const char *p = rel; fd >= 0 && slash && p <= slash;) {
        size_t n = strcspn(p, "/");
        char part[256];
        snprintf(part, sizeof part, "%.*s", (int)n, p);
        int sub = beneath_mkdir(fd, part, 0710, false, 0, c->gid, 0);
        int err = errno;
        close(fd);
        errno = err;
        fd = sub;
        p += n + 1;
    }
    return fd;
}

/* The copy there already holds these bytes (and is the router's to
 * read): leave it, so the router, which makes a name's TLS context again
 * when its files change, is not made to by another subscription naming the
 * same file (one CA for two names). */
static bool copy_current(const subcerts_t *c, int dfd, const char *name, const char *data,
                         size_t len)
{
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat sb;
    bool same = false;
    if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && (size_t)sb.st_size == len &&
        sb.st_uid == 0 && sb.st_gid == c->gid && (sb.st_mode & 07777) == 0640) {
        char *old = malloc(len + 1);
        same = old && pread(fd, old, len + 1, 0) == (ssize_t)len && !memcmp(old, data, len);
        if (old)
            explicit_bzero(old, len);
        free(old);
    }
    if (fd >= 0)
        close(fd);
    return same;
}

static int copy_one(const subcerts_t *c, int uidfd, const char *rel, const char *data, size_t len,
                    char *why, size_t why_len)
{
    const char *last;
    int dfd = copy_dir(c, uidfd, rel, &last);
    if (dfd < 0)
        return str_why(why, why_len, "the node cannot make the router's directory for %s: %s", rel,
                       strerror(errno));
    err_t e = {0};
    int rc =
        copy_current(c, dfd, last, data, len) ? 0 : tls_write_at(dfd, last, data, len, c->gid, &e);
    close(dfd);
    if (rc < 0)
        return str_why(why, why_len, "the node cannot copy %s for the router: %s", rel, e.msg);
    return 0;
}

/* Remove the directories of `rel` (under homes/<uid>) from the deepest
 * up, while they are empty (rmdir fails on one that is not: it stays). */
static void remove_empty_dirs(int uidfd, const char *rel)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s", rel);
    for (char *slash; (slash = strrchr(dir, '/'));) {
        *slash = '\0';
        const char *last;
        int parent = beneath_parent(uidfd, dir, &last, 0);
        bool gone = parent >= 0 && unlinkat(parent, last, AT_REMOVEDIR) == 0;
        if (parent >= 0)
            close(parent);
        if (!gone)
            return;
    }
}

/* Whether an entry of `list` other than `self` names path of uid. */
static bool named_in(const struct entry *list, size_t n, const struct entry *self, uid_t uid,
                     const char *path)
{
    for (size_t j = 0; j < n; j++)
        for (int k = 0; k < F_N; k++)
            if (&list[j] != self && list[j].uid == uid && list[j].path[k] &&
                !strcmp(list[j].path[k], path))
                return true;
    return false;
}

/* Remove the copies of `en` (i < upto of its paths) that no other user,
 * a local entry or a remote set of its container, names. */
static void remove_copies_upto(const subcerts_t *c, const struct entry *en, int upto)
{
    int uidfd = open_copies(c, en->uid);
    for (int i = 0; uidfd >= 0 && i < upto; i++) {
        if (!en->path[i])
            continue;
        bool shared = named_in(c->e, c->n, en, en->uid, en->path[i]) ||
                      named_in(c->r, c->rn, en, en->uid, en->path[i]);
        const char *last;
        int parent = shared ? -1 : beneath_parent(uidfd, en->path[i] + en->home_len, &last, 0);
        if (parent >= 0 && unlinkat(parent, last, 0) < 0 && errno != ENOENT)
            log_debug("subscription gate: remove the copy of %s: %s", en->path[i], strerror(errno));
        if (parent >= 0)
            close(parent);
        if (!shared)
            remove_empty_dirs(uidfd, en->path[i] + en->home_len);
    }
    if (uidfd >= 0)
        close(uidfd);
}

static void remove_copies(const subcerts_t *c, const struct entry *en)
{
    remove_copies_upto(c, en, F_N);
}

/* ---- the customer's side: the sources ---------------------------------------- */

static void src_of(const struct stat *sb, struct src *s)
{
    *s = (struct src){.dev = sb->st_dev,
                      .ino = sb->st_ino,
                      .size = sb->st_size,
                      .mtime = sb->st_mtim,
                      .ctime = sb->st_ctim};
}

static bool src_same(const struct src *a, const struct src *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Open source i of `en` from the home's descriptor: no symbolic link
 * anywhere on the way, never out of the home, no blocking on a fifo; a
 * regular file of the container's own (not, say, a hard link to a file of
 * root's) of at most TLS_FILE_MAX. */
static int open_source(int home, const struct entry *en, int i, int *fd, struct src *st, char *why,
                       size_t why_len)
{
    const char *what = field[i], *path = en->path[i];
    *fd = beneath_open(home, path + en->home_len, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0,
                       0);
    if (*fd < 0) {
        int err = errno;
        if (err == ELOOP)
            return str_why(why, why_len,
                           "the %s %s is (or passes through) a symbolic link: name the file itself",
                           what, path);
        if (err == EXDEV)
            return str_why(why, why_len, "the %s %s leads out of your home", what, path);
        if (err == ENOENT)
            return str_why(why, why_len, "the %s %s does not exist", what, path);
        return str_why(why, why_len, "the %s %s cannot be opened: %s", what, path, strerror(err));
    }
    struct stat sb;
    if (fstat(*fd, &sb) < 0)
        return str_why(why, why_len, "the %s %s: %s", what, path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return str_why(why, why_len, "the %s %s is not a regular file", what, path);
    if (sb.st_uid != en->uid)
        return str_why(why, why_len, "the %s %s is not yours (its owner is uid %u)", what, path,
                       (unsigned)sb.st_uid);
    if (sb.st_size > TLS_FILE_MAX)
        return str_why(why, why_len, "the %s %s is larger than %d bytes", what, path, TLS_FILE_MAX);
    src_of(&sb, st);
    return 0;
}

/* Read what was opened (at most TLS_FILE_MAX: a file growing meanwhile is
 * caught by the size the next announcement sees). */
static int read_source(int fd, const char *path, const char *what, char **data, size_t *len,
                       char *why, size_t why_len)
{
    if (!(*data = malloc(TLS_FILE_MAX + 1)))
        return str_why(why, why_len, "the node is out of memory");
    size_t used = 0;
    for (;;) {
        ssize_t n = pread(fd, *data + used, TLS_FILE_MAX + 1 - used, (off_t)used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return str_why(why, why_len, "the %s %s cannot be read: %s", what, path,
                           strerror(errno));
        if (n == 0 || (used += (size_t)n) > TLS_FILE_MAX)
            break;
    }
    if (used > TLS_FILE_MAX)
        return str_why(why, why_len, "the %s %s is larger than %d bytes", what, path, TLS_FILE_MAX);
    (*data)[used] = '\0';
    *len = used;
    return 0;
}

static void files_close(struct files *f)
{
    for (int i = 0; i < F_N; i++) {
        if (f->fd[i] >= 0)
            close(f->fd[i]);
        if (f->data[i]) /* a private key: not left in freed memory */
            explicit_bzero(f->data[i], f->len[i]);
        free(f->data[i]);
    }
}

/* Open every source of `en`; fills f (fd -1 for none). */
static int files_open(const subcerts_t *c, const struct entry *en, struct files *f, char *why,
                      size_t why_len)
{
    char home[4200];
    snprintf(home, sizeof home, "%s/%u", c->containers_dir, (unsigned)en->uid);
    int hfd = open(home, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (hfd < 0)
        return str_why(why, why_len, "the node cannot open your home: %s", strerror(errno));
    int rc = 0;
    for (int i = 0; i < F_N && rc == 0; i++)
        if (en->path[i])
            rc = open_source(hfd, en, i, &f->fd[i], &f->st[i], why, why_len);
    close(hfd);
    return rc;
}

/* What OpenSSL parsed of each source, written again as PEM: the copies
 * hold this, never the customer's bytes. */
struct clean {
    char *pem[F_N];
    size_t len[F_N];
};

static void clean_free(struct clean *k)
{
    for (int i = 0; i < F_N; i++)
        if (k->pem[i])
            explicit_bzero(k->pem[i], k->len[i]);
    for (int i = 0; i < F_N; i++)
        free(k->pem[i]);
}

/* Copy path i of `en` (the first field naming it): what every field
 * naming that path parsed, one after the other (a key and its
 * certificate may share a file). */
static int copy_path(const subcerts_t *c, int uidfd, const struct entry *en, int i,
                     const struct clean *k, char *why, size_t why_len)
{
    for (int j = 0; j < i; j++)
        if (en->path[j] && !strcmp(en->path[j], en->path[i]))
            return 0; /* copied with field j */
    size_t len = 0;
    for (int j = i; j < F_N; j++)
        if (en->path[j] && !strcmp(en->path[j], en->path[i]))
            len += k->len[j];
    char *data = malloc(len + 1);
    if (!data)
        return str_why(why, why_len, "the node is out of memory");
    size_t at = 0;
    for (int j = i; j < F_N; j++)
        if (en->path[j] && !strcmp(en->path[j], en->path[i])) {
            memcpy(data + at, k->pem[j], k->len[j]);
            at += k->len[j];
        }
    int rc = copy_one(c, uidfd, en->path[i] + en->home_len, data, len, why, why_len);
    explicit_bzero(data, len);
    free(data);
    return rc;
}

/* Check the PEM text of each file of `en` (data[i], len[i]; the CA's
 * NULL when none) and copy what OpenSSL parsed of it for the router: -1
 * when the files are refused, -2 when the node failed.  The gate's own
 * files (files_install) and a set another legion member sent
 * (subcerts_install_set) both come here: one check, one writer. */
static int clean_and_copy(const subcerts_t *c, const struct entry *en, char *const data[F_N],
                          const size_t len[F_N], char *why, size_t why_len)
{
    char bad[384];
    struct clean k = {0};
    int rc = -1;
    if (tls_clean_pair(data[F_KEY], len[F_KEY], data[F_CRT], len[F_CRT], en->name, NULL,
                       &k.pem[F_KEY], &k.len[F_KEY], &k.pem[F_CRT], &k.len[F_CRT], bad,
                       sizeof bad) < 0)
        str_why(why, why_len, "%s (key %s, certificate %s)", bad, en->path[F_KEY],
                en->path[F_CRT]);
    else if (en->path[F_CA] &&
             tls_clean_ca(data[F_CA], len[F_CA], &k.pem[F_CA], &k.len[F_CA], bad, sizeof bad) < 0)
        str_why(why, why_len, "%s: %s", en->path[F_CA], bad);
    else
        rc = 0;
    int uidfd = rc == 0 ? open_copies(c, en->uid) : -1;
    if (rc == 0 && uidfd < 0) {
        str_why(why, why_len, "the node cannot open the router's copies: %s", strerror(errno));
        rc = -2;
    }
    int i = 0;
    for (; i < F_N && rc == 0; i++)
        if (en->path[i] && copy_path(c, uidfd, en, i, &k, why, why_len) < 0)
            rc = -2;
    if (uidfd >= 0)
        close(uidfd);
    clean_free(&k);
    /* Half a set is no set: the copies this check wrote (a private key
     * among them) go, unless another user names them. */
    if (rc == -2)
        remove_copies_upto(c, en, i);
    return rc;
}

/* Read, check and copy what files_open opened: -1 when the files are
 * refused, -2 when the node failed. */
static int files_install(const subcerts_t *c, const struct entry *en, struct files *f, char *why,
                         size_t why_len)
{
    for (int i = 0; i < F_N; i++)
        if (en->path[i] &&
            read_source(f->fd[i], en->path[i], field[i], &f->data[i], &f->len[i], why, why_len) < 0)
            return -1;
    return clean_and_copy(c, en, f->data, f->len, why, why_len);
}

/* ---- the entries -------------------------------------------------------------- */

static bool str_eq(const char *a, const char *b) { return a && b ? !strcmp(a, b) : a == b; }

static struct entry *entry_find(subcerts_t *c, uid_t uid, const subscription_t *s,
                                const char *const want[F_N])
{
    for (size_t i = 0; i < c->n; i++) {
        struct entry *en = &c->e[i];
        if (en->uid == uid && !strcmp(en->name, s->key) && str_eq(en->path[F_KEY], want[F_KEY]) &&
            str_eq(en->path[F_CRT], want[F_CRT]) && str_eq(en->path[F_CA], want[F_CA]))
            return en;
    }
    return NULL;
}

/* The container's home is still there (a deleted container's is not). */
static bool home_exists(const subcerts_t *c, uid_t uid)
{
    char home[4200];
    struct stat sb;
    snprintf(home, sizeof home, "%s/%u", c->containers_dir, (unsigned)uid);
    return lstat(home, &sb) == 0 || errno != ENOENT;
}

/* Drop entry i (its copies removed). */
static void entry_drop(subcerts_t *c, size_t i)
{
    remove_copies(c, &c->e[i]);
    entry_free(&c->e[i]);
    c->e[i] = c->e[--c->n];
}

/* Drop uid's entries not announced for forget_ms (their copies removed);
 * how many it keeps. */
static size_t expire(subcerts_t *c, uid_t uid, long long now)
{
    size_t held = 0;
    for (size_t i = 0; i < c->n;) {
        struct entry *en = &c->e[i];
        if (en->uid != uid) {
            i++;
        } else if (now - en->seen_ms > c->forget_ms) {
            entry_drop(c, i);
        } else {
            held++;
            i++;
        }
    }
    return held;
}

void subcerts_sweep(subcerts_t *c, long long now_ms)
{
    for (size_t i = 0; c && i < c->n;) {
        if (now_ms - c->e[i].seen_ms > c->forget_ms || !home_exists(c, c->e[i].uid))
            entry_drop(c, i);
        else
            i++;
    }
}

/* Remove everything in directory `fd` (files, and directories once
 * emptied), never following a symbolic link; `depth` bounds the descent
 * (the gate makes no deeper tree: SUBSCRIPTION_PATH_DEPTH).  At the top
 * of a container (top), run/ (its live sockets) is left alone. */
static void empty_dir(int fd, int depth, bool top)
{
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    for (struct dirent *de; (de = readdir(d));) {
        const char *n = de->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || (top && !strcmp(n, "run")))
            continue;
        int sub = openat(dirfd(d), n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub >= 0) {
            if (depth > 0)
                empty_dir(sub, depth - 1, false);
            else
                close(sub); /* deeper than the gate makes: left (rmdir fails) */
            if (unlinkat(dirfd(d), n, AT_REMOVEDIR) < 0 && errno != ENOTEMPTY)
                log_debug("subscription gate: remove %s: %s", n, strerror(errno));
        } else if (errno == ENOTDIR || errno == ELOOP) {
            if (unlinkat(dirfd(d), n, 0) < 0)
                log_debug("subscription gate: remove %s: %s", n, strerror(errno));
        }
    }
    closedir(d);
}

/* At start: no entry exists yet, so no copy under homes/<uid>/ (but run/)
 * is one the router should read; a copy the last run of the node left
 * would otherwise stay for ever. */
static void startup_sweep(const subcerts_t *c)
{
    int top = open(c->router_homes, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = top >= 0 ? fdopendir(top) : NULL;
    if (!d) {
        if (top >= 0)
            close(top);
        return;
    }
    for (struct dirent *de; (de = readdir(d));) {
        if (!de->d_name[0] || strspn(de->d_name, "0123456789") != strlen(de->d_name))
            continue; /* homes/ holds only <uid> directories */
        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0)
            empty_dir(fd, SUBSCRIPTION_PATH_DEPTH, true);
    }
    closedir(d);
}

static struct entry *entry_add(subcerts_t *c, uid_t uid, const subscription_t *s,
                               const char *const want[F_N], long long now, char *why,
                               size_t why_len)
{
    if (expire(c, uid, now) >= c->max_pairs) {
        str_why(why, why_len,
                "the container already uses %zu certificate pairs (one per HTTPS subscription); "
                "stop a vassal using another first",
                c->max_pairs);
        return NULL;
    }
    struct entry *grown = array_room(c->e, c->n, &c->cap, sizeof *grown);
    if (!grown) {
        str_why(why, why_len, "the node is out of memory");
        return NULL;
    }
    c->e = grown;
    struct entry *en = &c->e[c->n];
    *en = (struct entry){.uid = uid, .home_len = s->tls.home_len};
    bool ok = (en->name = strdup(s->key)) != NULL;
    for (int i = 0; i < F_N && ok; i++)
        ok = !want[i] || (en->path[i] = strdup(want[i])) != NULL;
    if (!ok) {
        entry_free(en);
        str_why(why, why_len, "the node is out of memory");
        return NULL;
    }
    c->n++;
    return en;
}

/* The sources are what was last checked (and they were checked once,
 * by a check the node itself did not fail). */
static bool unchanged(const struct entry *en, const struct files *f)
{
    if ((!en->ok && !en->why[0]) || en->node_failed)
        return false;
    for (int i = 0; i < F_N; i++)
        if (en->path[i] && !src_same(&en->st[i], &f->st[i]))
            return false;
    return true;
}

/* Remember an outcome until recheck_ms: a packet every 2 s per
 * subscription costs no file system work in between, and a failure (the
 * node's too) is not tried again at every packet. */
static int remember(struct entry *en, int rc, const char *why, long long now)
{
    en->ok = rc == 0;
    en->node_failed = rc == -2;
    snprintf(en->why, sizeof en->why, "%s", rc == 0 ? "" : why);
    en->recheck_ms = now + (rc == -2 ? SUBCERTS_BACKOFF_MS : SUBCERTS_RECHECK_MS);
    return rc < 0 ? -1 : 0;
}

/* One path of a set is a directory on the way to another
 * (/containers/U/o and /containers/U/o/crt): both cannot be copies. */
static int paths_nested(const char *const path[F_N], char *why, size_t why_len)
{
    for (int i = 0; i < F_N; i++)
        for (int j = 0; j < F_N; j++) {
            size_t n = path[i] ? strlen(path[i]) : 0;
            if (i != j && path[i] && path[j] && !strncmp(path[i], path[j], n) && path[j][n] == '/')
                return str_why(why, why_len, "%s cannot be both a file and the directory of %s",
                               path[i], path[j]);
        }
    return 0;
}

int subcerts_check(subcerts_t *c, uid_t uid, const subscription_t *s, long long now, char *why,
                   size_t why_len)
{
    const char *want[F_N] = {s->tls.key, s->tls.crt, s->tls.ca[0] ? s->tls.ca : NULL};
    if (paths_nested(want, why, why_len) < 0)
        return -1;
    /* subscription_check refuses run/ (the container's live sockets, which
     * the router also sees at homes/<uid>/run); said again here, where the
     * writing is, so no caller can make the gate write there. */
    for (int i = 0; i < F_N; i++)
        if (want[i] && (strlen(want[i]) <= s->tls.home_len ||
                        !strncmp(want[i] + s->tls.home_len, "run/", 4)))
            return str_why(why, why_len, "%s: not a certificate file of your home", want[i]);
    struct entry *en = entry_find(c, uid, s, want);
    if (!en && !(en = entry_add(c, uid, s, want, now, why, why_len)))
        return -1;
    en->seen_ms = now;
    if (en->recheck_ms && now < en->recheck_ms)
        return en->ok ? 0 : str_why(why, why_len, "%s", en->why);
    struct files f = {.fd = {-1, -1, -1}};
    int rc = files_open(c, en, &f, why, why_len);
    if (rc == 0 && unchanged(en, &f)) {
        en->recheck_ms = now + SUBCERTS_RECHECK_MS;
        rc = en->ok ? 0 : str_why(why, why_len, "%s", en->why);
    } else {
        if (rc == 0)
            rc = files_install(c, en, &f, why, why_len);
        /* Remembered with the sources it was about: the same files are not
         * read again, a change is. */
        memcpy(en->st, f.st, sizeof en->st);
        rc = remember(en, rc, why, now);
    }
    files_close(&f);
    return rc;
}

/* ---- sets another member of a legion sent (clustercerts.h) -------------------- */

/* A stand-in entry for a set of files no local container announces. */
static struct entry set_entry(uid_t uid, const char *name, const char *const path[F_N],
                              size_t home_len)
{
    struct entry en = {.uid = uid, .name = (char *)name, .home_len = home_len};
    for (int i = 0; i < F_N; i++)
        en.path[i] = (char *)path[i];
    return en;
}

/* The remote set with en's uid, name and paths. */
static struct entry *remote_find(subcerts_t *c, const struct entry *en)
{
    for (size_t i = 0; i < c->rn; i++) {
        const struct entry *r = &c->r[i];
        if (r->uid == en->uid && !strcmp(r->name, en->name) &&
            str_eq(r->path[F_KEY], en->path[F_KEY]) && str_eq(r->path[F_CRT], en->path[F_CRT]) &&
            str_eq(r->path[F_CA], en->path[F_CA]))
            return &c->r[i];
    }
    return NULL;
}

static struct entry *remote_add(subcerts_t *c, const struct entry *en, char *why, size_t why_len)
{
    struct entry *grown = array_room(c->r, c->rn, &c->rcap, sizeof *grown);
    if (!grown) {
        str_why(why, why_len, "the node is out of memory");
        return NULL;
    }
    c->r = grown;
    struct entry *add = &c->r[c->rn];
    *add = (struct entry){.uid = en->uid, .home_len = en->home_len};
    bool ok = (add->name = strdup(en->name)) != NULL;
    for (int i = 0; i < F_N && ok; i++)
        ok = !en->path[i] || (add->path[i] = strdup(en->path[i])) != NULL;
    if (!ok) {
        entry_free(add);
        str_why(why, why_len, "the node is out of memory");
        return NULL;
    }
    c->rn++;
    return add;
}

/* Forget a remote set; with `copies`, its copies no one else names go. */
static void remote_drop(subcerts_t *c, struct entry *en, bool copies)
{
    if (copies)
        remove_copies(c, en);
    entry_free(en);
    *en = c->r[--c->rn];
}

int subcerts_install_set(subcerts_t *c, uid_t uid, const char *name, const char *const path[3],
                         size_t home_len, char *const pem[3], const size_t len[3], char *why,
                         size_t why_len)
{
    _Static_assert(F_N == 3, "key, certificate, CA");
    for (int i = 0; i < F_N; i++)
        if (path[i] && (strlen(path[i]) <= home_len || !strncmp(path[i] + home_len, "run/", 4)))
            return str_why(why, why_len, "%s: not a certificate file of a home", path[i]);
    if (paths_nested(path, why, why_len) < 0)
        return -1;
    struct entry en = set_entry(uid, name, path, home_len);
    struct entry *held = remote_find(c, &en);
    bool added = !held;
    /* Recorded first: a failed copy then removes what it wrote unless
     * another user names it.  A set held before keeps its record (and the
     * copies the failure left): its owner removes it. */
    if (added && !(held = remote_add(c, &en, why, why_len)))
        return -1;
    int rc = clean_and_copy(c, held, pem, len, why, why_len);
    if (rc < 0 && added)
        remote_drop(c, held, true);
    return rc < 0 ? rc : 0;
}

void subcerts_remove_set(subcerts_t *c, uid_t uid, const char *name, const char *const path[3],
                         size_t home_len)
{
    struct entry en = set_entry(uid, name, path, home_len);
    struct entry *held = remote_find(c, &en);
    if (held)
        remote_drop(c, held, true);
}

const char *subcerts_router_homes(const subcerts_t *c) { return c->router_homes; }
