/* agent_config.c - the daemon's config file (agent.h, docs/NODE.md): the
 * table agent_settings below names every key with its type, bounds, default
 * and help; the rules that tie keys together (secret or secret_file, a
 * readable shortcuts file) are checked after the file is read. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/fsutil.h"
#include "../common/strutil.h"
#include "../runtime/cgroup.h"
#include "../runtime/net.h"
#include "../runtime/quota.h"
#include "acme.h"
#include "alarms.h"
#include "channel.h"
#include "legion.h"
#include "loopboxes.h"
#include "netpolicy.h"
#include "nodestats.h"
#include "router.h"
#include "subgate.h"

static int bad(const agent_cfg_t *c, err_t *e, const char *key, const char *why)
{
    return err_set(e, ERR_INPUT, "%s: %s %s", c->conf.path ? c->conf.path : "config", key, why);
}

static int check_url(const setting_t *s, const char *v, err_t *e)
{
    if (*v && !str_starts_with(v, "http://") && !str_starts_with(v, "https://"))
        return err_set(e, ERR_INPUT, "%s must start with http:// or https://", s->name);
    return 0;
}

/* ACME is spoken over HTTPS only (RFC 8555 6.1). */
static int check_acme_directory(const setting_t *s, const char *v, err_t *e)
{
    if (*v && (!str_starts_with(v, "https://") || strlen(v) > 1024 || strpbrk(v, " \t\n")))
        return err_set(e, ERR_INPUT, "%s must be an https:// URL (or empty: no ACME)", s->name);
    return 0;
}

static int check_email(const setting_t *s, const char *v, err_t *e)
{
    const char *at = strchr(v, '@');
    if (*v && (!at || at == v || !at[1] || strpbrk(v, " \t\n,;:<>\"'") || strlen(v) > 254))
        return err_set(e, ERR_INPUT, "%s must be an e-mail address (or empty: none)", s->name);
    return 0;
}

static int check_prefix(const setting_t *s, const char *v, err_t *e)
{
    if (v[0] != '/' || strchr(v, '?'))
        return err_set(e, ERR_INPUT, "%s must start with '/'", s->name);
    return 0;
}

static int check_server_name(const setting_t *s, const char *v, err_t *e)
{
    if (strchr(v, ':'))
        return err_set(e, ERR_INPUT, "%s must not contain ':'", s->name);
    return 0;
}

static int check_dir_name(const setting_t *s, const char *v, err_t *e)
{
    if (!*v || strchr(v, '/') || !strcmp(v, ".") || !strcmp(v, ".."))
        return err_set(e, ERR_INPUT, "%s must be a single directory name", s->name);
    return 0;
}

static int check_user(const setting_t *s, const char *v, err_t *e)
{
    if (!*v || strpbrk(v, " \t:/"))
        return err_set(e, ERR_INPUT, "%s must be a user name (the router's own user)", s->name);
    return 0;
}

/* ADDRESS:PORT, or empty: no listener. */
static int check_address(const setting_t *s, const char *v, err_t *e)
{
    if (!*v)
        return 0;
    const char *colon = strrchr(v, ':');
    long long port;
    if (!colon || !str_to_ll(colon + 1, &port) || port < 1 || port > 65535 ||
        strpbrk(v, " \t,;"))
        return err_set(e, ERR_INPUT, "%s must be ADDRESS:PORT, e.g. 0.0.0.0:80", s->name);
    return 0;
}

/* IPV4:PORT, or empty: no Prometheus server. */
static int check_metrics_listen(const setting_t *s, const char *v, err_t *e)
{
    return *v ? nodestats_check_listen(s->name, v, e) : 0;
}

static int check_cidr(const setting_t *s, const char *v, err_t *e)
{
    uint32_t addr;
    int len;
    return net_parse_cidr(v, &addr, &len, s->name, e);
}

static int check_ipv4(const setting_t *s, const char *v, err_t *e)
{
    uint32_t addr;
    return net_parse_ip(v, &addr, s->name, e);
}

static int check_nft_table(const setting_t *s, const char *v, err_t *e)
{
    (void)s;
    return netpolicy_check_table(v, e);
}

static int check_nat_deny(const setting_t *s, const char *v, err_t *e)
{
    (void)s;
    return netpolicy_check_nat_deny(v, e);
}

