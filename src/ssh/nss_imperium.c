/* nss_imperium.c - libnss_imperium.so.2: the glibc NSS module that makes a
 * container's uid a user of the node, so that sshd accepts `ssh 30009@node`
 * without a line per container in /etc/passwd.
 *
 * passwd and group lookups (by name or number) answer for N in 30001 ..
 * INT_MAX when <containers_dir>/N is a directory:
 *
 *     N:*:N:N:container N:<containers_dir>/N:<shell>
 *     N:*:N:
 *
 * The password field "*" matches no password (and sshd is configured for
 * keys only anyway).  Settings come from one root-owned file, never from the
 * environment (NSS modules run inside setuid and privileged programs):
 * IMP_SSH_CONF, /etc/imperium/ssh.conf unless compiled otherwise, with
 * `containers_dir = ...` and `shell = ...` (other keys are the enter
 * helper's).  A missing or unsafe file means "no such user": the module
 * never invents users.  Enumeration (getpwent) lists nothing. */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <nss.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

/* UID_BASE only: this module is built from this file alone. */
#include "../common/validate.h"

#ifndef IMP_SSH_CONF
#define IMP_SSH_CONF "/etc/imperium/ssh.conf"
#endif
#define IMP_DEFAULT_SHELL "/usr/lib/imperium/imperium-enter"

typedef struct {
    char containers_dir[PATH_MAX];
    char shell[PATH_MAX];
} nss_cfg_t;

static void trim(char *s)
{
    char *p = s;
    while (*p == ' ' || *p == '\t')
        p++;
    memmove(s, p, strlen(p) + 1);
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/* 0: loaded; -1: missing, unsafe or without containers_dir. */
static int load_cfg(nss_cfg_t *c)
{
    snprintf(c->shell, sizeof c->shell, "%s", IMP_DEFAULT_SHELL);
    c->containers_dir[0] = '\0';
    FILE *f = fopen(IMP_SSH_CONF, "re");
    if (!f)
        return -1;
    struct stat st;
    /* Only root may say who the users are. */
    if (fstat(fileno(f), &st) < 0 || st.st_uid != 0 || (st.st_mode & 022)) {
        fclose(f);
        return -1;
    }
    char line[PATH_MAX + 64];
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        char *key = line, *val = eq + 1;
        trim(key);
        trim(val);
        if (strcmp(key, "containers_dir") == 0)
            snprintf(c->containers_dir, sizeof c->containers_dir, "%s", val);
        else if (strcmp(key, "shell") == 0)
            snprintf(c->shell, sizeof c->shell, "%s", val);
    }
    fclose(f);
    return c->containers_dir[0] == '/' ? 0 : -1;
}

/* The uid a name stands for, or -1: digits only, no sign, no leading 0. */
static long parse_name(const char *name)
{
    if (!name || name[0] < '1' || name[0] > '9' || strlen(name) > 10)
        return -1;
    long v = 0;
    for (const char *p = name; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* 0 and the config when uid is a container of this node. */
static int known(long uid, nss_cfg_t *c, char *home, size_t len)
{
    if (uid <= UID_BASE || uid > INT_MAX || load_cfg(c) < 0)
        return -1;
    int n = snprintf(home, len, "%s/%ld", c->containers_dir, uid);
    struct stat st;
    if (n < 0 || (size_t)n >= len || stat(home, &st) < 0 || !S_ISDIR(st.st_mode))
        return -1;
    return 0;
}

/* Copy s into the caller's buffer; NULL when it does not fit. */
static char *put(char **buf, size_t *left, const char *s)
{
    size_t n = strlen(s) + 1;
    if (n > *left)
        return NULL;
    char *out = memcpy(*buf, s, n);
    *buf += n;
    *left -= n;
    return out;
}

static enum nss_status fill_pw(long uid, struct passwd *pw, char *buf, size_t len, int *errnop)
{
    nss_cfg_t c;
    char home[PATH_MAX], name[16], gecos[32];
    if (known(uid, &c, home, sizeof home) < 0) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    snprintf(name, sizeof name, "%ld", uid);
    snprintf(gecos, sizeof gecos, "container %ld", uid);
    if (!(pw->pw_name = put(&buf, &len, name)) || !(pw->pw_passwd = put(&buf, &len, "*")) ||
        !(pw->pw_gecos = put(&buf, &len, gecos)) || !(pw->pw_dir = put(&buf, &len, home)) ||
        !(pw->pw_shell = put(&buf, &len, c.shell))) {
        *errnop = ERANGE;
        return NSS_STATUS_TRYAGAIN;
    }
    pw->pw_uid = (uid_t)uid;
    pw->pw_gid = (gid_t)uid;
    return NSS_STATUS_SUCCESS;
}

static enum nss_status fill_gr(long gid, struct group *gr, char *buf, size_t len, int *errnop)
{
    nss_cfg_t c;
    char home[PATH_MAX], name[16];
    if (known(gid, &c, home, sizeof home) < 0) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    snprintf(name, sizeof name, "%ld", gid);
    /* The member list: one NULL pointer, aligned inside buf. */
    size_t pad = (sizeof(char *) - ((size_t)buf % sizeof(char *))) % sizeof(char *);
    if (len < pad + sizeof(char *)) {
        *errnop = ERANGE;
        return NSS_STATUS_TRYAGAIN;
    }
    char **mem = (char **)(void *)(buf + pad);
    mem[0] = NULL;
    buf += pad + sizeof(char *);
    len -= pad + sizeof(char *);
    if (!(gr->gr_name = put(&buf, &len, name)) || !(gr->gr_passwd = put(&buf, &len, "*"))) {
        *errnop = ERANGE;
        return NSS_STATUS_TRYAGAIN;
    }
    gr->gr_mem = mem;
    gr->gr_gid = (gid_t)gid;
    return NSS_STATUS_SUCCESS;
}

#define EXPORT __attribute__((visibility("default")))

EXPORT enum nss_status _nss_imperium_getpwnam_r(const char *name, struct passwd *pw, char *buf,
                                                size_t len, int *errnop);
EXPORT enum nss_status _nss_imperium_getpwuid_r(uid_t uid, struct passwd *pw, char *buf,
                                                size_t len, int *errnop);
EXPORT enum nss_status _nss_imperium_getgrnam_r(const char *name, struct group *gr, char *buf,
                                                size_t len, int *errnop);
EXPORT enum nss_status _nss_imperium_getgrgid_r(gid_t gid, struct group *gr, char *buf,
                                                size_t len, int *errnop);

enum nss_status _nss_imperium_getpwnam_r(const char *name, struct passwd *pw, char *buf,
                                         size_t len, int *errnop)
{
    long uid = parse_name(name);
    if (uid < 0) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    return fill_pw(uid, pw, buf, len, errnop);
}

enum nss_status _nss_imperium_getpwuid_r(uid_t uid, struct passwd *pw, char *buf, size_t len,
                                         int *errnop)
{
    return fill_pw((long)uid, pw, buf, len, errnop);
}

enum nss_status _nss_imperium_getgrnam_r(const char *name, struct group *gr, char *buf,
                                         size_t len, int *errnop)
{
    long gid = parse_name(name);
    if (gid < 0) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    return fill_gr(gid, gr, buf, len, errnop);
}

enum nss_status _nss_imperium_getgrgid_r(gid_t gid, struct group *gr, char *buf, size_t len,
                                         int *errnop)
{
    return fill_gr((long)gid, gr, buf, len, errnop);
}
