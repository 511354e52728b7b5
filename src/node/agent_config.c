/* agent_config.c - the daemon's config file (agent.h, docs/NODE.md).
 *
 *   api_url        = http://127.0.0.1:8080     (required)
 *   node_prefix    = /node
 *   server_name    = fooserver                 (required)
 *   secret         = <node_secret>             (or secret_file = PATH)
 *   state_dir      = /var/lib/imperium/state   (required)
 *   containers_dir = /containers               (required)
 *   uwsgi          = /usr/bin/uwsgi
 *   shortcuts      = /etc/imperium/shortcuts.ini
 *   cgroup_root    = /sys/fs/cgroup
 *   cgroup_parent  = imperium
 *   init           = <directory of imperium-node>/imperium-init
 *   pids_max       = 1024      (processes + threads per container)
 *   cpu_weight     = 100       (1-10000, relative between containers)
 *   io_weight      = 100       (1-10000; needs BFQ or iocost)
 *   log_level      = info
 *   distro_host_ok = false
 *   stop_timeout   = 10        (seconds)
 *   restart_grace_ms = 300
 *   router_http    = 0.0.0.0:80   (none: no HTTP router; docs/ROUTER.md)
 *   router_https   = 0.0.0.0:443  (reserved)
 *   router_uwsgi   = /usr/bin/uwsgi
 *   router_user    = imperium-router  (the router's unprivileged user) */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/fsutil.h"
#include "../common/strutil.h"
#include "router.h"

static const char *const known_keys[] = {
    "api_url",     "node_prefix", "server_name",   "secret",         "secret_file",
    "state_dir",   "containers_dir", "uwsgi",      "shortcuts",      "cgroup_root",
    "cgroup_parent", "log_level", "distro_host_ok", "stop_timeout",  "restart_grace_ms",
    "router_http", "router_https", "router_uwsgi", "router_user", "init", "pids_max", "cpu_weight",
    "io_weight", NULL};

static int bad(const agent_cfg_t *c, err_t *e, const char *key, const char *why)
{
    return err_set(e, ERR_INPUT, "%s: %s %s", c->conf.path ? c->conf.path : "config", key, why);
}

static int get_bool(agent_cfg_t *c, const char *key, bool *out, err_t *e)
{
    const char *v = conf_get(&c->conf, key);
    if (!v)
        return 0;
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1") || !strcmp(v, "on"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0") || !strcmp(v, "off"))
        *out = false;
    else
        return bad(c, e, key, "must be true or false");
    return 0;
}

static int get_int(agent_cfg_t *c, const char *key, long long lo, long long hi, int *out,
                   err_t *e)
{
    const char *v = conf_get(&c->conf, key);
    long long n;
    if (!v)
        return 0;
    if (!str_to_ll(v, &n) || n < lo || n > hi) {
        char why[96];
        snprintf(why, sizeof why, "must be a number from %lld to %lld", lo, hi);
        return bad(c, e, key, why);
    }
    *out = (int)n;
    return 0;
}

static int get_path(agent_cfg_t *c, const char *key, bool required, const char **out,
                    err_t *e)
{
    const char *v = conf_get(&c->conf, key);
    if (!v || !*v) {
        if (required)
            return bad(c, e, key, "is required");
        return 0;
    }
    if (v[0] != '/')
        return bad(c, e, key, "must be an absolute path");
    *out = v;
    return 0;
}

/* The first line of the secret file, trimmed. */
static int read_secret(agent_cfg_t *c, const char *path, err_t *e)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return err_set(e, ERR_INPUT, "%s: secret_file %s: %s", c->conf.path, path,
                       strerror(errno));
    char line[512];
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    char *s = str_trim(line);
    if (!*s)
        return err_set(e, ERR_INPUT, "%s: secret_file %s is empty", c->conf.path, path);
    if (!(c->secret = strdup(s)))
        return err_set(e, ERR_INTERNAL, "out of memory");
    return 0;
}

static int check_api(agent_cfg_t *c, err_t *e)
{
    c->api_url = conf_get(&c->conf, "api_url");
    if (!c->api_url || !*c->api_url)
        return bad(c, e, "api_url", "is required (e.g. http://127.0.0.1:8080)");
    if (!str_starts_with(c->api_url, "http://") && !str_starts_with(c->api_url, "https://"))
        return bad(c, e, "api_url", "must start with http:// or https://");
    const char *p = conf_get(&c->conf, "node_prefix");
    c->node_prefix = p ? p : AGENT_DEFAULT_NODE_PREFIX;
    if (c->node_prefix[0] != '/' || strchr(c->node_prefix, '?'))
        return bad(c, e, "node_prefix", "must start with '/'");
    c->server_name = conf_get(&c->conf, "server_name");
    if (!c->server_name || !*c->server_name)
        return bad(c, e, "server_name", "is required (the server's name in the API)");
    if (strchr(c->server_name, ':'))
        return bad(c, e, "server_name", "must not contain ':'");
    const char *secret = conf_get(&c->conf, "secret");
    const char *secret_file = conf_get(&c->conf, "secret_file");
    if ((secret != NULL) == (secret_file != NULL))
        return bad(c, e, "secret", "or secret_file is required (exactly one of them)");
    if (secret_file)
        return read_secret(c, secret_file, e);
    if (!*secret)
        return bad(c, e, "secret", "is empty");
    if (!(c->secret = strdup(secret)))
        return err_set(e, ERR_INTERNAL, "out of memory");
    return 0;
}

