/* channel.c - the long poll and the status reports (channel.h). */
#include "channel.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../common/strutil.h"

#define MAX_BODY (64 * 1024 * 1024)
#define CONNECT_TIMEOUT_S 5
#define POST_TIMEOUT_S 10

/* One request in flight. */
typedef struct {
    CURL *easy;
    struct curl_slist *headers;
    char *url;
    char *post; /* the request body (POST) */
    buf_t body; /* the answer */
    bool too_big;
    char errbuf[CURL_ERROR_SIZE];
} request_t;

struct channel {
    /* Set once by channel_new. */
    char *state_url, *status_url, *user, *secret;
    int wait_s, notify_fd;
    CURLM *multi;
    pthread_t thread;
    bool started;

    /* Shared with the main thread, under mu. */
    pthread_mutex_t mu;
    bool stop;
    spec_state_t *pending_state;
    char *pending_post;

    /* The channel thread's own. */
    request_t *get, *post;
    char *version; /* of the last state handed over; NULL after an outage */
    bool down;
    long long down_since_ms, next_get_ms;
    int failures;
};

/* ---- requests ------------------------------------------------------------ */

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    request_t *r = ud;
    if (r->body.len + size * n > MAX_BODY) {
        r->too_big = true;
        return 0;
    }
    return buf_append(&r->body, p, size * n) < 0 ? 0 : size * n;
}

static void request_free(channel_t *c, request_t *r)
{
    if (!r)
        return;
    if (r->easy) {
        curl_multi_remove_handle(c->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->headers);
    free(r->url);
    free(r->post);
    buf_free(&r->body);
    free(r);
}

/* A request with everything common set; takes url and post (may be NULL). */
static request_t *request_new(channel_t *c, char *url, char *post, long timeout_s)
{
    request_t *r = calloc(1, sizeof *r);
    if (!r || !url) {
        free(r);
        free(url);
        free(post);
        return NULL;
    }
    r->url = url;
    r->post = post;
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    r->headers = h;
    if (h && post)
        h = curl_slist_append(r->headers, "Content-Type: application/json");
    if (!h || !(r->easy = curl_easy_init())) {
        request_free(c, r);
        return NULL;
    }
    r->headers = h;
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "imperium-node/1.0");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(e, CURLOPT_USERNAME, c->user);
    curl_easy_setopt(e, CURLOPT_PASSWORD, c->secret);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    if (post) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->post);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->post));
    }
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        request_free(c, r);
        return NULL;
    }
    return r;
}

/* Why a finished request failed, or "" when it got a 200. */
static void request_outcome(request_t *r, CURLcode rc, char *why, size_t len)
{
    long status = 0;
    why[0] = '\0';
    if (rc != CURLE_OK) {
        snprintf(why, len, "%s", r->too_big  ? "answer over 64 MB"
                                 : r->errbuf[0] ? r->errbuf
                                                : curl_easy_strerror(rc));
        return;
    }
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        const char *body = r->body.data ? r->body.data : "";
        snprintf(why, len, "HTTP %ld: %.200s", status, body);
        size_t n = strlen(why);
        while (n && (why[n - 1] == '\n' || why[n - 1] == '\r'))
            why[--n] = '\0';
    }
}

/* ---- the long poll ------------------------------------------------------- */

static void start_get(channel_t *c)
{
    char *url;
    if (c->version) {
        char *v = curl_easy_escape(NULL, c->version, 0);
        url = v ? str_printf("%s?version=%s&wait=%d", c->state_url, v, c->wait_s) : NULL;
        curl_free(v);
    } else {
        url = str_printf("%s", c->state_url);
    }
    /* A little more than the wait: the API answers at the end of it. */
    c->get = request_new(c, url, NULL, (long)c->wait_s + 10);
    if (!c->get) {
        log_error("node channel: out of memory preparing a request");
        c->next_get_ms = now_ms() + CHANNEL_RETRY_MAX_MS;
    }
}

static void outage(channel_t *c, const char *why)
{
    if (!c->down) {
        c->down = true;
        c->down_since_ms = now_ms();
        log_warn("node channel: cannot get the node state from %s: %s; running containers "
                 "keep running, retrying",
                 c->state_url, why);
    } else {
        log_debug("node channel: still failing: %s", why);
    }
    free(c->version);
    c->version = NULL; /* the next GET answers the full state at once */
    if (c->failures < 16)
        c->failures++;
    long long delay = (long long)CHANNEL_RETRY_MIN_MS << (c->failures - 1);
    c->next_get_ms = now_ms() + (delay > CHANNEL_RETRY_MAX_MS ? CHANNEL_RETRY_MAX_MS : delay);
}

