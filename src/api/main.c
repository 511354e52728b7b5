/* main.c - imperium-api: configuration, start-up and clean shutdown. */
#include "../common/config.h"
#include "../common/log.h"
#include "../common/settings.h"
#include "../common/strutil.h"
#include "alarms.h"
#include "auth.h"
#include "changes.h"
#include "db_pool.h"
#include "dns_check.h"
#include "server.h"
#include "resp_cache.h"
#include "routes.h"
#include "../common/schema.h"
#include "stats.h"
#include "throttle.h"
#include "workers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

/* What the command line and the config file set: the daemon's config plus
 * what only the command line says. */
typedef struct {
    api_config_t cfg;
    enum log_level log_level;
    const char *config; /* -c FILE: read before the other flags, which win */
    bool migrate_only;
    bool help;
} api_opts_t;

static int check_prefix(const setting_t *s, const char *v, err_t *e)
{
    if (v[0] != '/' || (strlen(v) > 1 && v[strlen(v) - 1] == '/'))
        return err_set(e, ERR_INPUT, "%s must start with '/' and not end with one: '%s'",
                       s->name, v);
    return 0;
}

/* Empty means the system's resolvers (/etc/resolv.conf). */
static int check_resolver(const setting_t *s, const char *v, err_t *e)
{
    (void)s;
    return *v ? dns_resolver_check(v, e) : 0;
}

#define AT(field) SETTING_AT(api_opts_t, field)

/* Every setting of imperium-api: config key, flag and --help (docs/OPERATING.md). */
static const setting_t api_settings[] = {
    {"config", 'c', SET_STRP, AT(config), .flags = SET_CMDLINE, .meta = "FILE",
     .help = "read settings from FILE (key = value lines); flags override it"},
    {"listen", 'l', SET_STR, AT(cfg.listen_addr), .def = "127.0.0.1", .meta = "ADDR",
     .help = "IPv4 address to listen on"},
    {"port", 'p', SET_INT, AT(cfg.port), .min = 1, .max = 65535, .idef = 8080, .meta = "N",
     .help = "TCP port"},
    {"database", 'd', SET_STR, AT(cfg.db_url), .def = "sqlite:imperium.db", .meta = "URL",
     .help = "sqlite:/path/to/imperium.db"},
    {"prefix", 0, SET_STR, AT(cfg.prefix), .def = "/api", .check = check_prefix,
     .meta = "PATH", .help = "customer API prefix"},
    {"admin_prefix", 0, SET_STR, AT(cfg.admin_prefix), .def = "/admin", .check = check_prefix,
     .meta = "PATH", .help = "admin API prefix"},
    {"admin_token_file", 0, SET_STR, AT(cfg.admin_token_file), .def = "admin.token",
     .meta = "FILE", .help = "the supplier's admin token; created if missing"},
    {"node_prefix", 0, SET_STR, AT(cfg.node_prefix), .def = "/node", .check = check_prefix,
     .meta = "PATH", .help = "the nodes' channel prefix"},
    {"threads", 0, SET_INT, AT(cfg.threads), .min = 1, .max = 256, .flags = SET_NO_DEFAULT,
     .meta = "N",
     .help = "HTTP threads: read requests, answer cached GETs (default: one per two CPUs, "
             "1 to 8)"},
    {"workers", 0, SET_INT, AT(cfg.workers), .min = 1, .max = 256, .idef = 8, .meta = "N",
     .help = "threads running every other request"},
    {"response_cache_mb", 0, SET_INT, AT(cfg.response_cache_mb), .min = 0, .max = 65536,
     .idef = 32, .meta = "N",
     .help = "memory for answers to repeated GETs, kept until the next write (0 turns it "
             "off)"},
    {"long_poll_recheck_ms", 0, SET_INT, AT(cfg.long_poll_recheck_ms), .min = 50,
     .max = 60000, .idef = 500, .meta = "MS",
     .help = "how often the nodes' suspended long polls check their deadline and state "
             "without a change to wake them (a change wakes them at once)"},
    {"dns_resolver", 0, SET_STR, AT(cfg.dns_resolver), .check = check_resolver,
     .flags = SET_NO_DEFAULT, .meta = "ADDR",
     .help = "IP or IP:PORT of the DNS server the domain check asks (default: the servers "
             "of /etc/resolv.conf)"},
    {"dns_timeout_ms", 0, SET_INT, AT(cfg.dns_timeout_ms), .min = 100, .max = 600000,
     .idef = DNS_DEFAULT_TIMEOUT_MS, .meta = "N",
     .help = "time limit of one domain's DNS check"},
    {"log_level", 0, SET_LOG_LEVEL, AT(log_level), .idef = LOG_INFO, .meta = "LEVEL",
     .help = "error, warn, info or debug"},
    {"auth_cache_ttl", 0, SET_INT, AT(cfg.auth_cache_ttl), .min = 0, .max = 86400,
     .idef = 300, .meta = "SECONDS",
     .help = "how long a verified password stays cached (0: no cache, and no response "
             "cache)"},
    {"auth_slots", 0, SET_INT, AT(cfg.auth_slots), .min = 1, .max = 256,
     .flags = SET_NO_DEFAULT, .meta = "N",
     .help = "argon2 checks at once (default: one per two CPUs, at most workers / 4, at "
             "least 1)"},
    {"auth_user_failures", 0, SET_INT, AT(cfg.auth_user_failures), .min = 0, .max = 1000000,
     .idef = 30, .meta = "N",
     .help = "failed password checks of one username allowed at once (0: no limit)"},
    {"auth_address_failures", 0, SET_INT, AT(cfg.auth_address_failures), .min = 0,
     .max = 1000000, .idef = 15, .meta = "N",
     .help = "failed password checks of one client address allowed at once (0: no limit)"},
    {"auth_failure_window", 0, SET_INT, AT(cfg.auth_failure_window), .min = 1, .max = 86400,
     .idef = 300, .meta = "SECONDS",
     .help = "seconds in which a throttled username or address gets its allowance back"},
    /* 120: a burst fills a whole default ring (max_alarms 100) at once, as
     * the public platform (no limit) let a client do. */
    {"alarm_raises", 0, SET_INT, AT(cfg.alarm_raises), .min = 0, .max = 1000000, .idef = 120,
     .meta = "N",
     .help = "alarms raised for one container allowed at once, and per minute after that "
             "(0: no limit)"},
    {"migrate_only", 0, SET_BOOL, AT(migrate_only), .flags = SET_CMDLINE,
     .help = "apply schema migrations and exit"},
    {"help", 'h', SET_BOOL, AT(help), .flags = SET_CMDLINE, .help = "this text"},
    {NULL},
};

