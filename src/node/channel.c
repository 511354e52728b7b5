/* channel.c - the long poll, the status reports and the outbox (channel.h). */
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
#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "nodestats.h"

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

/* A body for POST <prefix>/<route>, waiting in the outbox. */
typedef struct outbox_item {
    struct outbox_item *next;
    char *route, *body;
    size_t size; /* the body's bytes, for outbox_max_bytes */
} outbox_item_t;

struct channel {
    /* Set once by channel_new. */
    char *state_url, *status_url, *user, *secret;
    char *base_url; /* <api_url><node_prefix>: the outbox's routes go below */
    char *outbox_file;
    size_t outbox_max, outbox_max_bytes;
    int wait_s, notify_fd;
    CURLM *multi;
    pthread_t thread;
    bool started;

    /* Shared with the main thread, under mu. */
    pthread_mutex_t mu;
    bool stop;
    spec_state_t *pending_state;
    char *pending_post;
    outbox_item_t *ob_head, *ob_tail; /* oldest first */
    size_t ob_len, ob_bytes; /* both count the body in flight too */

    /* The channel thread's own. */
    request_t *get, *post;
    char *version; /* of the last state handed over; NULL after an outage */
    bool down;
    long long down_since_ms, next_get_ms;
    int failures;
    request_t *out;        /* the outbox's request in flight */
    outbox_item_t *out_item; /* its body, out of the list until answered */
    long long out_next_ms; /* no outbox request before (backoff) */
    int out_failures;
    bool out_down;
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

/* ---- the outbox ------------------------------------------------------------ */

static void item_free(outbox_item_t *it)
{
    if (!it)
        return;
    free(it->route);
    free(it->body);
    free(it);
}

static outbox_item_t *item_new(const char *route, char *body)
{
    outbox_item_t *it = calloc(1, sizeof *it);
    if (!it || !(it->route = strdup(route))) {
        free(it);
        free(body);
        return NULL;
    }
    it->body = body;
    it->size = strlen(body);
    return it;
}

/* Under mu: the list's links only (ob_len counts the body in flight too). */
static void ob_append(channel_t *c, outbox_item_t *it)
{
    it->next = NULL;
    if (c->ob_tail)
        c->ob_tail->next = it;
    else
        c->ob_head = it;
    c->ob_tail = it;
}

static void ob_prepend(channel_t *c, outbox_item_t *it)
{
    it->next = c->ob_head;
    c->ob_head = it;
    if (!c->ob_tail)
        c->ob_tail = it;
}

/* Under mu: unlink `it`, whose predecessor is `prev` (NULL: the head). */
static void ob_unlink(channel_t *c, outbox_item_t *prev, outbox_item_t *it)
{
    if (prev)
        prev->next = it->next;
    else
        c->ob_head = it->next;
    if (c->ob_tail == it)
        c->ob_tail = prev;
    it->next = NULL;
}

/* Under mu, the outbox full: drop the oldest body that is not an alarm,
 * or the oldest alarm when only alarms are left (they matter more than a
 * sample, which the next interval partly makes up for).  Returns the
 * dropped item (the caller frees it outside the lock), NULL if the list is
 * empty (only the body in flight counts). */
static outbox_item_t *ob_drop_one(channel_t *c)
{
    outbox_item_t *prev = NULL;
    for (outbox_item_t *it = c->ob_head; it; prev = it, it = it->next) {
        if (strcmp(it->route, "alarms") != 0) {
            ob_unlink(c, prev, it);
            return it;
        }
    }
    outbox_item_t *it = c->ob_head;
    if (it)
        ob_unlink(c, NULL, it);
    return it;
}

static bool ob_full(const channel_t *c, size_t adding)
{
    return c->ob_len >= c->outbox_max || c->ob_bytes + adding > c->outbox_max_bytes;
}

/* Under mu: append `it` within both bounds, making room by ob_drop_one;
 * what goes is chained on *dropped (the caller reports it outside the
 * lock: ob_report).  A body larger than the whole byte bound is itself
 * dropped rather than emptying the outbox for it. */
static void ob_admit(channel_t *c, outbox_item_t *it, outbox_item_t **dropped)
{
    if (it->size > c->outbox_max_bytes) {
        it->next = *dropped;
        *dropped = it;
        return;
    }
    while (ob_full(c, it->size)) {
        outbox_item_t *d = ob_drop_one(c);
        if (!d)
            break; /* only the body in flight is left */
        d->next = *dropped;
        *dropped = d;
        c->ob_len--;
        c->ob_bytes -= d->size;
    }
    ob_append(c, it);
    c->ob_len++;
    c->ob_bytes += it->size;
}

/* Outside mu: one line for what ob_admit dropped, counted, and freed. */
static void ob_report(channel_t *c, outbox_item_t *dropped)
{
    size_t metrics = 0, alarms = 0;
    while (dropped) {
        outbox_item_t *next = dropped->next;
        if (strcmp(dropped->route, "alarms") == 0)
            alarms++;
        else
            metrics++;
        item_free(dropped);
        dropped = next;
    }
    if (!metrics && !alarms)
        return;
    nodestats_add(NS_METRICS_DROPPED, metrics);
    log_warn("node channel: the outbox is full (outbox_max %zu bodies, outbox_max_bytes %zu) "
             "while the API is away: %zu metrics and %zu alarms bodies dropped, the oldest "
             "metrics first",
             c->outbox_max, c->outbox_max_bytes, metrics, alarms);
}

/* After an answer: the next body, or the backoff after a failure. */
static void out_retry_later(channel_t *c, const char *why)
{
    nodestats_add(NS_CHANNEL_ERRORS, 1);
    if (!c->out_down) {
        c->out_down = true;
        log_warn("node channel: cannot send to the API (%s); metrics and alarms wait in the "
                 "outbox, retrying",
                 why);
    } else {
        log_debug("node channel: outbox: still failing: %s", why);
    }
    if (c->out_failures < 16)
        c->out_failures++;
    long long delay = (long long)CHANNEL_RETRY_MIN_MS << (c->out_failures - 1);
    c->out_next_ms = now_ms() + (delay > CHANNEL_RETRY_MAX_MS ? CHANNEL_RETRY_MAX_MS : delay);
}

/* The channel thread: send the oldest body unless one is in flight or the
 * backoff runs. */
static void start_out(channel_t *c)
{
    if (c->out || now_ms() < c->out_next_ms)
        return;
    pthread_mutex_lock(&c->mu);
    outbox_item_t *it = c->ob_head;
    if (it)
        ob_unlink(c, NULL, it);
    pthread_mutex_unlock(&c->mu);
    if (!it)
        return;
    c->out_item = it;
    char *body = strdup(it->body); /* the request takes its copy: a failure keeps ours */
    c->out = body ? request_new(c, str_printf("%s/%s", c->base_url, it->route), body,
                                POST_TIMEOUT_S)
                  : NULL;
    if (!c->out) {
        pthread_mutex_lock(&c->mu);
        ob_prepend(c, it);
        pthread_mutex_unlock(&c->mu);
        c->out_item = NULL;
        out_retry_later(c, "out of memory preparing the request");
    }
}

/* The answers that mean the body itself is bad (malformed, over the API's
 * size limit, failing validation): it will never be taken, and keeping it
 * would block everything behind it.  Every other answer (401 after a
 * secret rotation, 404 from an older API during an upgrade, 408, 429, 5xx)
 * is about the API's state, not the body: it is kept and retried. */
static bool body_refused(long status)
{
    return status == 400 || status == 413 || status == 422;
}

/* A 429 or 503 with Retry-After: no sooner than the API asks (at most
 * CHANNEL_RETRY_AFTER_MAX_S, so a wrong header cannot park the outbox). */
static void honour_retry_after(channel_t *c, request_t *r)
{
    curl_off_t s = 0;
    if (curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &s) != CURLE_OK || s <= 0)
        return;
    if (s > CHANNEL_RETRY_AFTER_MAX_S)
        s = CHANNEL_RETRY_AFTER_MAX_S;
    long long at = now_ms() + (long long)s * 1000;
    if (at > c->out_next_ms)
        c->out_next_ms = at;
}

