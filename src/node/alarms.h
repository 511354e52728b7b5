/* alarms.h - the node's alarms (docs/ALARMS.md; issue 16).
 *
 * System alarms are raised on the node (an OOM kill, the quota crossing
 * quota_threshold %, a container in a crash loop): each is sent to the API
 * (POST <node_prefix>/alarms, through the channel's outbox: stored there as a
 * level-0 alarm, never lost while the API is away) and delivered.  Alarms
 * customers raise with the API are fetched (GET <node_prefix>/alarms?after=,
 * when the state's server.alarm_seq grows) and delivered, never stored again.
 *
 * Delivery: the container's open shells (imperium-wall), XMPP (libstrophe),
 * Pushover, Pushbullet, Slack (libcurl), from a thread of its own so a slow
 * or failing channel never holds the node's main loop; at most one delivery
 * per container per alarm_freq seconds, what is held back counted and said
 * in the next one; a failing channel retried with backoff. */
#ifndef IMP_NODE_ALARMS_H
#define IMP_NODE_ALARMS_H

#include <stdbool.h>

#include "../common/err.h"
#include "../runtime/quota.h"
#include "channel.h"
#include "deliver.h"
#include "spec.h"

typedef struct alarms alarms_t;

/* Everything alarms.c needs of the daemon; filled by agent.c. */
typedef struct alarms_opts {
    const char *api_url;     /* http://127.0.0.1:8080 (GET <prefix>/alarms?after=) */
    const char *node_prefix; /* /node */
    const char *server_name; /* the channel's user (HTTP basic auth) */
    const char *secret;      /* and its password, the node secret */
    const char *state_dir;   /* <state_dir>/alarm_seq: the last API alarm delivered */
    const char *containers_dir;
    quota_kind_t quota;        /* quota_usage's backend */
    int quota_check_interval;  /* seconds between quota threshold checks; 0 = none */
    deliver_opts_t deliver;    /* the delivery channels (deliver.h) */
    /* Seams for the unit tests; NULL in the daemon: now_ms, quota_usage, the
     * delivery thread (deliver_push) and channel_post. */
    long long (*clock)(void);
    int (*usage)(quota_kind_t k, const char *containers_dir, int uid, uint64_t *used,
                 uint64_t *limit, err_t *e);
    void (*sink)(void *ctx, long long uid, const spec_alarms_t *al, const char *text);
    void (*post)(void *ctx, const char *route, char *body); /* takes body */
    void *sink_ctx;
} alarms_opts_t;

/* alarm_freq when the container sets none (seconds). */
#define ALARMS_DEFAULT_FREQ_S 60
/* quota_check_interval's default (seconds). */
#define ALARMS_DEFAULT_QUOTA_CHECK_S 5
#define ALARMS_DEFAULT_PUSHOVER_URL "https://api.pushover.net/1/messages.json"
#define ALARMS_DEFAULT_PUSHBULLET_URL "https://api.pushbullet.com/v2/pushes"
#define ALARMS_DEFAULT_SLACK_HOSTS "hooks.slack.com"

/* ch NULL: alarms raised before alarms_start are kept for it (the daemon
 * adopts its containers, which may raise OOM alarms, before its channel
 * exists); with ch, alarms_start is done here. */
alarms_t *alarms_new(const alarms_opts_t *o, channel_t *ch, err_t *e);
/* Post what was kept to ch from now on, and start the delivery thread
 * (after curl_global_init). */
int alarms_start(alarms_t *a, channel_t *ch, err_t *e);
void alarms_free(alarms_t *a);

/* The containers of a new state: their names, alarm settings (spec_alarms_t)
 * and quota_threshold (the limit is quota_usage's); and server.alarm_seq
 * (API-raised alarms: a fetch starts when it passes the last delivered). */
void alarms_set_state(alarms_t *a, const spec_state_t *state);

/* A system alarm of container uid: class "oom", "quota", "crashloop" ...;
 * msg one line for a human.  Never blocks. */
void alarms_raise(alarms_t *a, long long uid, const char *cls, const char *msg);

/* Work due now (the quota check, deliveries the rate limit held back). */
void alarms_tick(alarms_t *a);
/* Milliseconds (monotonic clock) of the next alarms_tick, or -1. */
long long alarms_next_deadline(const alarms_t *a);

#endif
