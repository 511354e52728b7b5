/* alarms.c - the node's alarms (alarms.h, docs/ALARMS.md).
 *
 * Main thread only, except the fetch of API-raised alarms, which runs in a
 * short-lived thread of its own (one at a time) so that the main loop never
 * waits on the API; alarms_tick collects its answer.
 *
 * Per container: its alarm settings (copied from the state), the rate
 * limit's window (last delivery, alarms held since, the newest held text)
 * and the quota threshold's arm.  A container gone from the state is
 * forgotten with its record (alarms_set_state): an alarm racing its removal
 * is still sent to the API and stored there, just not delivered. */
#include "alarms.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "alarm_burst.h"
#include "nodestats.h"

#define ALARM_SEQ_FILE "alarm_seq"
#define FETCH_TIMEOUT_S 10
#define FETCH_POLL_MS 100 /* while a fetch runs, alarms_tick looks for its answer */
#define FETCH_PAGE 100    /* the API's page: a full one means more may follow */
/* A system alarm's text is cut to this many bytes: its body (one alarm, each
 * byte at most 6 as JSON, "\u0001") then always fits the API's. */
#define ALARM_MSG_MAX 4096
_Static_assert(6 * ALARM_MSG_MAX + 1024 < REPORT_MAX_BODY, "an alarm's body fits the API's");

typedef struct {
    long long uid;
    char *name;
    spec_alarms_t al; /* its strings owned */
    long long freq_ms;
    long long threshold; /* % of the limit; 0: none */
    bool armed;          /* the quota alarm fires on the next crossing */
    bool seen;           /* in the newest state */
    unsigned bad_keys;   /* drop_bad_keys' answer for the newest state (logged) */
    long long last;      /* monotonic ms of the last delivery; -1: none yet */
    long long held;      /* alarms not delivered since `last` */
    time_t held_since;   /* wall clock of the first of them */
    char *held_text;     /* the newest of them, delivered when the window opens */
} ctr_t;

typedef struct {
    pthread_t thread;
    bool running;  /* a thread was started and not joined */
    int done;      /* set by the thread (atomic) */
    char *url;     /* the request */
    char *answer;  /* the thread's: the body on 200, else NULL */
    char err[256]; /* why not */
} fetch_t;

struct alarms {
    alarms_opts_t o;
    channel_t *ch;
    deliver_t *dl;
    char boot[17]; /* ref = <boot>-<seq>: unique across restarts */
    long long seq;
    ctr_t *c;
    size_t n, cap;
    long long next_quota; /* monotonic ms */
    /* API-raised alarms */
    bool have_state;
    long long api_seq;  /* server.alarm_seq of the newest state */
    long long api_last; /* the newest delivered (also in <state_dir>/alarm_seq) */
    long long fetch_retry_at;
    int fetch_failures;
    fetch_t f;
    char **early; /* bodies raised before alarms_start (adoption): posted by it */
    size_t n_early;
};

static long long clock_now(const alarms_t *a)
{
    return a->o.clock ? a->o.clock() : now_ms();
}

/* ---- containers ---------------------------------------------------------- */

static void al_free(spec_alarms_t *al)
{
    char **s[] = {&al->jid,           &al->jid_destinations, &al->pushover_user,
                  &al->pushover_token, &al->pushover_sound,   &al->pushbullet_token,
                  &al->slack_webhook,  &al->jid_secret};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
        if (*s[i])
            explicit_bzero(*s[i], strlen(*s[i]));
        free(*s[i]);
        *s[i] = NULL;
    }
}

static char *dup_or_null(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *ok = false;
    return d;
}

static bool al_copy(spec_alarms_t *dst, const spec_alarms_t *src)
{
    bool ok = true;
    *dst = (spec_alarms_t){.freq = src->freq, .max_alarms = src->max_alarms};
    dst->jid = dup_or_null(src->jid, &ok);
    dst->jid_secret = dup_or_null(src->jid_secret, &ok);
    dst->jid_destinations = dup_or_null(src->jid_destinations, &ok);
    dst->pushover_user = dup_or_null(src->pushover_user, &ok);
    dst->pushover_token = dup_or_null(src->pushover_token, &ok);
    dst->pushover_sound = dup_or_null(src->pushover_sound, &ok);
    dst->pushbullet_token = dup_or_null(src->pushbullet_token, &ok);
    dst->slack_webhook = dup_or_null(src->slack_webhook, &ok);
    if (!ok)
        al_free(dst);
    return ok;
}

static void ctr_clear(ctr_t *c)
{
    free(c->name);
    al_free(&c->al);
    free(c->held_text);
    memset(c, 0, sizeof *c);
}