#undef AT

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

static void usage(void)
{
    fputs("usage: imperium-api [options]\n", stdout);
    settings_help_flags(stdout, api_settings);
}

static int default_threads(void);

/* Defaults < the config file (-c, wherever it is) < the other flags. */
static int parse_args(api_opts_t *o, int argc, char **argv, err_t *e)
{
    /* --help first: a broken config file or another bad flag still gets it. */
    const char *help = settings_find_flag(api_settings, "help", argc, argv);
    if (help && strcmp(help, "false") != 0 && strcmp(help, "no") != 0 &&
        strcmp(help, "off") != 0 && strcmp(help, "0") != 0) {
        usage();
        exit(0);
    }
    if (settings_defaults(api_settings, o, e) < 0)
        return -1;
    o->cfg.threads = default_threads();
    const char *path = settings_find_flag(api_settings, "config", argc, argv);
    if (path) {
        conf_t conf;
        int rc = settings_load_file(api_settings, o, &conf, path, e);
        conf_free(&conf); /* the API's strings are copies (SET_STR) */
        if (rc < 0)
            return -1;
    }
    int i = 1;
    if (settings_parse_flags(api_settings, o, argc, argv, &i, e) < 0) {
        char why[sizeof e->msg];
        snprintf(why, sizeof why, "%s", e->msg);
        return err_set(e, ERR_INPUT, "%s (see imperium-api --help)", why);
    }
    if (o->help) {
        usage();
        exit(0);
    }
    if (i < argc)
        return err_set(e, ERR_INPUT, "unexpected argument '%s'", argv[i]);
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
    api_t api = {0};
    api_opts_t opts = {0};
    err_t e = {0};
    /* Before any thread, so no file (the database, its -wal and -shm, the
     * admin token) is ever created readable by others. */
    umask(077);
    if (sodium_init() < 0) {
        fprintf(stderr, "imperium-api: libsodium failed to initialise\n");
        return 1;
    }
    if (parse_args(&opts, argc, argv, &e) < 0) {
        fprintf(stderr, "imperium-api: %s\n", e.msg);
        return 2;
    }
    api.cfg = opts.cfg;
    log_set_level(opts.log_level);
    bool migrate_only = opts.migrate_only;
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
    server_t *srv = NULL;
    char url[512]; /* the database URL as logged: no password */
    /* One connection per thread that may use one: workers, and HTTP threads
     * for the nodes' channel. */
    if (db_pool_open(&api.pool, api.cfg.db_url, api.cfg.workers + api.cfg.threads, &e) < 0 ||
        schema_migrate(api.pool.conns[0], &e) < 0) {
        log_error("database %s: %s", db_url_redacted(api.cfg.db_url, url, sizeof url), e.msg);
        goto out;
    }
    /* Which backend, as the pool found it: a shared one lets other
     * instances serve the same database (docs/OPERATING.md). */
    log_info("database %s: %s", db_url_redacted(api.cfg.db_url, url, sizeof url),
             api.pool.shared ? "PostgreSQL, shared with any other imperium-api on it"
                             : "SQLite, this process's alone (claimed)");
    if (migrate_only) {
        rc = 0;
        goto out;
    }
    /* A cached answer skips the password check: it lives no longer than a
     * verified password does in the auth cache. */
    if (load_admin_token(&api, &e) < 0 ||
        (!(api.auth = auth_cache_new(api.cfg.auth_cache_ttl)) &&
         err_set(&e, ERR_INTERNAL, "the auth cache: out of memory") < 0) ||
        auth_limits_init(&api, &e) < 0 ||
        (!(api.alarm_raises = throttle_new(ALARM_RAISE_KEYS, api.cfg.alarm_raises, 60)) &&
         err_set(&e, ERR_INTERNAL, "the alarm raise limit: out of memory") < 0) ||
        (!(api.responses = resp_cache_new(api.cfg.auth_cache_ttl,
                                          (size_t)api.cfg.response_cache_mb << 20)) &&
         err_set(&e, ERR_INTERNAL, "the response cache: out of memory") < 0) ||
        (!(api.changes = changes_new(api.pool.conns[0], api.cfg.long_poll_recheck_ms)) &&
         err_set(&e, ERR_INTERNAL, "the changes feed: out of memory") < 0) ||
        changes_start(api.changes, &e) < 0 ||
        (!(api.stats = api_stats_new(customer_tables, admin_tables, node_tables)) &&
         err_set(&e, ERR_INTERNAL, "the request counters: out of memory") < 0) ||
        !(api.workers = workers_start(api.cfg.workers, &e))) {
        log_error("%s", e.msg[0] ? e.msg : "start-up failed");
        goto out;
    }
    if (!(srv = server_start(&api, &e))) {
        log_error("%s", e.msg);
        goto out;
    }
    log_info("imperium-api listening on http://%s:%d%s (admin %s, database %s)",
             api.cfg.listen_addr, api.cfg.port, api.cfg.prefix, api.cfg.admin_prefix,
             db_url_redacted(api.cfg.db_url, url, sizeof url));
    /* imperium-api.service is Type=notify: started once it listens (the
     * schema migrated, the admin token written).  A no-op without
     * $NOTIFY_SOCKET (not under systemd). */
    sd_notify(0, "READY=1");
    int sig;
    sigwait(&sigs, &sig);
    log_info("signal %d: shutting down", sig);
    sd_notify(0, "STOPPING=1");
    rc = 0;
out:
    /* Long polls and the workers' requests first: libmicrohttpd cannot stop
     * with suspended requests. */
    changes_shutdown(api.changes);
    workers_stop(api.workers);
    server_stop(srv);
    workers_free(api.workers);
    changes_free(api.changes);
    auth_cache_free(api.auth);
    auth_limits_free(&api);
    throttle_free(api.alarm_raises);
    resp_cache_free(api.responses);
    api_stats_free(api.stats);
    db_pool_close(&api.pool);
    sodium_memzero(api.admin_token, sizeof api.admin_token);
    dns_check_cleanup();
    return rc;
}
