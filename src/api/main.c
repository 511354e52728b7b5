/* main.c - imperium-api: configuration, start-up and clean shutdown. */
#include "../common/config.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "api.h"
#include "changes.h"
#include "db_pool.h"
#include "dns_check.h"
#include "http.h"
#include "resp_cache.h"
#include "schema.h"
#include "workers.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "usage: imperium-api [options]\n"
    "  -c, --config FILE            read settings from FILE (key = value lines)\n"
    "  -l, --listen ADDR            IPv4 address to listen on (default 127.0.0.1)\n"
    "  -p, --port N                 TCP port (default 8080)\n"
    "  -d, --database URL           sqlite:/path/to/imperium.db (default ./imperium.db)\n"
    "      --prefix PATH            customer API prefix (default /api)\n"
    "      --admin-prefix PATH      admin API prefix (default /admin)\n"
    "      --admin-token-file FILE  the supplier's admin token; created if missing\n"
    "      --node-prefix PATH       the nodes' channel prefix (default /node)\n"
    "      --threads N              HTTP threads: read requests, answer cached GETs\n"
    "                               (default: one per two CPUs, 1 to 8)\n"
    "      --workers N              threads running every other request (default 8)\n"
    "      --response-cache-mb N    memory for answers to repeated GETs, kept until\n"
    "                               the next write (default 32; 0 turns it off)\n"
    "      --dns-resolver ADDR      IP or IP:PORT of the DNS server the domain check\n"
    "                               asks (default: the servers of /etc/resolv.conf)\n"
    "      --dns-timeout-ms N       time limit of one domain's DNS check (default 5000)\n"
    "      --log-level LEVEL        error, warn, info or debug (default info)\n"
    "      --migrate-only           apply schema migrations and exit\n"
    "  -h, --help\n";

static const char *const config_keys[] = {
    "listen", "port", "database", "prefix", "admin_prefix", "node_prefix", "admin_token_file",
    "threads", "log_level", "auth_cache_ttl", "dns_resolver", "dns_timeout_ms",
    "response_cache_mb", "workers", "auth_slots", "auth_user_failures",
    "auth_address_failures", "auth_failure_window", NULL,
};

static int set_int(const char *name, const char *v, int lo, int hi, int *out, err_t *e)
{
    long long n;
    if (!str_to_ll(v, &n) || n < lo || n > hi)
        return err_set(e, ERR_INPUT, "%s must be an integer from %d to %d, not '%s'", name, lo,
                       hi, v);
    *out = (int)n;
    return 0;
}

static int set_str(const char *name, const char *v, char *out, size_t len, err_t *e)
{
    if (strlen(v) >= len)
        return err_set(e, ERR_INPUT, "%s is too long", name);
    memcpy(out, v, strlen(v) + 1);
    return 0;
}

static int set_prefix(const char *name, const char *v, char *out, size_t len, err_t *e)
{
    if (v[0] != '/' || (strlen(v) > 1 && v[strlen(v) - 1] == '/'))
        return err_set(e, ERR_INPUT, "%s must start with '/' and not end with one: '%s'", name,
                       v);
    return set_str(name, v, out, len, e);
}

/* One setting, from the config file or a flag. */
static int apply_setting(api_config_t *c, const char *key, const char *v, err_t *e)
{
    if (!strcmp(key, "listen"))
        return set_str(key, v, c->listen_addr, sizeof c->listen_addr, e);
    if (!strcmp(key, "port"))
        return set_int(key, v, 1, 65535, &c->port, e);
    if (!strcmp(key, "database"))
        return set_str(key, v, c->db_url, sizeof c->db_url, e);
    if (!strcmp(key, "prefix"))
        return set_prefix(key, v, c->prefix, sizeof c->prefix, e);
    if (!strcmp(key, "admin_prefix"))
        return set_prefix(key, v, c->admin_prefix, sizeof c->admin_prefix, e);
    if (!strcmp(key, "node_prefix"))
        return set_prefix(key, v, c->node_prefix, sizeof c->node_prefix, e);
    if (!strcmp(key, "admin_token_file"))
        return set_str(key, v, c->admin_token_file, sizeof c->admin_token_file, e);
    if (!strcmp(key, "threads"))
        return set_int(key, v, 1, 256, &c->threads, e);
    if (!strcmp(key, "workers"))
        return set_int(key, v, 1, 256, &c->workers, e);
    if (!strcmp(key, "auth_cache_ttl"))
        return set_int(key, v, 0, 86400, &c->auth_cache_ttl, e);
    if (!strcmp(key, "auth_slots"))
        return set_int(key, v, 1, 256, &c->auth_slots, e);
    if (!strcmp(key, "auth_user_failures"))
        return set_int(key, v, 0, 1000000, &c->auth_user_failures, e);
    if (!strcmp(key, "auth_address_failures"))
        return set_int(key, v, 0, 1000000, &c->auth_address_failures, e);
    if (!strcmp(key, "auth_failure_window"))
        return set_int(key, v, 1, 86400, &c->auth_failure_window, e);
    if (!strcmp(key, "response_cache_mb"))
        return set_int(key, v, 0, 65536, &c->response_cache_mb, e);
    if (!strcmp(key, "dns_resolver")) {
        /* Empty means the system's resolvers (/etc/resolv.conf). */
        if (*v && dns_resolver_check(v, e) < 0)
            return -1;
        return set_str(key, v, c->dns_resolver, sizeof c->dns_resolver, e);
    }
    if (!strcmp(key, "dns_timeout_ms"))
        return set_int(key, v, 100, 600000, &c->dns_timeout_ms, e);
    if (!strcmp(key, "log_level")) {
        enum log_level l;
        if (log_parse_level(v, &l) < 0)
            return err_set(e, ERR_INPUT, "log_level must be error, warn, info or debug");
        log_set_level(l);
        return 0;
    }
    return err_set(e, ERR_INPUT, "unknown setting '%s'", key);
}