static ctr_t *find(alarms_t *a, long long uid)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->c[i].uid == uid)
            return &a->c[i];
    return NULL;
}

static ctr_t *find_or_add(alarms_t *a, long long uid)
{
    ctr_t *c = find(a, uid);
    if (c)
        return c;
    ctr_t *grown = array_room(a->c, a->n, &a->cap, sizeof *grown);
    if (!grown)
        return NULL;
    a->c = grown;
    c = &a->c[a->n++];
    *c = (ctr_t){.uid = uid, .armed = true, .last = -1};
    return c;
}

/* a + b, saturated: a deadline far away never wraps into the past. */
static long long sat_add(long long a, long long b)
{
    long long r;
    return __builtin_add_overflow(a, b, &r) ? (b > 0 ? LLONG_MAX : LLONG_MIN) : r;
}

/* Service keys outside [A-Za-z0-9._-] (a state from an API that did not
 * check them; one goes into a request header) are dropped, so that their
 * channel is skipped.  A bit per key dropped. */
static unsigned drop_bad_keys(spec_alarms_t *al)
{
    char **k[] = {&al->pushover_user, &al->pushover_token, &al->pushover_sound,
                  &al->pushbullet_token};
    unsigned bad = 0;
    for (size_t i = 0; i < sizeof k / sizeof *k; i++) {
        if (!*k[i] || !**k[i] || alarm_token_valid(*k[i]))
            continue;
        explicit_bzero(*k[i], strlen(*k[i]));
        free(*k[i]);
        *k[i] = NULL;
        bad |= 1u << i;
    }
    return bad;
}

/* Take the settings of s into c; false when out of memory (c keeps its old). */
static bool ctr_update(ctr_t *c, const spec_container_t *s)
{
    spec_alarms_t al;
    char *name = strdup(s->name ? s->name : "");
    if (!name || !al_copy(&al, &s->alarms)) {
        free(name);
        return false;
    }
    free(c->name);
    al_free(&c->al);
    c->name = name;
    c->al = al;
    unsigned bad = drop_bad_keys(&c->al);
    if (bad & ~c->bad_keys) /* once while it stays bad: states come often */
        log_warn("container %lld: %s%s%s%s holds a character outside [A-Za-z0-9._-]: that "
                 "alarm channel is not used",
                 c->uid, bad & 1 ? "pushover_user " : "", bad & 2 ? "pushover_token " : "",
                 bad & 4 ? "pushover_sound " : "", bad & 8 ? "pushbullet_token " : "");
    c->bad_keys = bad;
    c->freq_ms = alarm_freq_ms(s->alarms.freq);
    c->threshold = s->quota_threshold;
    c->seen = true;
    return true;
}

/* ---- delivery and its rate limit -------------------------------------- */

static void send_text(alarms_t *a, ctr_t *c, const char *text)
{
    if (a->o.sink)
        a->o.sink(a->o.sink_ctx, c->uid, &c->al, text);
    else if (a->dl)
        deliver_push(a->dl, c->uid, &c->al, text);
}

/* "[imperium] name (uid): msg", with what was held back before it. */
static char *message(const ctr_t *c, const char *msg, long long more, time_t since)
{
    if (more <= 0)
        return str_printf("[imperium] %s (%lld): %s", c->name ? c->name : "", c->uid, msg);
    struct tm tm;
    char hms[16] = "?";
    if (gmtime_r(&since, &tm))
        strftime(hms, sizeof hms, "%H:%M:%S", &tm);
    return str_printf("[imperium] %s (%lld): %s (%lld more alarm%s since %s)",
                      c->name ? c->name : "", c->uid, msg, more, more == 1 ? "" : "s", hms);
}

static void deliver_now(alarms_t *a, ctr_t *c, const char *msg, long long more, time_t since)
{
    char *text = message(c, msg, more, since);
    if (!text) {
        log_error("container %lld: alarm not delivered: out of memory", c->uid);
        return;
    }
    send_text(a, c, text);
    free(text);
    c->last = clock_now(a);
}

/* Deliver msg now, or hold it until the container's window opens. */
static void deliver_limited(alarms_t *a, ctr_t *c, const char *msg)
{
    long long now = clock_now(a);
    if (c->last < 0 || now - c->last >= c->freq_ms) {
        /* Held ones were delivered when their window opened (alarms_tick). */
        deliver_now(a, c, msg, 0, 0);
        return;
    }
    char *keep = strdup(msg);
    if (!keep) {
        log_error("container %lld: alarm not held: out of memory", c->uid);
        return;
    }
    if (!c->held++)
        c->held_since = time(NULL);
    free(c->held_text);
    c->held_text = keep;
}