static int check_node(agent_cfg_t *c, err_t *e)
{
    node_cfg_t *n = &c->node;
    if (get_path(c, "state_dir", true, &n->state_dir, e) < 0 ||
        get_path(c, "containers_dir", true, &n->containers_dir, e) < 0 ||
        get_path(c, "uwsgi", false, &n->uwsgi, e) < 0 ||
        get_path(c, "shortcuts", false, &n->shortcuts, e) < 0 ||
        get_path(c, "cgroup_root", false, &n->cgroup_root, e) < 0 ||
        get_path(c, "init", false, &n->init, e) < 0 ||
        get_int(c, "pids_max", 1, NODE_PIDS_MAX_MAX, &n->pids_max, e) < 0 ||
        get_int(c, "cpu_weight", 1, 10000, &n->cpu_weight, e) < 0 ||
        get_int(c, "io_weight", 1, 10000, &n->io_weight, e) < 0)
        return -1;
    const char *parent = conf_get(&c->conf, "cgroup_parent");
    if (parent) {
        if (!*parent || strchr(parent, '/') || !strcmp(parent, ".") || !strcmp(parent, ".."))
            return bad(c, e, "cgroup_parent", "must be a single directory name");
        n->cgroup_parent = parent;
    }
    node_cfg_defaults(n);
    c->router_uwsgi = NODE_DEFAULT_UWSGI;
    if (get_path(c, "router_uwsgi", false, &c->router_uwsgi, e) < 0)
        return -1;
    const char *user = conf_get(&c->conf, "router_user");
    c->router_user = user ? user : ROUTER_DEFAULT_USER;
    if (!*c->router_user || strpbrk(c->router_user, " \t:/"))
        return bad(c, e, "router_user", "must be a user name (the router's own user)");
    const char *addrs[2] = {"router_http", "router_https"};
    const char **outs[2] = {&c->router_http, &c->router_https};
    for (int i = 0; i < 2; i++) {
        const char *v = conf_get(&c->conf, addrs[i]);
        if (!v || !*v)
            continue;
        const char *colon = strrchr(v, ':');
        long long port;
        if (!colon || !str_to_ll(colon + 1, &port) || port < 1 || port > 65535 ||
            strpbrk(v, " \t,;"))
            return bad(c, e, addrs[i], "must be ADDRESS:PORT, e.g. 0.0.0.0:80");
        *outs[i] = v;
    }
    if (n->shortcuts && access(n->shortcuts, R_OK) < 0)
        return err_set(e, ERR_INPUT, "%s: shortcuts %s: %s", c->conf.path, n->shortcuts,
                       strerror(errno));
    return 0;
}

int agent_cfg_load(agent_cfg_t *c, const char *path, err_t *e)
{
    memset(c, 0, sizeof *c);
    c->log_level = LOG_INFO;
    c->stop_timeout_ms = AGENT_DEFAULT_STOP_TIMEOUT_S * 1000;
    c->restart_grace_ms = AGENT_DEFAULT_RESTART_GRACE_MS;
    if (conf_load(&c->conf, path, e) < 0)
        return -1;
    if (!c->conf.path) {
        agent_cfg_free(c);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    int stop_s = AGENT_DEFAULT_STOP_TIMEOUT_S;
    const char *level = conf_get(&c->conf, "log_level");
    int rc = 0;
    if (conf_check_keys(&c->conf, known_keys, e) < 0 || check_api(c, e) < 0 ||
        check_node(c, e) < 0 || get_bool(c, "distro_host_ok", &c->distro_host_ok, e) < 0 ||
        get_int(c, "stop_timeout", 0, 3600, &stop_s, e) < 0 ||
        get_int(c, "restart_grace_ms", 0, 60000, &c->restart_grace_ms, e) < 0)
        rc = -1;
    else if (level && log_parse_level(level, &c->log_level) < 0)
        rc = bad(c, e, "log_level", "must be error, warn, info or debug");
    if (rc < 0) {
        agent_cfg_free(c);
        return -1;
    }
    c->stop_timeout_ms = stop_s * 1000;
    return 0;
}

void agent_cfg_free(agent_cfg_t *c)
{
    if (c->secret) {
        explicit_bzero(c->secret, strlen(c->secret));
        free(c->secret);
    }
    conf_free(&c->conf);
    memset(c, 0, sizeof *c);
}

int agent_lock(const agent_cfg_t *c, err_t *e)
{
    const char *dir = c->node.state_dir;
    if (fs_mkdirs(dir, 0700, e) < 0)
        return -1;
    char *path = str_printf("%s/%s", dir, AGENT_LOCK_FILE);
    if (!path)
        return err_set(e, ERR_INTERNAL, "out of memory");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        err_set(e, ERR_INTERNAL, "open %s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int err = errno;
        if (err == EWOULDBLOCK)
            err_set(e, ERR_CONFLICT,
                    "another imperium-node (daemon or stop-all) is running on %s (%s is locked)",
                    dir, path);
        else
            err_set(e, ERR_INTERNAL, "lock %s: %s", path, strerror(err));
        close(fd);
        free(path);
        return -1;
    }
    free(path);
    return fd;
}