static int check_uplink(const setting_t *s, const char *v, err_t *e)
{
    (void)s;
    return netpolicy_check_ifname(v, e);
}

static int check_veth_prefix(const setting_t *s, const char *v, err_t *e)
{
    (void)s;
    return net_check_prefix(v, e);
}

static int check_quota(const setting_t *s, const char *v, err_t *e)
{
    if (quota_kind_parse(v) < 0)
        return err_set(e, ERR_INPUT, "%s must be loop, project or off", s->name);
    return 0;
}

#define AT(field) SETTING_AT(agent_cfg_t, field)

const setting_t agent_settings[] = {
    {"api_url", 0, SET_STRP, AT(api_url), .flags = SET_REQUIRED, .check = check_url,
     .meta = "URL", .help = "the API, e.g. http://127.0.0.1:8080"},
    {"node_prefix", 0, SET_STRP, AT(node_prefix), .def = AGENT_DEFAULT_NODE_PREFIX,
     .check = check_prefix, .meta = "PATH", .help = "the API's nodes' channel prefix"},
    {"server_name", 0, SET_STRP, AT(server_name), .flags = SET_REQUIRED,
     .check = check_server_name, .meta = "NAME", .help = "the server's name in the API"},
    {"secret", 0, SET_STRP, AT(secret_conf), .meta = "SECRET",
     .help = "the node's secret (or secret_file, exactly one of them)"},
    {"secret_file", 0, SET_STRP, AT(secret_file), .meta = "FILE",
     .help = "a file whose first line is the node's secret"},
    {"state_dir", 0, SET_PATH, AT(node.state_dir), .flags = SET_REQUIRED, .meta = "DIR",
     .help = "the containers' state, e.g. /var/lib/imperium/state"},
    {"containers_dir", 0, SET_PATH, AT(node.containers_dir), .flags = SET_REQUIRED,
     .meta = "DIR", .help = "the homes, e.g. /containers"},
    {"uwsgi", 0, SET_PATH, AT(node.uwsgi), .def = NODE_DEFAULT_UWSGI, .meta = "PATH",
     .help = "the Emperor binary, a path inside the container"},
    {"shortcuts", 0, SET_PATH, AT(node.shortcuts), .meta = "FILE",
     .help = "host path of the shortcuts file (default none)"},
    {"cgroup_root", 0, SET_PATH, AT(node.cgroup_root), .def = NODE_DEFAULT_CGROUP_ROOT,
     .meta = "DIR", .help = "where cgroupfs lives"},
    {"cgroup_parent", 0, SET_STRP, AT(node.cgroup_parent), .def = NODE_DEFAULT_CGROUP_PARENT,
     .check = check_dir_name, .meta = "NAME", .help = "the containers' cgroup sub-tree"},
    {"init", 0, SET_PATH, AT(node.init), .meta = "PATH",
     .help = "imperium-init (default beside imperium-node, else in ../lib/imperium)"},
    {"pids_max", 0, SET_INT, AT(node.pids_max), .min = 1, .max = NODE_PIDS_MAX_MAX,
     .idef = CG_DEFAULT_PIDS_MAX, .meta = "N",
     .help = "processes + threads per container"},
    {"cpu_weight", 0, SET_INT, AT(node.cpu_weight), .min = 1, .max = 10000,
     .idef = CG_DEFAULT_CPU_WEIGHT, .meta = "N",
     .help = "CPU share, relative between containers"},
    {"io_weight", 0, SET_INT, AT(node.io_weight), .min = 1, .max = 10000,
     .idef = CG_DEFAULT_IO_WEIGHT, .meta = "N", .help = "I/O share (needs BFQ or iocost)"},
    {"log_level", 0, SET_LOG_LEVEL, AT(log_level), .idef = LOG_INFO, .meta = "LEVEL",
     .help = "error, warn, info or debug"},
    {"distro_host_ok", 0, SET_BOOL, AT(distro_host_ok), .meta = "BOOL",
     .help = "allow the node's own root (/) as a distro"},
    {"stop_timeout", 0, SET_INT, AT(stop_timeout_s), .min = 0, .max = 3600,
     .idef = AGENT_DEFAULT_STOP_TIMEOUT_S, .meta = "SECONDS",
     .help = "graceful stop of a container no longer wanted"},
    {"restart_grace_ms", 0, SET_INT, AT(restart_grace_ms), .min = 0, .max = 60000,
     .idef = AGENT_DEFAULT_RESTART_GRACE_MS, .meta = "MS",
     .help = "SIGTERM before SIGKILL when restarting"},
    {"router_http", 0, SET_STRP, AT(router_http), .check = check_address,
     .meta = "ADDR:PORT", .help = "the HTTP router, e.g. 0.0.0.0:80 (default none: no router)"},
    {"router_https", 0, SET_STRP, AT(router_https), .check = check_address,
     .meta = "ADDR:PORT",
     .help = "the router's HTTPS listener, e.g. 0.0.0.0:443 (with router_http; default none)"},
    {"router_uwsgi", 0, SET_PATH, AT(router_uwsgi), .def = NODE_DEFAULT_UWSGI, .meta = "PATH",
     .help = "host path of the router's uwsgi"},
    {"router_user", 0, SET_STRP, AT(router_user), .def = ROUTER_DEFAULT_USER,
     .check = check_user, .meta = "USER", .help = "the router's unprivileged user"},
    {"max_subscriptions", 0, SET_INT, AT(max_subscriptions), .min = 1, .max = 100000,
     .idef = SUBGATE_DEFAULT_MAX, .meta = "N",
     .help = "distinct socket addresses a container may subscribe to the router at once; "
             "beyond it a subscription is refused (logged in its logs/router.log)"},
    {"cluster_port", 0, SET_INT, AT(cluster_port), .min = 0, .max = 65535,
     .idef = SUBGATE_DEFAULT_CLUSTER_PORT, .meta = "PORT",
     .help = "TCP port of the router's fastrouter, where a legion's Lord sends this node's "
             "share of a cluster-domain (bound 0.0.0.0, the same on every member; needs "
             "router_http and network = on; 0: no cluster domains)"},
    {"cluster_gate_port", 0, SET_INT, AT(cluster_gate_port), .min = 1, .max = 65535,
     .idef = SUBGATE_DEFAULT_CLUSTER_GATE_PORT, .meta = "PORT",
     .help = "UDP port where legion members' subscription gates send each other cluster-domain "
             "subscriptions, sealed with the legion's key (bound 0.0.0.0, the same on every "
             "member)"},
    {"acme_directory", 0, SET_STRP, AT(acme_directory), .def = "",
     .check = check_acme_directory, .meta = "URL",
     .help = "the ACME server's directory auto-ssl-domain certificates come from, e.g. "
             "https://acme-v02.api.letsencrypt.org/directory (default none: auto-ssl-domain "
             "refused, said in the container's logs/router.log)"},
    {"acme_ca_bundle", 0, SET_PATH, AT(acme_ca_bundle), .meta = "FILE",
     .help = "the only CA bundle (PEM) trusted for the ACME server (default the system's "
             "/etc/ssl/certs)"},
    {"acme_email", 0, SET_STRP, AT(acme_email), .def = "", .check = check_email,
     .meta = "ADDRESS", .help = "the ACME account's contact (default none)"},
    {"acme_renew_days", 0, SET_INT, AT(acme_renew_days), .min = 1, .max = 3650,
     .idef = ACME_DEFAULT_RENEW_DAYS, .meta = "DAYS",
     .help = "an auto-ssl-domain certificate is renewed this many days before it expires"},
    {"acme_retry", 0, SET_INT, AT(acme_retry), .min = 1, .max = 86400,
     .idef = ACME_DEFAULT_RETRY_S, .meta = "SECONDS",
     .help = "a certificate that could not be obtained (or a refused name) is tried again "
             "after this"},
    {"network", 0, SET_BOOL, AT(node.net.on), .idef = 1, .meta = "BOOL",
     .help = "give containers uwsgi0 on the container network (off: only lo)"},
    {"container_network", 0, SET_STRP, AT(node.net.network_text), .def = NET_DEFAULT_NETWORK,
     .check = check_cidr, .meta = "CIDR", .help = "the containers' addresses (their API ip)"},
    {"gateway", 0, SET_STRP, AT(node.net.gateway_text), .def = NET_DEFAULT_GATEWAY,
     .check = check_ipv4, .meta = "IP",
     .help = "the node's address on the container network (on lo; containers' default route)"},
    {"veth_prefix", 0, SET_STRP, AT(node.net.prefix), .def = NET_DEFAULT_PREFIX,
     .check = check_veth_prefix, .meta = "NAME",
     .help = "host end of a container's veth is <prefix><uid> (1-4 of [a-z])"},
    {"nft_table", 0, SET_STRP, AT(nft_table), .def = NETPOLICY_DEFAULT_TABLE,
     .check = check_nft_table, .meta = "NAME",
     .help = "the node's own nftables table (table inet NAME; no other is touched)"},
    {"uplink", 0, SET_STRP, AT(uplink), .def = "", .check = check_uplink, .meta = "IFNAME",
     .help = "the interface to the world (default none: containers reach no world)"},
    {"nat", 0, SET_BOOL, AT(nat), .idef = 1, .meta = "BOOL",
     .help = "masquerade the containers out of the uplink (only with an uplink)"},
    {"nat_deny", 0, SET_STRP, AT(nat_deny), .def = NETPOLICY_DEFAULT_NAT_DENY,
     .check = check_nat_deny, .meta = "CIDRS",
     .help = "with nat: IPv4 networks containers never reach (comma- or space-separated; "
             "default the cloud metadata 169.254.0.0/16; empty: none)"},
    {"overlay", 0, SET_STRP, AT(overlay.mode), .def = OVERLAY_DEFAULT_MODE,
     .check = overlay_check_mode, .meta = "off|vxlan",
     .help = "links across servers: vxlan (on a private underlay) or off"},
    {"overlay_local", 0, SET_STRP, AT(overlay.local), .check = overlay_check_local,
     .meta = "IP", .help = "the underlay address VXLAN is sent from (default: the server's)"},
    {"overlay_dev", 0, SET_STRP, AT(overlay.dev), .def = OVERLAY_DEFAULT_DEV,
     .check = overlay_check_dev, .meta = "IFNAME", .help = "the overlay's interface"},
    {"vxlan_id", 0, SET_INT, AT(overlay.vni), .min = 1, .max = OVERLAY_VNI_MAX,
     .idef = OVERLAY_DEFAULT_VNI, .meta = "N", .help = "the VXLAN id (the same on every node)"},
    {"vxlan_port", 0, SET_INT, AT(overlay.port), .min = 1, .max = 65535,
     .idef = OVERLAY_DEFAULT_PORT, .meta = "PORT",
     .help = "the VXLAN UDP port (the same on every node)"},
    {"overlay_mtu", 0, SET_INT, AT(overlay.mtu), .min = OVERLAY_MTU_MIN, .max = OVERLAY_MTU_MAX,
     .idef = OVERLAY_DEFAULT_MTU, .meta = "N",
     .help = "the overlay's MTU, and uwsgi0's with the overlay on: the underlay's minus 50"},
    {"legion_port", 0, SET_INT, AT(legion_port), .min = 1, .max = 65535,
     .idef = LEGION_DEFAULT_PORT, .meta = "PORT",
     .help = "the legion of API id k uses UDP port legion_port + k (the same on every member)"},
    {"legion_freq", 0, SET_INT, AT(legion_freq), .min = 1, .max = 60,
     .idef = LEGION_DEFAULT_FREQ, .meta = "SECONDS",
     .help = "seconds between a legion member's announcements (uWSGI legion-freq)"},
    {"legion_tolerance", 0, SET_INT, AT(legion_tolerance), .min = 1, .max = 600,
     .idef = LEGION_DEFAULT_TOLERANCE, .meta = "SECONDS",
     .help = "seconds of silence before a member is gone (uWSGI legion-tolerance; failover "
             "takes about twice this)"},
    {"metrics_interval", 0, SET_INT, AT(metrics_interval), .min = 0, .max = 86400,
     .idef = AGENT_DEFAULT_METRICS_INTERVAL_S, .meta = "SECONDS",
     .help = "seconds between samples of the containers' metrics sent to the API "
             "(docs/METRICS.md); 0: no sampling"},
    {"outbox_max", 0, SET_INT, AT(outbox_max), .min = 1, .max = 1000000,
     .idef = CHANNEL_OUTBOX_MAX, .meta = "N",
     .help = "metric and alarm batches kept for the API while it is away (the oldest "
             "metrics dropped first)"},
    {"outbox_max_bytes", 0, SET_INT, AT(outbox_max_bytes), .min = 1024 * 1024, .max = INT_MAX,
     .idef = CHANNEL_OUTBOX_MAX_BYTES, .meta = "BYTES",
     .help = "bytes of metric and alarm batches kept for the API while it is away (the oldest "
             "metrics dropped first)"},
    {"metrics_listen", 0, SET_STRP, AT(metrics_listen), .def = "",
     .check = check_metrics_listen, .meta = "IPV4:PORT",
     .help = "the node's own Prometheus metrics at http://IPV4:PORT/metrics (docs/OPERATING.md, "
             "Monitoring); empty: none"},
    {"emperor_log_maxsize", 0, SET_INT, AT(node.emperor_log_maxsize), .min = 1024,
     .max = INT_MAX, .idef = NODE_DEFAULT_EMPEROR_LOG_MAXSIZE, .meta = "BYTES",
     .help = "a container's logs/emperor.log is renamed emperor.log.1 (replacing it) past "
             "this size"},
    {"loopbox_remount_delay", 0, SET_INT, AT(loopbox_remount_delay), .min = 1, .max = 3600,
     .idef = LOOPBOXES_DEFAULT_REMOUNT_DELAY_S, .meta = "SECONDS",
     .help = "after a loopbox's image changed (resized, replaced, appeared), seconds it must stay "
             "unchanged before it is mounted (again) (docs/NODE.md, Loopboxes)"},
    {"loopbox_max", 0, SET_INT, AT(loopbox_max), .min = 1, .max = 256,
     .idef = LOOPBOXES_DEFAULT_MAX, .meta = "N",
     .help = "loopboxes of one container mounted at a time (on loop devices); one more waits, "
             "said once in its logs/emperor.log (docs/NODE.md, Loopboxes)"},
    {"quota_check_interval", 0, SET_INT, AT(quota_check_interval), .min = 0, .max = 86400,
     .idef = ALARMS_DEFAULT_QUOTA_CHECK_S, .meta = "SECONDS",
     .help = "seconds between checks of the homes against quota_threshold (docs/ALARMS.md); "
             "0: none"},
    {"pushover_url", 0, SET_STRP, AT(pushover_url), .def = ALARMS_DEFAULT_PUSHOVER_URL,
     .check = check_url, .meta = "URL", .help = "where Pushover alarms are POSTed"},
    {"pushbullet_url", 0, SET_STRP, AT(pushbullet_url), .def = ALARMS_DEFAULT_PUSHBULLET_URL,
     .check = check_url, .meta = "URL", .help = "where Pushbullet alarms are POSTed"},
    {"slack_hosts", 0, SET_STRP, AT(slack_hosts), .def = ALARMS_DEFAULT_SLACK_HOSTS,
     .meta = "HOSTS",
     .help = "comma-separated hosts a container's slack_webhook may name (others are refused: "
             "the node would POST anywhere)"},
    {"alarm_insecure_http", 0, SET_BOOL, AT(alarm_insecure_http), .meta = "BOOL",
     .help = "allow http:// alarm URLs (tests only; default https only)"},
    {"xmpp_server", 0, SET_STRP, AT(xmpp_server), .def = "", .check = check_address,
     .meta = "HOST:PORT",
     .help = "the XMPP server every alarm delivery connects to (default: the jid's own, "
             "public addresses on port 5222/5223 only)"},
    {"xmpp_insecure", 0, SET_BOOL, AT(xmpp_insecure), .meta = "BOOL",
     .help = "XMPP without TLS (tests only; default TLS is mandatory)"},
    {"wall", 0, SET_PATH, AT(wall), .meta = "PATH",
     .help = "imperium-wall, which writes alarms to the containers' shells (default beside "
             "imperium-node, else in ../lib/imperium)"},
    {"quota", 0, SET_STRP, AT(quota), .def = "loop", .check = check_quota,
     .meta = "loop|project|off",
     .help = "the homes' disk quota of `storage` MB: loop (an ext4 image per home, "
             "loop-mounted), project (the filesystem's project quotas, where the kernel keeps "
             "them) or off (docs/NODE.md, Disk quota)"},
    {NULL},
};