/* The windows that opened: the newest held alarm, saying how many more. */
static void deliver_held(alarms_t *a)
{
    long long now = clock_now(a);
    for (size_t i = 0; i < a->n; i++) {
        ctr_t *c = &a->c[i];
        if (!c->held || now - c->last < c->freq_ms)
            continue;
        char *text = c->held_text;
        c->held_text = NULL;
        if (text)
            deliver_now(a, c, text, c->held - 1, c->held_since);
        free(text);
        c->held = 0;
    }
}

/* ---- system alarms ---------------------------------------------------- */

/* Before the channel exists (an OOM kill found while adopting): kept for
 * alarms_start, never lost. */
static void keep_early(alarms_t *a, char *body)
{
    char **grown = realloc(a->early, (a->n_early + 1) * sizeof *grown);
    if (!grown) {
        log_error("an alarm could not be kept for the API: out of memory");
        free(body);
        return;
    }
    a->early = grown;
    a->early[a->n_early++] = body;
}

static void post(alarms_t *a, char *body)
{
    if (a->o.post)
        a->o.post(a->o.sink_ctx, "alarms", body);
    else if (a->ch)
        channel_post(a->ch, "alarms", body);
    else
        keep_early(a, body);
}

/* The length of s cut to at most max bytes, not inside a UTF-8 character. */
static size_t utf8_cut(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--; /* s[n] continues a character: the cut goes before it */
    return n;
}

void alarms_raise(alarms_t *a, long long uid, const char *cls, const char *msg)
{
    if (!a)
        return;
    char cut[ALARM_MSG_MAX + 1];
    size_t len = utf8_cut(msg, ALARM_MSG_MAX);
    if (msg[len]) { /* one body per alarm, and each under the API's bound */
        memcpy(cut, msg, len);
        cut[len] = '\0';
        msg = cut;
    }
    char ref[48];
    snprintf(ref, sizeof ref, "%s-%lld", a->boot, ++a->seq);
    json_t *j = json_pack("{s:[{s:s,s:I,s:I,s:s,s:s}]}", "alarms", "ref", ref, "uid",
                          (json_int_t)uid, "unix", (json_int_t)time(NULL), "class", cls, "msg",
                          msg);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!body)
        log_error("container %lld: alarm %s not sent to the API: out of memory", uid, cls);
    else
        post(a, body);
    nodestats_add(NS_ALARMS_RAISED, 1);
    log_info("container %lld: alarm (%s): %s", uid, cls, msg);
    ctr_t *c = find(a, uid);
    if (c)
        deliver_limited(a, c, msg);
}

/* ---- the quota threshold ---------------------------------------------- */

static int usage(const alarms_t *a, long long uid, uint64_t *used, uint64_t *limit, err_t *e)
{
    if (a->o.usage)
        return a->o.usage(a->o.quota, a->o.containers_dir, (int)uid, used, limit, e);
    return quota_usage(a->o.quota, a->o.containers_dir, (int)uid, used, limit, e);
}

static void quota_check_one(alarms_t *a, ctr_t *c)
{
    uint64_t used = 0, limit = 0;
    err_t e = {0};
    if (c->threshold <= 0 || usage(a, c->uid, &used, &limit, &e) < 0 || !limit)
        return;
    /* used * 100 >= limit * threshold, without overflow for any real disk. */
    bool over = (long double)used * 100 >= (long double)limit * (long double)c->threshold;
    if (!over) {
        c->armed = true;
        return;
    }
    if (!c->armed)
        return;
    c->armed = false;
    char msg[200];
    snprintf(msg, sizeof msg, "disk quota: %llu MB used of %llu MB (over %lld%%)",
             (unsigned long long)(used >> 20), (unsigned long long)(limit >> 20),
             c->threshold);
    alarms_raise(a, c->uid, "quota", msg);
}

static void quota_check(alarms_t *a)
{
    if (a->o.quota_check_interval <= 0 || a->o.quota == QUOTA_OFF)
        return;
    long long now = clock_now(a);
    if (now < a->next_quota)
        return;
    a->next_quota = now + (long long)a->o.quota_check_interval * 1000;
    for (size_t i = 0; i < a->n; i++)
        if (a->c[i].seen)
            quota_check_one(a, &a->c[i]);
}

/* ---- API-raised alarms ------------------------------------------------- */

static char *seq_path(const alarms_t *a)
{
    return a->o.state_dir ? str_printf("%s/%s", a->o.state_dir, ALARM_SEQ_FILE) : NULL;
}

