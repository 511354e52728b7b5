/* channel.h - the node's side of the nodes' channel (docs/NODE-CHANNEL.md).
 *
 * One thread does all the HTTP with libcurl's multi interface: the long
 * poll `GET <prefix>/state?version=V&wait=30` (blocking in libcurl) and the
 * `POST <prefix>/status` reports the main thread queues.  A new state is
 * handed over under a mutex and announced by writing to an eventfd; the
 * main thread never waits on the network.
 *
 * When the API cannot be reached (or answers an error) the thread logs it
 * once per outage, retries every 100 ms doubling up to 500 ms, and resumes
 * with a GET without version, which answers the full state at once.
 *
 * The outbox (channel_post): metrics and system alarms for the API, sent in
 * order one at a time beside the long poll and kept until it takes them;
 * saved to a file by channel_free and reloaded by channel_new, so neither an
 * outage nor a clean restart of the node loses them (docs/METRICS.md). */
#ifndef IMP_NODE_CHANNEL_H
#define IMP_NODE_CHANNEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "../common/err.h"
#include "spec.h"

typedef struct channel channel_t;

typedef struct {
    const char *api_url;     /* http://host:port */
    const char *node_prefix; /* /node */
    const char *user;        /* the server's name */
    const char *secret;      /* its node secret */
    int wait_s;              /* long poll length (30) */
    int notify_fd;           /* eventfd written when a state is ready */
    int outbox_max;          /* bodies channel_post keeps (0: CHANNEL_OUTBOX_MAX) */
    size_t outbox_max_bytes; /* and their bytes (0: CHANNEL_OUTBOX_MAX_BYTES) */
    /* Where channel_stop saves the outbox and channel_new reloads it from
     * (<state_dir>/outbox.json); NULL: kept in memory only. */
    const char *outbox_file;
} channel_opts_t;

#define CHANNEL_WAIT_S 30
#define CHANNEL_RETRY_MIN_MS 100
#define CHANNEL_RETRY_MAX_MS 500
#define CHANNEL_RETRY_AFTER_MAX_S 60 /* the outbox honours an API's Retry-After up to this */
#define CHANNEL_OUTBOX_MAX 10000
#define CHANNEL_OUTBOX_MAX_BYTES (64 * 1024 * 1024)
#define CHANNEL_OUTBOX_FILE "outbox.json"

/* Copies everything it needs from o; curl_global_init must have run. */
channel_t *channel_new(const channel_opts_t *o, err_t *e);
int channel_start(channel_t *c, err_t *e);
/* The newest state not yet taken (the caller frees it: spec_free), or NULL. */
spec_state_t *channel_take_state(channel_t *c);
/* Queue a status report; replaces one not yet sent.  Takes `body`. */
void channel_post_status(channel_t *c, char *body);
/* Queue a body for POST <prefix>/<route> ("metrics" or "alarms",
 * docs/NODE-CHANNEL.md): the outbox keeps it, in order, until the API
 * answers 2xx, one request at a time beside the long poll.  Only 400, 413
 * and 422 (the body itself is bad: sending it again cannot help) drop it,
 * logged with the API's reason; anything else (unreachable, 5xx, 401 after
 * a secret rotation, 404 from an older API, 408, 429) keeps it and retries
 * with the channel's backoff.  Bounded by channel_opts_t.outbox_max bodies
 * and outbox_max_bytes bytes (the oldest "metrics" body dropped first,
 * "alarms" bodies only when nothing else is left).  Takes `body`. */
void channel_post(channel_t *c, const char *route, char *body);
/* Bodies in the outbox, the one being sent included. */
size_t channel_outbox_length(channel_t *c);
/* Stop the thread (interrupting a long poll) and wait for it. */
void channel_stop(channel_t *c);
/* Stops it, then saves the outbox to outbox_file (reloaded by the next
 * channel_new): a clean stop loses nothing. */
void channel_free(channel_t *c);

#endif
