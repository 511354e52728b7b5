/* state.c - the per-container state directory (see state.h). */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/fsutil.h"

int state_path(const char *state_dir, int uid, const char *name, char *out, size_t len, err_t *e)
{
    int n = name ? snprintf(out, len, "%s/%d/%s", state_dir, uid, name)
                 : snprintf(out, len, "%s/%d", state_dir, uid);
    if (n < 0 || (size_t)n >= len)
        return err_set(e, ERR_INPUT, "state directory path too long: %s", state_dir);
    return 0;
}

static int mkdir_one(const char *path, mode_t mode, err_t *e)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return err_set(e, ERR_INTERNAL, "create %s: %s", path, strerror(errno));
    struct stat sb;
    if (lstat(path, &sb) < 0)
        return err_set(e, ERR_INTERNAL, "stat %s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return err_set(e, ERR_INTERNAL, "%s is not a directory", path);
    return 0;
}

int state_prepare(const char *state_dir, int uid, err_t *e)
{
    char path[STATE_PATH_MAX];
    if (mkdir_one(state_dir, 0700, e) < 0)
        return -1;
    if (state_path(state_dir, uid, NULL, path, sizeof path, e) < 0 || mkdir_one(path, 0700, e) < 0)
        return -1;
    if (state_path(state_dir, uid, "rootfs", path, sizeof path, e) < 0 ||
        mkdir_one(path, 0700, e) < 0)
        return -1;
    return 0;
}

static long long get_int(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

static void get_str(const json_t *o, const char *key, char *out, size_t len)
{
    const char *s = json_string_value(json_object_get(o, key));
    snprintf(out, len, "%s", s ? s : "");
}

int state_load(const char *state_dir, int uid, state_t *st, err_t *e)
{
    char path[STATE_PATH_MAX];
    memset(st, 0, sizeof *st);
    st->uid = uid;
    if (state_path(state_dir, uid, "state.json", path, sizeof path, e) < 0)
        return -1;
    if (access(path, F_OK) < 0) {
        if (errno == ENOENT)
            return 0;
        return err_set(e, ERR_INTERNAL, "read %s: %s", path, strerror(errno));
    }
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return err_set(e, ERR_INTERNAL, "read %s: %s", path, j ? "not an object" : je.text);
    }
    st->pid = (pid_t)get_int(j, "pid");
    st->starttime = (unsigned long long)get_int(j, "starttime");
    st->since = get_int(j, "since");
    st->restarts = get_int(j, "restarts");
    st->generation = get_int(j, "generation");
    st->ssh_generation = get_int(j, "ssh_generation");
    get_str(j, "last_error", st->last_error, sizeof st->last_error);
    get_str(j, "cgroup", st->cgroup, sizeof st->cgroup);
    json_decref(j);
    return 1;
}

int state_save(const char *state_dir, const state_t *st, err_t *e)
{
    char path[STATE_PATH_MAX];
    if (state_path(state_dir, st->uid, "state.json", path, sizeof path, e) < 0)
        return -1;
    json_t *j = json_pack(
        "{s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:s}", "uid", st->uid, "pid", (json_int_t)st->pid,
        "starttime", (json_int_t)st->starttime, "since", (json_int_t)st->since, "restarts",
        (json_int_t)st->restarts, "generation", (json_int_t)st->generation, "ssh_generation",
        (json_int_t)st->ssh_generation, "last_error", st->last_error, "cgroup", st->cgroup);
    if (!j)
        return err_set(e, ERR_INTERNAL, "out of memory");
    char *text = json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(j);
    if (!text)
        return err_set(e, ERR_INTERNAL, "out of memory");
    /* The directory is root's alone, so a plain path is safe; the atomic
     * write makes a reader see either the old or the new state, never half
     * of one. */
    int rc = fs_write_atomic(path, text, strlen(text), 0644, e);
    free(text);
    return rc;
}

int proc_stat(pid_t pid, unsigned long long *starttime, char *state)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* comm (field 2) may hold spaces and parentheses: parse after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -1;
    p += 2;
    if (state)
        *state = *p;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    if (starttime)
        *starttime = strtoull(p, NULL, 10);
    return 0;
}

long long proc_uid(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    long long uid = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Uid:", 4) == 0) {
            uid = strtoll(line + 4, NULL, 10);
            break;
        }
    fclose(f);
    return uid;
}

bool state_init_alive(const state_t *st)
{
    if (st->pid <= 0 || st->starttime == 0)
        return false;
    unsigned long long start;
    char s;
    if (proc_stat(st->pid, &start, &s) < 0)
        return false;
    /* A zombie is dead: it only waits for its parent to reap it. */
    if (s == 'Z' || s == 'X' || start != st->starttime)
        return false;
    return proc_uid(st->pid) == st->uid;
}
