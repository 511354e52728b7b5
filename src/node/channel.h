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
 * with a GET without version, which answers the full state at once. */
#ifndef IMP_NODE_CHANNEL_H
#define IMP_NODE_CHANNEL_H

#include <jansson.h>
#include <stdbool.h>

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
} channel_opts_t;

#define CHANNEL_WAIT_S 30
#define CHANNEL_RETRY_MIN_MS 100
#define CHANNEL_RETRY_MAX_MS 500

/* Copies everything it needs from o; curl_global_init must have run. */
channel_t *channel_new(const channel_opts_t *o, err_t *e);
int channel_start(channel_t *c, err_t *e);
/* The newest state not yet taken (the caller frees it: spec_free), or NULL. */
spec_state_t *channel_take_state(channel_t *c);
/* Queue a status report; replaces one not yet sent.  Takes `body`. */
void channel_post_status(channel_t *c, char *body);
/* Stop the thread (interrupting a long poll) and wait for it. */
void channel_stop(channel_t *c);
void channel_free(channel_t *c);

#endif