static void out_done(channel_t *c, CURLcode rc)
{
    request_t *r = c->out;
    outbox_item_t *it = c->out_item;
    c->out = NULL;
    c->out_item = NULL;
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    bool sent = status >= 200 && status < 300, refused = body_refused(status);
    if (!sent) {
        char why[320];
        request_outcome(r, rc, why, sizeof why);
        if (refused) {
            /* The API will never take it: keeping it would block the rest. */
            nodestats_add(NS_CHANNEL_ERRORS, 1);
            log_warn("node channel: the API refused a %s body, dropped: %s", it->route, why);
        } else {
            pthread_mutex_lock(&c->mu);
            ob_prepend(c, it);
            pthread_mutex_unlock(&c->mu);
            out_retry_later(c, why);
            honour_retry_after(c, r);
            request_free(c, r);
            return;
        }
    } else {
        if (c->out_down)
            log_info("node channel: the API takes the outbox again");
        log_debug("node channel: %s body taken: %.200s", it->route,
                  r->body.data ? r->body.data : "");
    }
    request_free(c, r);
    size_t size = it->size;
    item_free(it);
    c->out_down = false;
    c->out_failures = 0;
    c->out_next_ms = 0;
    pthread_mutex_lock(&c->mu);
    c->ob_len--;
    c->ob_bytes -= size;
    size_t len = c->ob_len;
    pthread_mutex_unlock(&c->mu);
    nodestats_set(NS_OUTBOX_LENGTH, len);
}

