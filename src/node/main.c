/* main.c - `imperium-node`: the daemon that follows the API, and a thin
 * debug CLI over the container library.
 *
 *   imperium-node run --config FILE      (or: imperium-node -c FILE)
 *   imperium-node stop-all --config FILE
 *   imperium-node net-table --config FILE --state FILE [--apply [--state FILE]...]
 *   imperium-node container start  --spec FILE --state-dir DIR --containers-dir DIR
 *                                  [--shortcuts FILE] [--uwsgi PATH]
 *                                  [--cgroup-root DIR] [--cgroup-parent NAME]
 *                                  [--init PATH] [--pids-max N] [--cpu-weight N]
 *                                  [--io-weight N]
 *   imperium-node container stop   UID --state-dir DIR [--timeout SECONDS]
 *   imperium-node container status UID --state-dir DIR
 *   imperium-node container keys   --spec FILE --state-dir DIR --containers-dir DIR
 *
 * Exit codes: 0 done, 1 the operation failed (the message names the step),
 * 2 usage error.  Only this file prints and decides exit codes. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/strutil.h"
#include "../common/validate.h"
#include "agent.h"
#include "../runtime/container.h"
#include "spec.h"

typedef struct {
    const char *action;
    const char *spec;
    int timeout_s; /* container stop --timeout */
    int uid;
    node_cfg_t cfg;
} args_t;

static void usage(FILE *f)
{
    fputs("usage: imperium-node run --config FILE\n"
          "       imperium-node stop-all --config FILE\n"
          "       imperium-node container ACTION ...\n"
          "\n"
          "  run --config FILE   (or -c FILE)\n"
          "        the daemon: follows the API's node state and starts, restarts and stops\n"
          "        containers to match it; on SIGTERM it exits and the containers keep\n"
          "        running (the next run adopts them)\n"
          "  stop-all --config FILE\n"
          "        stop every container of the node (maintenance); refused while the\n"
          "        daemon runs\n"
          "  net-table --config FILE --state FILE [--apply [--state FILE]...]\n"
          "        the node's nft table for a node state (e.g. <state_dir>/desired.json):\n"
          "        printed, or applied in this network namespace (--apply: each state in\n"
          "        turn, as the daemon would, with the time each took)\n"
          "\n"
          "The config file (key = value lines, docs/NODE.md; api_url, server_name,\n"
          "secret or secret_file, state_dir and containers_dir are required):\n",
          f);
    settings_help_keys(f, agent_settings);
    fputs("\n"
          "Debug commands on one container:\n"
          "  container start --spec FILE --state-dir DIR --containers-dir DIR\n"
          "                  [--shortcuts FILE] [--uwsgi PATH] [--cgroup-root DIR]\n"
          "                  [--cgroup-parent NAME] [--init PATH] [--pids-max N]\n"
          "                  [--cpu-weight N] [--io-weight N]\n"
          "        start a container from a JSON spec; prints its status\n"
          "        (--init: imperium-init, default beside this program; the limits\n"
          "        default to " NODE_DEFAULTS_TEXT ")\n"
          "  container stop UID --state-dir DIR [--timeout SECONDS]\n"
          "        SIGTERM, then SIGKILL after the timeout (default 10); the home stays\n"
          "  container status UID --state-dir DIR\n"
          "        prints {\"state\": running|stopped|failed, \"pid\", \"since\", \"restarts\", "
          "...}\n"
          "  container keys --spec FILE --state-dir DIR --containers-dir DIR\n"
          "        rewrite .ssh/uwsgi_authorized_keys from the spec, without a restart\n"
          "\n"
          "--uwsgi is a path inside the container (default " NODE_DEFAULT_UWSGI ").\n"
          "Exit status: 0 done, 1 the operation failed, 2 usage error.\n",
          f);
}

static int parse_uid(const char *s)
{
    long long id = container_id_from_uid(s);
    return id > 0 ? (int)container_uid(id) : -1;
}

#define AT(field) SETTING_AT(args_t, field)

/* The debug commands' options, --state-dir DIR...: the config file's names
 * (agent_settings) with the same bounds; paths as given.  Defaults are
 * node_cfg_defaults'. */
static const setting_t container_opts[] = {
    {"spec", 0, SET_STRP, AT(spec), .help = "the container, a JSON spec"},
    {"state_dir", 0, SET_STRP, AT(cfg.state_dir), .help = "the containers' state"},
    {"containers_dir", 0, SET_STRP, AT(cfg.containers_dir), .help = "the homes"},
    {"shortcuts", 0, SET_STRP, AT(cfg.shortcuts), .help = "the shortcuts file"},
    {"uwsgi", 0, SET_STRP, AT(cfg.uwsgi), .help = "the Emperor, a path inside the container"},
    {"cgroup_root", 0, SET_STRP, AT(cfg.cgroup_root), .help = "where cgroupfs lives"},
    {"cgroup_parent", 0, SET_STRP, AT(cfg.cgroup_parent),
     .help = "the containers' cgroup sub-tree"},
    {"init", 0, SET_STRP, AT(cfg.init), .help = "imperium-init"},
    {"timeout", 0, SET_INT, AT(timeout_s), .min = 0, .max = 3600},
    {"pids_max", 0, SET_INT, AT(cfg.pids_max), .min = 1, .max = NODE_PIDS_MAX_MAX},
    {"cpu_weight", 0, SET_INT, AT(cfg.cpu_weight), .min = 1, .max = 10000},
    {"io_weight", 0, SET_INT, AT(cfg.io_weight), .min = 1, .max = 10000},
    {NULL},
};