/* The last delivered id from <state_dir>/alarm_seq; -1 when there is none. */
static long long seq_load(const alarms_t *a)
{
    char *path = seq_path(a);
    FILE *f = path ? fopen(path, "re") : NULL;
    char line[32] = "";
    long long v = -1;
    if (f) {
        if (fgets(line, sizeof line, f) && !str_to_ll(str_trim(line), &v))
            v = -1;
        fclose(f);
        if (v < 0)
            log_warn("%s is not an alarm id: starting from the state's alarm_seq", path);
    }
    free(path);
    return v;
}

static void seq_save(alarms_t *a)
{
    char *path = seq_path(a), text[32];
    if (!path)
        return;
    int n = snprintf(text, sizeof text, "%lld\n", a->api_last);
    err_t e = {0};
    if (fs_write_atomic(path, text, (size_t)n, 0600, &e) < 0)
        log_error("alarms: %s (an alarm raised with the API may be delivered twice after a "
                  "restart)",
                  e.msg);
    free(path);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    buf_t *b = ud;
    return buf_append(b, p, size * n) < 0 ? 0 : size * n;
}

static void *fetch_main(void *arg)
{
    alarms_t *a = arg;
    fetch_t *f = &a->f;
    buf_t body = {0};
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(f->err, sizeof f->err, "out of memory");
    } else {
        curl_easy_setopt(c, CURLOPT_URL, f->url);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)FETCH_TIMEOUT_S);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "imperium-node/1.0");
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, a->o.server_name);
        curl_easy_setopt(c, CURLOPT_PASSWORD, a->o.secret);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
        CURLcode rc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK)
            snprintf(f->err, sizeof f->err, "%s", curl_easy_strerror(rc));
        else if (status != 200)
            snprintf(f->err, sizeof f->err, "the API answered %ld", status);
        else if (buf_append(&body, "", 1) == 0)
            f->answer = body.data, body.data = NULL;
        else
            snprintf(f->err, sizeof f->err, "out of memory");
        curl_easy_cleanup(c);
    }
    buf_free(&body);
    __atomic_store_n(&f->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void fetch_start(alarms_t *a)
{
    if (a->f.running || !a->o.api_url || clock_now(a) < a->fetch_retry_at)
        return;
    free(a->f.url);
    a->f = (fetch_t){.url = str_printf("%s%s/alarms?after=%lld", a->o.api_url,
                                       a->o.node_prefix ? a->o.node_prefix : "", a->api_last)};
    int rc = a->f.url ? pthread_create(&a->f.thread, NULL, fetch_main, a) : ENOMEM;
    if (rc) {
        log_error("alarms: cannot fetch the API's alarms: %s", strerror(rc));
        a->fetch_retry_at = clock_now(a) + BACKOFF_MIN_MS;
        return;
    }
    a->f.running = true;
}

/* One alarm of the API's answer: delivered (rate limited) unless its
 * container is not on this node any more. */
static void deliver_api_alarm(alarms_t *a, json_t *al)
{
    long long uid = json_integer_value(json_object_get(al, "uid"));
    const char *msg = json_string_value(json_object_get(al, "msg"));
    const char *vassal = json_string_value(json_object_get(al, "vassal"));
    ctr_t *c = find(a, uid);
    if (!c || !msg)
        return;
    char *text = vassal && *vassal ? str_printf("%s: %s", vassal, msg) : strdup(msg);
    if (!text) {
        log_error("container %lld: alarm not delivered: out of memory", uid);
        return;
    }
    deliver_limited(a, c, text);
    free(text);
}

/* Deliver the answer's alarms; false when it is not what the API sends.
 * *count: how many it held; *seq: the API's alarm_seq when it answered. */
static bool fetch_apply(alarms_t *a, const char *answer, size_t *count, long long *seq)
{
    json_t *j = json_loads(answer, 0, NULL), *list = json_object_get(j, "alarms");
    if (!json_is_array(list)) {
        json_decref(j);
        return false;
    }
    size_t i;
    json_t *al;
    json_array_foreach(list, i, al)
    {
        long long id = json_integer_value(json_object_get(al, "id"));
        if (id <= a->api_last)
            continue;
        deliver_api_alarm(a, al);
        a->api_last = id;
    }
    *count = json_array_size(list);
    *seq = json_integer_value(json_object_get(j, "alarm_seq"));
    json_decref(j);
    return true;
}

static void fetch_collect(alarms_t *a)
{
    if (!a->f.running || !__atomic_load_n(&a->f.done, __ATOMIC_ACQUIRE))
        return;
    pthread_join(a->f.thread, NULL);
    a->f.running = false;
    long long before = a->api_last;
    size_t count = 0;
    long long seq = 0;
    if (a->f.answer && fetch_apply(a, a->f.answer, &count, &seq)) {
        a->fetch_failures = 0;
        /* A last page: everything up to the API's number then was seen (ids
         * between belong to no container of ours any more). */
        if (count < FETCH_PAGE && a->api_last < seq)
            a->api_last = seq;
        if (a->api_last != before)
            seq_save(a);
        /* The state may be newer than the answer: alarms_tick asks again. */
    } else {
        a->fetch_failures++;
        if (a->fetch_failures == 1)
            log_warn("alarms: GET %s: %s", a->f.url,
                     a->f.answer ? "not the API's answer" : a->f.err);
        a->fetch_retry_at = clock_now(a) + backoff_ms(a->fetch_failures);
    }
    free(a->f.answer);
    a->f.answer = NULL;
}

/* ---- the interface ------------------------------------------------------- */

void alarms_set_state(alarms_t *a, const spec_state_t *state)
{
    if (!a || !state)
        return;
    for (size_t i = 0; i < a->n; i++)
        a->c[i].seen = false;
    for (size_t i = 0; i < state->n_containers; i++) {
        const spec_container_t *s = &state->containers[i];
        if (s->error)
            continue;
        ctr_t *c = find_or_add(a, s->uid);
        if (!c || !ctr_update(c, s))
            log_error("container %lld: alarm settings not taken: out of memory", s->uid);
    }
    /* Forget the containers that left (and compact). */
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (a->c[i].seen)
            a->c[k++] = a->c[i];
        else
            ctr_clear(&a->c[i]);
    }
    a->n = k;
    a->api_seq = state->server.alarm_seq;
    if (!a->have_state) {
        a->have_state = true;
        long long saved = seq_load(a);
        /* No file: history is never delivered. */
        a->api_last = saved >= 0 ? saved : a->api_seq;
        if (saved < 0)
            seq_save(a);
    }
    if (a->api_seq > a->api_last)
        fetch_start(a);
}