/* channel_new: the bodies the last daemon saved ({"outbox": [{"route",
 * "body"}]}); the file goes once read (a crash later must not send them a
 * second time after newer ones; the API would take them harmlessly, but
 * out of order). */
static void outbox_load(channel_t *c)
{
    json_error_t je;
    json_t *j = json_load_file(c->outbox_file, 0, &je);
    if (!j) {
        if (access(c->outbox_file, F_OK) != 0)
            return;
        /* Kept for a look, out of the way of the next save. */
        char *bad = str_printf("%s.bad", c->outbox_file);
        if (!bad || rename(c->outbox_file, bad) < 0)
            log_error("node channel: %s is not an outbox (%s), and cannot be moved aside: %s",
                      c->outbox_file, je.text, bad ? strerror(errno) : "out of memory");
        else
            log_error("node channel: %s is not an outbox (%s): moved to %s", c->outbox_file,
                      je.text, bad);
        free(bad);
        return;
    }
    size_t i, n = 0;
    json_t *v;
    outbox_item_t *dropped = NULL; /* the same bounds as channel_post */
    json_array_foreach(json_object_get(j, "outbox"), i, v)
    {
        const char *route = json_string_value(json_object_get(v, "route"));
        const char *body = json_string_value(json_object_get(v, "body"));
        char *copy = body ? strdup(body) : NULL;
        outbox_item_t *it = route && copy ? item_new(route, copy) : NULL;
        if (!it) {
            if (!route || !body)
                log_error("node channel: %s: entry %zu has no route or body: skipped",
                          c->outbox_file, i);
            else
                log_error("node channel: out of memory reloading the outbox");
            continue;
        }
        ob_admit(c, it, &dropped); /* no thread yet: mu is not needed */
        n++;
    }
    json_decref(j);
    ob_report(c, dropped);
    if (unlink(c->outbox_file) < 0)
        log_error("node channel: remove %s: %s", c->outbox_file, strerror(errno));
    log_info("node channel: %zu bodies of the last run's outbox reloaded from %s (%zu read)",
             c->ob_len, c->outbox_file, n);
    nodestats_set(NS_OUTBOX_LENGTH, c->ob_len);
}