#undef AT

/* The options from argv[i] on; returns 0, or 2 (usage) with a message. */
static int parse_options(int argc, char **argv, int i, args_t *a)
{
    err_t e = {0};
    a->timeout_s = NODE_STOP_TIMEOUT_MS / 1000;
    if (settings_parse_flags(container_opts, a, argc, argv, &i, &e) < 0) {
        fprintf(stderr, "imperium-node: %s\n", e.msg);
        return 2;
    }
    if (i < argc) {
        fprintf(stderr, "imperium-node: unknown argument %s\n", argv[i]);
        return 2;
    }
    return 0;
}

static int need(const char *value, const char *flag)
{
    if (value)
        return 0;
    fprintf(stderr, "imperium-node: %s is required\n", flag);
    return 2;
}

static int parse(int argc, char **argv, args_t *a)
{
    memset(a, 0, sizeof *a);
    if (argc < 3 || strcmp(argv[1], "container") != 0)
        return 2;
    a->action = argv[2];
    int i = 3;
    bool by_uid = strcmp(a->action, "stop") == 0 || strcmp(a->action, "status") == 0;
    bool by_spec = strcmp(a->action, "start") == 0 || strcmp(a->action, "keys") == 0;
    if (!by_uid && !by_spec) {
        fprintf(stderr, "imperium-node: unknown action %s\n", a->action);
        return 2;
    }
    if (by_uid) {
        if (argc < 4 || (a->uid = parse_uid(argv[3])) < 0) {
            fprintf(stderr, "imperium-node: container %s needs a container uid\n", a->action);
            return 2;
        }
        i = 4;
    }
    int rc = parse_options(argc, argv, i, a);
    if (rc)
        return rc;
    if ((rc = need(a->cfg.state_dir, "--state-dir")))
        return rc;
    if (by_spec &&
        ((rc = need(a->spec, "--spec")) || (rc = need(a->cfg.containers_dir, "--containers-dir"))))
        return rc;
    node_cfg_defaults(&a->cfg);
    return 0;
}

static int load_spec(const args_t *a, container_spec_t *spec, err_t *e)
{
    json_error_t je;
    json_t *j = json_load_file(a->spec, 0, &je);
    if (!j)
        return err_set(e, ERR_INPUT, "spec %s: line %d: %s", a->spec, je.line, je.text);
    int rc = spec_cli_parse(j, &a->cfg, spec, e);
    json_decref(j);
    return rc;
}

static int print_status(const args_t *a, int uid, err_t *e)
{
    container_status_t st;
    if (container_status(&a->cfg, uid, &st, e) < 0)
        return -1;
    json_t *j = container_status_json(&st);
    char *s = j ? json_dumps(j, JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!s)
        return err_set(e, ERR_INTERNAL, "out of memory");
    puts(s);
    free(s);
    return 0;
}

static int run(const args_t *a, err_t *e)
{
    if (strcmp(a->action, "status") == 0)
        return print_status(a, a->uid, e);
    if (strcmp(a->action, "stop") == 0) {
        return container_stop(&a->cfg, a->uid, a->timeout_s * 1000, e);
    }
    container_spec_t spec;
    if (load_spec(a, &spec, e) < 0)
        return -1;
    int rc;
    if (strcmp(a->action, "keys") == 0) {
        rc = container_write_keys(&a->cfg, &spec, e);
    } else {
        pid_t pid;
        rc = container_start(&a->cfg, &spec, &pid, e);
        if (rc == 0)
            rc = print_status(a, spec.uid, e);
    }
    container_spec_free(&spec);
    return rc;
}

/* `run` and `stop-all`: [run|stop-all] (-c|--config) FILE.  Returns the
 * exit code, or -1 when argv is not one of these. */