/* Read the admin token, or create one (readable by root only) on first start. */
static int load_admin_token(api_t *api, err_t *e)
{
    const char *path = api->cfg.admin_token_file;
    FILE *f = fopen(path, "r");
    if (f) {
        char line[sizeof api->admin_token];
        if (!fgets(line, sizeof line, f))
            line[0] = '\0';
        fclose(f);
        char *t = str_trim(line);
        if (strlen(t) < 16)
            return err_set(e, ERR_INPUT, "admin token in %s is shorter than 16 characters",
                           path);
        snprintf(api->admin_token, sizeof api->admin_token, "%s", t);
        return 0;
    }
    if (errno != ENOENT)
        return err_set(e, ERR_INPUT, "cannot read admin token %s: %s", path, strerror(errno));
    unsigned char raw[24];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(api->admin_token, sizeof api->admin_token, raw, sizeof raw);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return err_set(e, ERR_INPUT, "cannot create admin token %s: %s", path, strerror(errno));
    bool ok = dprintf(fd, "%s\n", api->admin_token) > 0;
    ok &= close(fd) == 0;
    if (!ok)
        return err_set(e, ERR_INTERNAL, "cannot write admin token %s", path);
    log_info("created admin token file %s", path);
    return 0;
}

static int parse_args(api_t *api, int argc, char **argv, bool *migrate_only, err_t *e)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"port", required_argument, NULL, 'p'},
        {"database", required_argument, NULL, 'd'},
        {"prefix", required_argument, NULL, 1},
        {"admin-prefix", required_argument, NULL, 2},
        {"admin-token-file", required_argument, NULL, 3},
        {"threads", required_argument, NULL, 4},
        {"log-level", required_argument, NULL, 5},
        {"migrate-only", no_argument, NULL, 6},
        {"dns-resolver", required_argument, NULL, 7},
        {"dns-timeout-ms", required_argument, NULL, 8},
        {"node-prefix", required_argument, NULL, 9},
        {"response-cache-mb", required_argument, NULL, 10},
        {"workers", required_argument, NULL, 11},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char *const flag_keys[] = {
        [1] = "prefix", [2] = "admin_prefix", [3] = "admin_token_file",
        [4] = "threads", [5] = "log_level", [7] = "dns_resolver", [8] = "dns_timeout_ms",
        [9] = "node_prefix", [10] = "response_cache_mb", [11] = "workers",
    };
    /* The config file first, wherever -c appears, so flags override it. */
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
            conf_t conf;
            if (conf_load(&conf, argv[i + 1], e) < 0)
                return -1;
            int rc = conf_check_keys(&conf, config_keys, e);
            for (size_t k = 0; rc == 0 && k < conf.n; k++)
                rc = apply_setting(&api->cfg, conf.entries[k].key, conf.entries[k].value, e);
            conf_free(&conf);
            if (rc < 0)
                return -1;
        }
    }
    int c;
    while ((c = getopt_long(argc, argv, "c:l:p:d:h", opts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'c': break;
        case 'l': rc = apply_setting(&api->cfg, "listen", optarg, e); break;
        case 'p': rc = apply_setting(&api->cfg, "port", optarg, e); break;
        case 'd': rc = apply_setting(&api->cfg, "database", optarg, e); break;
        case 1: case 2: case 3: case 4: case 5: case 7: case 8: case 9: case 10: case 11:
            rc = apply_setting(&api->cfg, flag_keys[c], optarg, e);
            break;
        case 6: *migrate_only = true; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: return err_set(e, ERR_INPUT, "see imperium-api --help");
        }
        if (rc < 0)
            return -1;
    }
    if (optind < argc)
        return err_set(e, ERR_INPUT, "unexpected argument '%s'", argv[optind]);
    return 0;
}