/* channel_free, the thread gone: what the API has not taken yet. */
static void outbox_save(channel_t *c)
{
    if (!c->ob_head)
        return;
    json_t *j = json_object(), *arr = json_array();
    size_t n = 0;
    bool ok = j && arr;
    if (ok)
        ok = json_object_set_new(j, "outbox", arr) == 0; /* takes arr even when failing */
    else
        json_decref(arr);
    for (outbox_item_t *it = c->ob_head; ok && it; it = it->next, n++)
        ok = json_array_append_new(arr, json_pack("{s:s,s:s}", "route", it->route, "body",
                                                  it->body)) == 0;
    char *text = ok ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    err_t e;
    err_clear(&e);
    if (!text)
        log_error("node channel: out of memory saving the outbox: %zu bodies lost", n);
    else if (fs_write_atomic(c->outbox_file, text, strlen(text), 0600, &e) < 0)
        log_error("node channel: save the outbox (%zu bodies lost): %s", n, e.msg);
    else
        log_info("node channel: %zu bodies the API has not taken yet saved to %s", n,
                 c->outbox_file);
    free(text);
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
        else if (c->out && easy == c->out->easy)
            out_done(c, rc);
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
        bool outbox = c->ob_head != NULL;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        if (!c->get && now_ms() >= c->next_get_ms)
            start_get(c);
        if (post)
            start_post(c, post);
        if (outbox)
            start_out(c);
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
        if (outbox && !c->out) {
            long long d = c->out_next_ms - now_ms();
            int t = d < 0 ? 0 : d > 1000 ? 1000 : (int)d;
            timeout = t < timeout ? t : timeout;
        }
        if (c->get || timeout > 0)
            curl_multi_poll(c->multi, NULL, 0, timeout, NULL);
    }
    request_free(c, c->get);
    request_free(c, c->post);
    request_free(c, c->out);
    c->get = c->post = c->out = NULL;
    if (c->out_item) { /* not answered: it stays first */
        pthread_mutex_lock(&c->mu);
        ob_prepend(c, c->out_item);
        pthread_mutex_unlock(&c->mu);
        c->out_item = NULL;
    }
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
    c->base_url = str_printf("%.*s%s", (int)n, o->api_url, o->node_prefix);
    c->outbox_max = o->outbox_max > 0 ? (size_t)o->outbox_max : CHANNEL_OUTBOX_MAX;
    c->outbox_max_bytes = o->outbox_max_bytes > 0 ? o->outbox_max_bytes : CHANNEL_OUTBOX_MAX_BYTES;
    c->outbox_file = o->outbox_file ? strdup(o->outbox_file) : NULL;
    c->user = strdup(o->user);
    c->secret = strdup(o->secret);
    c->multi = curl_multi_init();
    if (!c->state_url || !c->status_url || !c->base_url || (o->outbox_file && !c->outbox_file) ||
        !c->user || !c->secret || !c->multi) {
        channel_free(c);
        err_set(e, ERR_INTERNAL, "out of memory (or libcurl failed) setting up the channel");
        return NULL;
    }
    if (c->outbox_file)
        outbox_load(c);
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

void channel_post(channel_t *c, const char *route, char *body)
{
    if (!body)
        return;
    outbox_item_t *it = item_new(route, body);
    if (!it) {
        log_error("node channel: out of memory queueing a %s body: lost", route);
        return;
    }
    outbox_item_t *dropped = NULL;
    pthread_mutex_lock(&c->mu);
    ob_admit(c, it, &dropped);
    size_t len = c->ob_len;
    pthread_mutex_unlock(&c->mu);
    nodestats_set(NS_OUTBOX_LENGTH, len);
    ob_report(c, dropped);
    curl_multi_wakeup(c->multi);
}

size_t channel_outbox_length(channel_t *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->ob_len;
    pthread_mutex_unlock(&c->mu);
    return n;
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
    request_free(c, c->out);
    if (c->out_item) {
        ob_prepend(c, c->out_item);
        c->out_item = NULL;
    }
    if (c->outbox_file)
        outbox_save(c);
    while (c->ob_head) {
        outbox_item_t *it = c->ob_head;
        c->ob_head = it->next;
        item_free(it);
    }
    free(c->base_url);
    free(c->outbox_file);
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
