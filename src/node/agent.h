/* agent.h - the imperium-node daemon: follows the API's nodes' channel and
 * keeps the containers of this server in line with it (docs/NODE.md).
 *
 *   agent_config.c  the config file (`key = value`, unknown keys are errors)
 *   channel.c       the HTTP side: long poll GET /node/state, POST /node/status
 *   supervisor.c    one record per container: start, restart, stop, adopt
 *   agent.c         the main loop tying them together; stop-all */
#ifndef IMP_NODE_AGENT_H
#define IMP_NODE_AGENT_H

#include <stdbool.h>
#include <sys/types.h>

#include "../common/config.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/settings.h"
#include "../runtime/container.h"
#include "netpolicy.h"
#include "overlay.h"

#define AGENT_DEFAULT_NODE_PREFIX "/node"
#define AGENT_DEFAULT_STOP_TIMEOUT_S 10
#define AGENT_DEFAULT_RESTART_GRACE_MS 300
#define AGENT_DEFAULT_METRICS_INTERVAL_S 60
#define AGENT_LOCK_FILE "imperium-node.lock"

typedef struct {
    conf_t conf;             /* the file; the strings below point into it */
    const char *api_url;     /* http://127.0.0.1:8080, no trailing slash */
    const char *node_prefix; /* /node */
    const char *server_name;
    char *secret;            /* owned: from `secret` or the first line of `secret_file` */
    const char *secret_conf; /* the file's `secret` and `secret_file` (one of them) */
    const char *secret_file;
    node_cfg_t node;         /* state_dir, containers_dir, uwsgi, shortcuts, cgroup */
    bool distro_host_ok;     /* allow the node's own root (/) as a distro */
    enum log_level log_level;
    int stop_timeout_s;    /* the file's stop_timeout; stop_timeout_ms is what counts */
    int stop_timeout_ms;   /* graceful stop of a container no longer wanted */
    int restart_grace_ms;  /* SIGTERM before SIGKILL when restarting */
    const char *router_http;  /* the HTTP router's address; NULL: no router */
    const char *router_https; /* the router's HTTPS address (SNI); NULL: none */
    const char *router_uwsgi; /* host path of the router's uwsgi */
    const char *router_user;  /* the router's unprivileged user (router.h) */
    const char *nft_table;    /* the node's `table inet <name>` (netpolicy.h) */
    const char *uplink;       /* the interface to the world; "": none */
    bool nat;                 /* masquerade the containers out of the uplink */
    const char *nat_deny;     /* what nat never reaches (netpolicy_check_nat_deny) */
    overlay_cfg_t overlay;    /* links across servers (overlay.h) */
    const char *metrics_listen; /* IPV4:PORT of the Prometheus /metrics (nodestats.h); NULL: off */
    int metrics_interval;     /* seconds between metric samples; 0: none (sampler.h) */
    int outbox_max;           /* bodies the channel keeps for the API (channel.h) */
    int outbox_max_bytes;     /* and their bytes */
    int max_subscriptions;    /* router addresses per container (subgate.h) */
    /* cluster-domain (subgate.h, docs/CLUSTER.md): the same on every member. */
    int cluster_port;      /* TCP, the router's fastrouter; 0: no cluster domains */
    int cluster_gate_port; /* UDP, gate to gate */
    /* Legions (legion.h, docs/CLUSTER.md): the same on every member. */
    int legion_port;      /* the legion of API id k uses UDP legion_port + k */
    int legion_freq;      /* uWSGI --legion-freq, seconds */
    int legion_tolerance; /* uWSGI --legion-tolerance, seconds */
    /* Automatic HTTPS (acme.h): auto-ssl-domain certificates. */
    const char *acme_directory; /* the ACME directory URL; NULL: auto-ssl-domain refused */
    const char *acme_ca_bundle; /* the CA bundle uacme trusts; NULL: the system's */
    const char *acme_email;     /* the ACME account's contact; NULL: none */
    int acme_renew_days;        /* renew this many days before expiry */
    int acme_retry;             /* seconds before a failure is tried again */
    /* Alarms and their delivery (alarms.h, deliver.h, docs/ALARMS.md). */
    int quota_check_interval;   /* seconds between quota threshold checks */
    const char *pushover_url, *pushbullet_url;
    const char *slack_hosts;    /* hosts a slack_webhook may name */
    bool alarm_insecure_http;   /* http:// delivery URLs (tests) */
    const char *xmpp_server;    /* host:port instead of the jid's domain; "": none */
    bool xmpp_insecure;         /* no TLS to the XMPP server (tests) */
    const char *wall;           /* imperium-wall; NULL: beside imperium-node */
    const char *quota;        /* loop, project or off: node.quota once loaded (quota.h) */
    int loopbox_remount_delay; /* seconds an image must stay unchanged before it is mounted
                                  (again) after a change (loopboxes.h) */
    int loopbox_max;           /* loopboxes on loop devices per container (loopboxes.h) */
} agent_cfg_t;

#define AGENT_ROUTER_DIR "router" /* <state_dir>/router: docs/ROUTER.md */

/* Every setting of the config file, with its type, bounds, default and help
 * (settings.h): `imperium-node --help` lists them. */
extern const setting_t agent_settings[];

/* Load and check the file; -1 with a message naming the file and key. */
int agent_cfg_load(agent_cfg_t *c, const char *path, err_t *e);
void agent_cfg_free(agent_cfg_t *c);

/* The nft table's settings (netpolicy.h) of a loaded config. */
netpolicy_cfg_t agent_netpolicy_cfg(const agent_cfg_t *c);

/* Take <state_dir>/imperium-node.lock (creating state_dir): one daemon (or
 * stop-all) per node.  Returns the fd to keep open, -1 if someone holds it. */
int agent_lock(const agent_cfg_t *c, err_t *e);

/* The daemon, until SIGTERM/SIGINT.  Containers keep running when it
 * exits; the next run adopts them.  Returns 0 on a clean exit. */
int agent_run(const agent_cfg_t *c);

/* Stop every container of the node (maintenance), refusing while the
 * daemon runs.  Returns 0 when all stopped. */
int agent_stop_all(const agent_cfg_t *c, err_t *e);

#endif