/* One HTTP thread per two CPUs.  They never block (workers.h) and one
 * answers ~80k cached GETs a second; the other half of the CPUs is for the
 * kernel's TCP work (most of a request's cost), the workers and the node's
 * containers.  One per CPU gave ~15 % more cached reads but a p99 over
 * 5 ms, waiting for the CPU (docs/PERFORMANCE.md). */
static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN) / 2;
    return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

/* argon2 checks at once: one per two CPUs (each takes a CPU for ~100 ms
 * and 64 MiB), and at most a quarter of the workers, so that checks and
 * their waiters (as many) leave most workers to other requests. */
static int default_auth_slots(int workers)
{
    int most = workers / 4 > 0 ? workers / 4 : 1;
    int n = default_threads();
    return n < most ? n : most;
}

int main(int argc, char **argv)
{
    api_t api = {
        .cfg = {.listen_addr = "127.0.0.1", .port = 8080, .db_url = "sqlite:imperium.db",
                .prefix = "/api", .admin_prefix = "/admin", .node_prefix = "/node",
                .admin_token_file = "admin.token", .threads = default_threads(), .workers = 8,
                .auth_cache_ttl = 300,
                .auth_user_failures = 30, .auth_address_failures = 15,
                .auth_failure_window = 300,
                .response_cache_mb = 32,
                .dns_timeout_ms = DNS_DEFAULT_TIMEOUT_MS},
    };
    err_t e = {0};
    bool migrate_only = false;
    /* Before any thread, so no file (the database, its -wal and -shm, the
     * admin token) is ever created readable by others. */
    umask(077);
    if (sodium_init() < 0) {
        fprintf(stderr, "imperium-api: libsodium failed to initialise\n");
        return 1;
    }
    if (parse_args(&api, argc, argv, &migrate_only, &e) < 0) {
        fprintf(stderr, "imperium-api: %s\n", e.msg);
        return 2;
    }
    if (api.cfg.auth_slots == 0)
        api.cfg.auth_slots = default_auth_slots(api.cfg.workers);
    if (dns_check_init(&e) < 0) {
        fprintf(stderr, "imperium-api: %s\n", e.msg);
        return 1;
    }
    /* Signals are taken by sigwait below, never by a worker thread. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    http_server_t *srv = NULL;
    /* One connection per thread that may use one: workers, and HTTP threads
     * for the nodes' channel. */
    if (db_pool_open(&api.pool, api.cfg.db_url, api.cfg.workers + api.cfg.threads, &e) < 0 ||
        schema_migrate(api.pool.conns[0], &e) < 0) {
        log_error("database %s: %s", api.cfg.db_url, e.msg);
        goto out;
    }
    if (migrate_only) {
        rc = 0;
        goto out;
    }
    /* A cached answer skips the password check: it lives no longer than a
     * verified password does in the auth cache. */
    if (load_admin_token(&api, &e) < 0 || !(api.auth = auth_cache_new(api.cfg.auth_cache_ttl)) ||
        auth_limits_init(&api, &e) < 0 ||
        !(api.responses = resp_cache_new(api.cfg.auth_cache_ttl,
                                         (size_t)api.cfg.response_cache_mb << 20)) ||
        !(api.changes = changes_new()) || changes_start(api.changes) < 0 ||
        !(api.workers = workers_start(api.cfg.workers, &e))) {
        log_error("%s", e.msg[0] ? e.msg : "out of memory");
        goto out;
    }
    if (!(srv = http_start(&api, &e))) {
        log_error("%s", e.msg);
        goto out;
    }
    log_info("imperium-api listening on http://%s:%d%s (admin %s, database %s)",
             api.cfg.listen_addr, api.cfg.port, api.cfg.prefix, api.cfg.admin_prefix,
             api.cfg.db_url);
    int sig;
    sigwait(&sigs, &sig);
    log_info("signal %d: shutting down", sig);
    rc = 0;
out:
    /* Long polls and the workers' requests first: libmicrohttpd cannot stop
     * with suspended requests. */
    changes_shutdown(api.changes);
    workers_stop(api.workers);
    http_stop(srv);
    workers_free(api.workers);
    changes_free(api.changes);
    auth_cache_free(api.auth);
    auth_limits_free(&api);
    resp_cache_free(api.responses);
    db_pool_close(&api.pool);
    sodium_memzero(api.admin_token, sizeof api.admin_token);
    dns_check_cleanup();
    return rc;
}