#undef AT

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

/* Exactly one of `secret` and `secret_file`. */
static int take_secret(agent_cfg_t *c, err_t *e)
{
    if ((c->secret_conf != NULL) == (c->secret_file != NULL))
        return bad(c, e, "secret", "or secret_file is required (exactly one of them)");
    if (c->secret_file)
        return read_secret(c, c->secret_file, e);
    if (!*c->secret_conf)
        return bad(c, e, "secret", "is empty");
    if (!(c->secret = strdup(c->secret_conf)))
        return err_set(e, ERR_INTERNAL, "out of memory");
    return 0;
}

/* What the table cannot say: rules between keys, files that must exist. */
static int check_loaded(agent_cfg_t *c, err_t *e)
{
    if (settings_check_required(agent_settings, c, c->conf.path, e) < 0 ||
        take_secret(c, e) < 0)
        return -1;
    /* An empty address means no listener. */
    if (c->router_http && !*c->router_http)
        c->router_http = NULL;
    if (c->router_https && !*c->router_https)
        c->router_https = NULL;
    if (c->router_https && !c->router_http)
        return bad(c, e, "router_https", "needs router_http (one router serves both)");
    if (c->metrics_listen && !*c->metrics_listen)
        c->metrics_listen = NULL;
    if (c->acme_directory && !*c->acme_directory)
        c->acme_directory = NULL;
    if (c->acme_email && !*c->acme_email)
        c->acme_email = NULL;
    const char *shortcuts = c->node.shortcuts;
    if (shortcuts && access(shortcuts, R_OK) < 0)
        return err_set(e, ERR_INPUT, "%s: shortcuts %s: %s", c->conf.path, shortcuts,
                       strerror(errno));
    c->stop_timeout_ms = c->stop_timeout_s * 1000;
    c->node.quota = (quota_kind_t)quota_kind_parse(c->quota ? c->quota : "loop");
    err_t ne;
    err_clear(&ne);
    if (overlay_on(&c->overlay) && !c->node.net.on)
        return bad(c, e, "overlay", "= vxlan needs network = on");
    /* Through the overlay a container's packets carry 50 bytes more: its
     * uwsgi0 must not send more than the overlay carries. */
    if (overlay_on(&c->overlay))
        c->node.net.mtu = c->overlay.mtu;
    if (net_cfg_parse(&c->node.net, &ne) < 0)
        return err_set(e, ERR_INPUT, "%s: %s", c->conf.path, ne.msg);
    /* The table's rules match "<prefix>*": the node's own devices must not. */
    if (c->node.net.on &&
        (net_check_not_prefixed(c->uplink, c->node.net.prefix, "uplink", &ne) < 0 ||
         (overlay_on(&c->overlay) &&
          net_check_not_prefixed(c->overlay.dev, c->node.net.prefix, "overlay_dev", &ne) < 0)))
        return err_set(e, ERR_INPUT, "%s: %s", c->conf.path, ne.msg);
    return 0;
}

int agent_cfg_load(agent_cfg_t *c, const char *path, err_t *e)
{
    memset(c, 0, sizeof *c);
    if (settings_defaults(agent_settings, c, e) < 0 ||
        settings_load_file(agent_settings, c, &c->conf, path, e) < 0 ||
        check_loaded(c, e) < 0) {
        agent_cfg_free(c);
        return -1;
    }
    node_cfg_defaults(&c->node);
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

netpolicy_cfg_t agent_netpolicy_cfg(const agent_cfg_t *c)
{
    return (netpolicy_cfg_t){.table = c->nft_table,
                             .prefix = c->node.net.prefix,
                             .uplink = c->uplink,
                             .nat = c->nat,
                             .nat_deny = c->nat_deny,
                             .network = c->node.net.network,
                             .prefixlen = c->node.net.prefixlen,
                             .gateway = c->node.net.gateway,
                             .overlay = &c->overlay,
                             .legion_port = c->legion_port,
                             .cluster_port = c->cluster_port,
                             .cluster_gate_port = c->cluster_gate_port};
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