static int daemon_commands(int argc, char **argv)
{
    int i = 1;
    bool stop_all = false;
    if (strcmp(argv[1], "run") == 0 || (stop_all = strcmp(argv[1], "stop-all") == 0))
        i = 2;
    else if (strcmp(argv[1], "-c") != 0 && strcmp(argv[1], "--config") != 0)
        return -1;
    if (argc != i + 2 || (strcmp(argv[i], "-c") != 0 && strcmp(argv[i], "--config") != 0)) {
        fprintf(stderr, "imperium-node: %s needs --config FILE (and nothing else)\n",
                stop_all ? "stop-all" : "run");
        usage(stderr);
        return 2;
    }
    agent_cfg_t cfg;
    err_t e;
    err_clear(&e);
    if (agent_cfg_load(&cfg, argv[i + 1], &e) < 0) {
        fprintf(stderr, "imperium-node: %s\n", e.msg);
        return 1;
    }
    int rc = 0;
    if (!stop_all) {
        rc = agent_run(&cfg) == 0 ? 0 : 1;
    } else if (agent_stop_all(&cfg, &e) < 0) {
        fprintf(stderr, "imperium-node: stop-all: %s\n", e.msg);
        rc = 1;
    }
    agent_cfg_free(&cfg);
    return rc;
}

#define NET_TABLE_STATES_MAX 64

static json_t *net_table_load(const char *path, spec_state_t **out)
{
    err_t e;
    err_clear(&e);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    *out = j ? spec_parse(j, &e) : NULL;
    if (!*out)
        fprintf(stderr, "imperium-node: net-table: %s: %s\n", path, j ? e.msg : je.text);
    return j;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* net-table --apply: each state in turn, as the daemon would (one context,
 * a change of elements only applied as their difference), each timed:
 * render + apply, the bench's figure. */
static int net_table_apply(const netpolicy_cfg_t *pc, char **paths, int n)
{
    err_t e;
    err_clear(&e);
    netpolicy_t *np = netpolicy_new(pc, &e);
    if (!np) {
        fprintf(stderr, "imperium-node: net-table: %s\n", e.msg);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        spec_state_t *s;
        json_t *j = net_table_load(paths[i], &s);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int applied = s ? netpolicy_apply(np, s, &e) : -1;
        double ms = ms_since(&t0);
        bool parsed = s != NULL;
        spec_free(s);
        json_decref(j);
        if (applied < 0) {
            if (parsed)
                fprintf(stderr, "imperium-node: net-table: %s\n", e.msg);
            rc = 1;
        } else {
            printf("%s table inet %s (%s) in %.3f ms\n", applied ? "applied" : "unchanged",
                   pc->table, paths[i], ms);
        }
    }
    netpolicy_free(np);
    return rc;
}

static int net_table_print(const netpolicy_cfg_t *pc, const char *path)
{
    spec_state_t *s;
    json_t *j = net_table_load(path, &s);
    err_t e;
    err_clear(&e);
    char *text = s ? netpolicy_render(pc, s, &e) : NULL;
    spec_free(s);
    json_decref(j);
    if (!text) {
        if (e.msg[0])
            fprintf(stderr, "imperium-node: net-table: %s\n", e.msg);
        return 1;
    }
    fputs(text, stdout);
    free(text);
    return 0;
}

/* `net-table --config FILE --state FILE [--apply [--state FILE]...]`, or
 * -1 when argv is another command: what the node makes of a state. */
static int net_table_command(int argc, char **argv)
{
    if (strcmp(argv[1], "net-table") != 0)
        return -1;
    const char *conf = NULL;
    char *paths[NET_TABLE_STATES_MAX];
    int n = 0;
    bool apply = false, bad = false;
    for (int i = 2; i < argc && !bad; i++) {
        if ((!strcmp(argv[i], "--config") || !strcmp(argv[i], "-c")) && i + 1 < argc)
            conf = argv[++i];
        else if (!strcmp(argv[i], "--state") && i + 1 < argc && n < NET_TABLE_STATES_MAX)
            paths[n++] = argv[++i];
        else if (!strcmp(argv[i], "--apply"))
            apply = true;
        else
            bad = true;
    }
    if (bad || !conf || n == 0 || (!apply && n > 1)) {
        fprintf(stderr, "imperium-node: net-table needs --config FILE --state FILE (--apply: "
                        "up to %d --state)\n",
                NET_TABLE_STATES_MAX);
        usage(stderr);
        return 2;
    }
    agent_cfg_t cfg;
    err_t e;
    err_clear(&e);
    if (agent_cfg_load(&cfg, conf, &e) < 0) {
        fprintf(stderr, "imperium-node: %s\n", e.msg);
        return 1;
    }
    netpolicy_cfg_t pc = agent_netpolicy_cfg(&cfg);
    int rc = apply ? net_table_apply(&pc, paths, n) : net_table_print(&pc, paths[0]);
    agent_cfg_free(&cfg);
    return rc;
}

int main(int argc, char **argv)
{
    args_t a;
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
                      strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return 0;
    }
    int rc = argc >= 2 ? daemon_commands(argc, argv) : -1;
    if (rc < 0 && argc >= 2)
        rc = net_table_command(argc, argv);
    if (rc >= 0)
        return rc;
    rc = parse(argc, argv, &a);
    if (rc) {
        usage(stderr);
        return rc;
    }
    err_t e;
    err_clear(&e);
    if (run(&a, &e) < 0) {
        fprintf(stderr, "imperium-node: container %s: %s\n", a.action, e.msg);
        return 1;
    }
    return 0;
}