static void deliver(channel_t *c, spec_state_t *state)
{
    pthread_mutex_lock(&c->mu);
    spec_free(c->pending_state);
    c->pending_state = state;
    pthread_mutex_unlock(&c->mu);
    uint64_t one = 1;
    if (write(c->notify_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_error("node channel: notify the main loop: %s", strerror(errno));
}

static void get_done(channel_t *c, CURLcode rc)
{
    request_t *r = c->get;
    c->get = NULL;
    char why[sizeof(err_t) + 64]; /* the transfer's error, or the state's */
    request_outcome(r, rc, why, sizeof why);
    spec_state_t *state = NULL;
    if (!why[0]) {
        json_error_t je;
        err_t e;
        err_clear(&e);
        json_t *j = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, &je);
        state = j ? spec_parse(j, &e) : NULL;
        json_decref(j);
        if (!state)
            snprintf(why, sizeof why, "the answer is not a node state (%s)", j ? e.msg : je.text);
    }
    request_free(c, r);
    if (why[0]) {
        spec_free(state);
        outage(c, why);
        return;
    }
    const char *version = state->version;
    bool was_down = c->down;
    if (was_down)
        log_info("node channel: the API answers again (after %.1f s)",
                 (double)(now_ms() - c->down_since_ms) / 1000.0);
    c->down = false;
    c->failures = 0;
    c->next_get_ms = 0;
    bool changed = !c->version || strcmp(c->version, version) != 0;
    if (!changed && !was_down) {
        spec_free(state); /* the wait ended without a change */
        return;
    }
    char *v = strdup(version);
    free(c->version);
    c->version = v; /* NULL (no memory): the next GET simply answers at once */
    deliver(c, state);
}

/* ---- status reports -------------------------------------------------------- */

static void start_post(channel_t *c, char *body)
{
    c->post = request_new(c, str_printf("%s", c->status_url), body, POST_TIMEOUT_S);
    if (!c->post)
        log_error("node channel: out of memory preparing a status report");
}

static void post_done(channel_t *c, CURLcode rc)
{
    request_t *r = c->post;
    c->post = NULL;
    char why[320];
    request_outcome(r, rc, why, sizeof why);
    if (why[0] && rc == CURLE_OK)
        log_warn("node channel: status report refused: %s", why); /* a bug somewhere */
    else if (why[0])
        log_debug("node channel: status report not sent: %s", why);
    request_free(c, r);
}

/* ---- the thread ----------------------------------------------------------- */

static void finished(channel_t *c)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle; /* m dies with the handle's removal */
        CURLcode rc = m->data.result;
        if (c->get && easy == c->get->easy)
            get_done(c, rc);
        else if (c->post && easy == c->post->easy)
            post_done(c, rc);
    }
}

static void *thread_main(void *arg)
{
    channel_t *c = arg;
    for (;;) {
        char *post = NULL;
        pthread_mutex_lock(&c->mu);
        bool stop = c->stop;
        if (!stop && !c->post && c->pending_post) {
            post = c->pending_post;
            c->pending_post = NULL;
        }
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        if (!c->get && now_ms() >= c->next_get_ms)
            start_get(c);
        if (post)
            start_post(c, post);
        int running = 0;
        CURLMcode mc = curl_multi_perform(c->multi, &running);
        if (mc != CURLM_OK)
            log_error("node channel: libcurl: %s", curl_multi_strerror(mc));
        finished(c);
        int timeout = 1000;
        if (!c->get) {
            long long d = c->next_get_ms - now_ms();
            timeout = d < 0 ? 0 : d > 1000 ? 1000 : (int)d;
        }
        if (c->get || timeout > 0)
            curl_multi_poll(c->multi, NULL, 0, timeout, NULL);
    }
    request_free(c, c->get);
    request_free(c, c->post);
    c->get = c->post = NULL;
    return NULL;
}

/* ---- the main thread's side ------------------------------------------------- */

channel_t *channel_new(const channel_opts_t *o, err_t *e)
{
    channel_t *c = calloc(1, sizeof *c);
    if (!c) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    size_t n = strlen(o->api_url);
    while (n && o->api_url[n - 1] == '/')
        n--;
    c->wait_s = o->wait_s > 0 ? o->wait_s : CHANNEL_WAIT_S;
    c->notify_fd = o->notify_fd;
    c->state_url = str_printf("%.*s%s/state", (int)n, o->api_url, o->node_prefix);
    c->status_url = str_printf("%.*s%s/status", (int)n, o->api_url, o->node_prefix);
    c->user = strdup(o->user);
    c->secret = strdup(o->secret);
    c->multi = curl_multi_init();
    if (!c->state_url || !c->status_url || !c->user || !c->secret || !c->multi) {
        channel_free(c);
        err_set(e, ERR_INTERNAL, "out of memory (or libcurl failed) setting up the channel");
        return NULL;
    }
    return c;
}

int channel_start(channel_t *c, err_t *e)
{
    int rc = pthread_create(&c->thread, NULL, thread_main, c);
    if (rc != 0)
        return err_set(e, ERR_INTERNAL, "start the channel thread: %s", strerror(rc));
    c->started = true;
    return 0;
}

spec_state_t *channel_take_state(channel_t *c)
{
    pthread_mutex_lock(&c->mu);
    spec_state_t *s = c->pending_state;
    c->pending_state = NULL;
    pthread_mutex_unlock(&c->mu);
    return s;
}

void channel_post_status(channel_t *c, char *body)
{
    if (!body)
        return;
    pthread_mutex_lock(&c->mu);
    free(c->pending_post);
    c->pending_post = body;
    pthread_mutex_unlock(&c->mu);
    curl_multi_wakeup(c->multi);
}

void channel_stop(channel_t *c)
{
    if (!c || !c->started)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_mutex_unlock(&c->mu);
    curl_multi_wakeup(c->multi);
    pthread_join(c->thread, NULL);
    c->started = false;
}

void channel_free(channel_t *c)
{
    if (!c)
        return;
    channel_stop(c);
    request_free(c, c->get);
    request_free(c, c->post);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    spec_free(c->pending_state);
    free(c->pending_post);
    free(c->version);
    free(c->state_url);
    free(c->status_url);
    free(c->user);
    if (c->secret) {
        explicit_bzero(c->secret, strlen(c->secret));
        free(c->secret);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}
