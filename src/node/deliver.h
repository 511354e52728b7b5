/* deliver.h - alarm delivery (docs/ALARMS.md; issue 16): the container's open
 * shells (the installed imperium-wall), XMPP (libstrophe), Pushover,
 * Pushbullet and Slack (libcurl), from a thread of its own: deliver_push
 * never blocks the caller (the node's main loop), a slow or failing channel
 * never delays the others, and a failed channel is retried with backoff a
 * bounded number of times (per channel, per container). */
#ifndef IMP_NODE_DELIVER_H
#define IMP_NODE_DELIVER_H

#include <stdbool.h>

#include "../common/err.h"
#include "spec.h"

/* Tries of one message on one channel before it is given up (logged). */
#define DELIVER_MAX_TRIES 5

typedef struct deliver_opts {
    const char *pushover_url;   /* https://api.pushover.net/1/messages.json */
    const char *pushbullet_url; /* https://api.pushbullet.com/v2/pushes */
    const char *slack_hosts;    /* comma-separated hosts a slack_webhook may name */
    bool insecure_http;         /* allow http:// URLs (tests) */
    const char *xmpp_server;    /* "host:port" instead of the jid's domain; NULL/"" */
    bool xmpp_insecure;         /* no TLS to the XMPP server (tests) */
    /* IPv4 networks a jid's own server may not be in (xmpp_server unset;
     * xmppdns.h): the node's container network and nat_deny; NULL/"": none. */
    const char *container_network, *nat_deny;
    const char *wall;           /* the imperium-wall binary; NULL/"": no shells */
    const char *state_dir;      /* imperium-wall --state-dir */
    int retry_base_ms;          /* first backoff after a failure (0: BACKOFF_MIN_MS) */
    int job_timeout_ms;         /* an XMPP session or a wall run (0: 20 s; tests) */
} deliver_opts_t;

typedef struct deliver deliver_t;

/* Starts the thread. */
deliver_t *deliver_new(const deliver_opts_t *o, err_t *e);
/* Stops the thread (messages still queued are dropped, logged) and frees. */
void deliver_free(deliver_t *d);

/* Queue `text` (one line, already "[imperium] name (uid): msg") for every
 * channel the container's settings `al` name, and its shells.  Copies what
 * it needs; never blocks. */
void deliver_push(deliver_t *d, long long uid, const spec_alarms_t *al, const char *text);

/* The request bodies (malloc'd, NULL when out of memory); exposed for the
 * unit tests.  Pushover: application/x-www-form-urlencoded token, user,
 * message, title, sound (when set).  Pushbullet: a JSON note.  Slack: {"text"}. */
char *deliver_pushover_body(const char *token, const char *user, const char *sound,
                            const char *title, const char *msg);
char *deliver_pushbullet_body(const char *title, const char *msg);
char *deliver_slack_body(const char *msg);

/* May the node POST to this slack_webhook?  https only (http too when
 * insecure_http), no userinfo, and its host one of `hosts` (comma-separated,
 * exact, case-insensitive): else the node could be made to POST anywhere.
 * -1 with e saying why. */
int deliver_slack_url_ok(const char *url, const char *hosts, bool insecure_http, err_t *e);

#endif