void alarms_tick(alarms_t *a)
{
    if (!a)
        return;
    fetch_collect(a);
    if (!a->f.running && a->have_state && a->api_seq > a->api_last)
        fetch_start(a);
    quota_check(a);
    deliver_held(a);
}

long long alarms_next_deadline(const alarms_t *a)
{
    if (!a)
        return -1;
    long long d = -1, now = clock_now(a);
#define EARLIER(t) (d = (d < 0 || (t) < d) ? (t) : d)
    if (a->f.running)
        EARLIER(now + FETCH_POLL_MS);
    else if (a->have_state && a->api_seq > a->api_last)
        EARLIER(a->fetch_retry_at);
    if (a->o.quota_check_interval > 0 && a->o.quota != QUOTA_OFF && a->n)
        EARLIER(a->next_quota);
    for (size_t i = 0; i < a->n; i++)
        if (a->c[i].held)
            EARLIER(sat_add(a->c[i].last, a->c[i].freq_ms));
#undef EARLIER
    return d;
}

alarms_t *alarms_new(const alarms_opts_t *o, channel_t *ch, err_t *e)
{
    alarms_t *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(e, ERR_INTERNAL, "alarms: out of memory");
        return NULL;
    }
    a->o = *o;
    a->ch = ch;
    unsigned char r[8];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        err_set(e, ERR_INTERNAL, "alarms: getrandom: %s", strerror(errno));
        free(a);
        return NULL;
    }
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(a->boot + 2 * i, 3, "%02x", r[i]);
    if (ch && alarms_start(a, ch, e) < 0) {
        alarms_free(a);
        return NULL;
    }
    return a;
}

int alarms_start(alarms_t *a, channel_t *ch, err_t *e)
{
    if (!a->o.sink && !a->dl && !(a->dl = deliver_new(&a->o.deliver, e)))
        return -1;
    a->ch = ch;
    for (size_t i = 0; i < a->n_early; i++)
        post(a, a->early[i]);
    free(a->early);
    a->early = NULL;
    a->n_early = 0;
    return 0;
}

void alarms_free(alarms_t *a)
{
    if (!a)
        return;
    if (a->f.running)
        pthread_join(a->f.thread, NULL);
    free(a->f.answer);
    free(a->f.url);
    deliver_free(a->dl);
    for (size_t i = 0; i < a->n_early; i++)
        free(a->early[i]);
    free(a->early);
    for (size_t i = 0; i < a->n; i++)
        ctr_clear(&a->c[i]);
    free(a->c);
    free(a);
}
