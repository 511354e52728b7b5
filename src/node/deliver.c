/* deliver.c - alarm delivery (deliver.h, docs/ALARMS.md).
 *
 * One thread owns every delivery in flight: HTTP requests in a libcurl multi
 * handle, XMPP connections in one libstrophe context (with xmpp_server unset,
 * their servers found by xmppdns.c, stepped here too), imperium-wall children
 * read through a pipe.  Nothing in it waits on one delivery: the loop polls
 * curl (waking on deliver_push), steps libstrophe and the pipes, and starts
 * what is due.  A failed job is retried after a backoff of its own (the
 * job is one channel of one container), up to DELIVER_MAX_TRIES.
 *
 * A wall child's exit status cannot be waited for: the node's SIGCHLD
 * handler (sv_reap) reaps every child.  imperium-wall prints the number of
 * terminals it wrote only when it succeeded, so the pipe tells. */
#include "deliver.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <strophe.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/strutil.h"
#include "../common/validate.h"
#include "nodestats.h"
#include "xmppdns.h"

extern char **environ;

#define HTTP_TIMEOUT_S 15
#define JOB_TIMEOUT_MS 20000 /* an XMPP session or a wall child */
#define IDLE_POLL_MS 1000
#define BUSY_POLL_MS 20 /* while libstrophe or a pipe needs stepping */
#define REPLY_KEPT 200  /* bytes of a service's answer kept for the error log line */
#define WALL_KILL_WAIT_MS 1000 /* a SIGKILLed wall child is gone by then */
#define TITLE "imperium alarm"

typedef struct job {
    struct job *next;
    delivery_channel_t ch;
    long long uid;
    int tries;
    long long not_before, started;
    bool running, done, ok;
    char *text;
    /* HTTP */
    char *url, *body, *header;
    CURL *easy;
    struct curl_slist *hl;
    char errbuf[CURL_ERROR_SIZE];
    char reply[REPLY_KEPT + 1]; /* the start of the service's answer */
    size_t reply_len;
    /* XMPP */
    char *jid, *pass, *dests;
    xmpp_conn_t *conn;
    bool sent;
    xmppdns_t *dns; /* finding the jid's own server (xmpp_server unset) */
    bool refused;   /* by the address rule: not tried again */
    /* shell */
    pid_t pid;
    int pidfd; /* the child's; -1: none (or no pidfd support) */
    int out_fd;
    char out[32];
    size_t out_len;
} job_t;

struct deliver {
    deliver_opts_t o;
    char *wall; /* o.wall, or the one beside this program */
    char *xmpp_host;
    unsigned short xmpp_port;
    xmppdns_net4_t *deny; /* the container network and nat_deny (xmppdns_check) */
    size_t ndeny;
    bool ares_ready;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    job_t *incoming; /* under mu, pushed by deliver_push */
    bool stop;       /* under mu */
    /* the thread's own */
    job_t *jobs;
    CURLM *multi;
    xmpp_ctx_t *xctx;
};

static const char *const channel_names[DC__COUNT] = {"shell", "xmpp", "pushover", "pushbullet",
                                                     "slack"};

static void job_free(job_t *j)
{
    if (!j)
        return;
    free(j->text);
    free(j->url);
    free(j->body);
    free(j->header);
    if (j->pass) {
        explicit_bzero(j->pass, strlen(j->pass));
        free(j->pass);
    }
    free(j->jid);
    free(j->dests);
    free(j);
}

/* ---- request bodies ---------------------------------------------------- */

static int form_field(buf_t *b, const char *name, const char *value)
{
    char *v = curl_easy_escape(NULL, value, 0);
    if (!v)
        return -1;
    int rc = buf_printf(b, "%s%s=%s", b->len ? "&" : "", name, v);
    curl_free(v);
    return rc;
}

char *deliver_pushover_body(const char *token, const char *user, const char *sound,
                            const char *title, const char *msg)
{
    buf_t b = {0};
    if (form_field(&b, "token", token) < 0 || form_field(&b, "user", user) < 0 ||
        form_field(&b, "message", msg) < 0 || form_field(&b, "title", title) < 0 ||
        (sound && *sound && form_field(&b, "sound", sound) < 0)) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static char *json_text(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

char *deliver_pushbullet_body(const char *title, const char *msg)
{
    return json_text(json_pack("{s:s, s:s, s:s}", "type", "note", "title", title, "body", msg));
}

char *deliver_slack_body(const char *msg)
{
    return json_text(json_pack("{s:s}", "text", msg));
}

/* ---- URL rules ----------------------------------------------------------- */

/* Is host one of the comma-separated hosts (exact, any case)? */
static bool host_listed(const char *host, size_t len, const char *hosts)
{
    for (const char *p = hosts; p && *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t'))
            p++, n--;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == len && !strncasecmp(p, host, len))
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

int deliver_slack_url_ok(const char *url, const char *hosts, bool insecure_http, err_t *e)
{
    const char *rest;
    if (!strncasecmp(url, "https://", 8))
        rest = url + 8;
    else if (insecure_http && !strncasecmp(url, "http://", 7))
        rest = url + 7;
    else
        return err_set(e, ERR_INPUT, "slack_webhook must be an https:// URL");
    size_t auth = strcspn(rest, "/?#");
    if (memchr(rest, '@', auth))
        return err_set(e, ERR_INPUT, "slack_webhook must not carry a user name");
    /* The host ends at the port (an IPv6 literal is never a listed host). */
    size_t hlen = strcspn(rest, ":/?#");
    if (!hlen || !host_listed(rest, hlen, hosts))
        return err_set(e, ERR_INPUT, "slack_webhook's host %.*s is not in slack_hosts (%s)",
                       (int)hlen, rest, hosts && *hosts ? hosts : "none");
    if (strpbrk(url, " \t\r\n"))
        return err_set(e, ERR_INPUT, "slack_webhook must not contain blanks");
    return 0;
}

/* A supplier URL (pushover_url, pushbullet_url): https, or http when allowed. */
static bool supplier_url_ok(const char *url, bool insecure_http)
{
    return url && (!strncasecmp(url, "https://", 8) ||
                   (insecure_http && !strncasecmp(url, "http://", 7)));
}

/* ---- queueing (any thread) --------------------------------------------- */

static bool set(const char *s)
{
    return s && *s;
}

static job_t *job_new(delivery_channel_t ch, long long uid, const char *text)
{
    job_t *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->ch = ch;
    j->uid = uid;
    j->out_fd = -1;
    j->pid = -1;
    j->pidfd = -1;
    if (!(j->text = strdup(text))) {
        free(j);
        return NULL;
    }
    return j;
}

/* The HTTP part of a job; false when out of memory. */
static bool job_http(job_t *j, const char *url, char *body, char *header)
{
    j->url = url ? strdup(url) : NULL;
    j->body = body;
    j->header = header;
    return j->url && j->body && (j->header || j->ch != DC_PUSHBULLET);
}

/* A service key outside [A-Za-z0-9._-] (a state from an API that did not
 * check them; alarms.c drops them first, logged once): no job. */
static job_t *bad_key(long long uid, delivery_channel_t ch)
{
    log_warn("container %lld: alarm not sent by %s: its key holds a character outside "
             "[A-Za-z0-9._-]",
             uid, channel_names[ch]);
    return NULL;
}

/* The job of channel ch for these settings, NULL when the container did not
 * set that channel (or it may not be used: logged) or out of memory. */
static job_t *job_for(const deliver_t *d, delivery_channel_t ch, long long uid,
                      const spec_alarms_t *al, const char *text)
{
    err_t e = {0};
    switch (ch) {
    case DC_SHELL:
        if (!d->wall)
            return NULL;
        break;
    case DC_XMPP:
        if (!set(al->jid) || !set(al->jid_secret) || !set(al->jid_destinations))
            return NULL;
        break;
    case DC_PUSHOVER:
        if (!set(al->pushover_user) || !set(al->pushover_token))
            return NULL;
        if (!alarm_token_valid(al->pushover_user) || !alarm_token_valid(al->pushover_token) ||
            (set(al->pushover_sound) && !alarm_token_valid(al->pushover_sound)))
            return bad_key(uid, ch);
        break;
    case DC_PUSHBULLET:
        if (!set(al->pushbullet_token))
            return NULL;
        if (!alarm_token_valid(al->pushbullet_token))
            return bad_key(uid, ch); /* it goes into a header: no CR LF may */
        break;
    case DC_SLACK:
        if (!set(al->slack_webhook))
            return NULL;
        if (deliver_slack_url_ok(al->slack_webhook, d->o.slack_hosts, d->o.insecure_http, &e) <
            0) {
            log_warn("container %lld: alarm not sent to Slack: %s", uid, e.msg);
            nodestats_delivery(DC_SLACK, 0);
            return NULL;
        }
        break;
    default:
        return NULL;
    }
    job_t *j = job_new(ch, uid, text);
    if (!j)
        return NULL;
    bool ok = true;
    if (ch == DC_XMPP) {
        ok = (j->jid = strdup(al->jid)) && (j->pass = strdup(al->jid_secret)) &&
             (j->dests = strdup(al->jid_destinations));
    } else if (ch == DC_PUSHOVER) {
        ok = job_http(j, d->o.pushover_url,
                      deliver_pushover_body(al->pushover_token, al->pushover_user,
                                            al->pushover_sound, TITLE, text),
                      NULL);
    } else if (ch == DC_PUSHBULLET) {
        ok = job_http(j, d->o.pushbullet_url, deliver_pushbullet_body(TITLE, text),
                      str_printf("Access-Token: %s", al->pushbullet_token));
    } else if (ch == DC_SLACK) {
        ok = job_http(j, al->slack_webhook, deliver_slack_body(text), NULL);
    }
    if (!ok) {
        log_error("container %lld: alarm not sent by %s: out of memory", uid, channel_names[ch]);
        job_free(j);
        return NULL;
    }
    return j;
}

void deliver_push(deliver_t *d, long long uid, const spec_alarms_t *al, const char *text)
{
    static const spec_alarms_t none;
    if (!al)
        al = &none;
    job_t *head = NULL, **tail = &head;
    for (int ch = 0; ch < DC__COUNT; ch++) {
        job_t *j = job_for(d, (delivery_channel_t)ch, uid, al, text);
        if (j) {
            *tail = j;
            tail = &j->next;
        }
    }
    if (!head)
        return;
    pthread_mutex_lock(&d->mu);
    *tail = d->incoming;
    d->incoming = head;
    pthread_mutex_unlock(&d->mu);
    curl_multi_wakeup(d->multi);
}

/* ---- HTTP ---------------------------------------------------------------- */

/* The service's answer: never to the node's stdout (libcurl's default, where
 * a blocked pipe would stall this thread); its start is kept for the log. */
static size_t on_reply(char *p, size_t size, size_t n, void *ud)
{
    job_t *j = ud;
    size_t len = size * n, room = REPLY_KEPT - j->reply_len;
    size_t take = len < room ? len : room;
    memcpy(j->reply + j->reply_len, p, take);
    j->reply_len += take;
    j->reply[j->reply_len] = '\0';
    return len;
}

static int http_start(deliver_t *d, job_t *j)
{
    if (!supplier_url_ok(j->url, d->o.insecure_http || j->ch == DC_SLACK)) {
        log_warn("container %lld: %s URL %s is not https (alarm_insecure_http is off)", j->uid,
                 channel_names[j->ch], j->url);
        return -1;
    }
    const char *ctype = j->ch == DC_PUSHOVER ? "Content-Type: application/x-www-form-urlencoded"
                                             : "Content-Type: application/json";
    struct curl_slist *h = curl_slist_append(NULL, ctype);
    if (h && j->header) {
        struct curl_slist *h2 = curl_slist_append(h, j->header);
        if (!h2) {
            curl_slist_free_all(h);
            h = NULL;
        } else {
            h = h2;
        }
    }
    CURL *c = h ? curl_easy_init() : NULL;
    if (!c) {
        curl_slist_free_all(h);
        return -1;
    }
    j->hl = h;
    j->easy = c;
    j->errbuf[0] = '\0';
    j->reply_len = 0;
    j->reply[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, j->url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_reply);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(j->body));
    curl_easy_setopt(c, CURLOPT_USERAGENT, "imperium-node/1.0");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)HTTP_TIMEOUT_S);
    /* A customer's webhook must not lead anywhere else. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, d->o.insecure_http ? "https,http" : "https");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, j->errbuf);
    curl_easy_setopt(c, CURLOPT_PRIVATE, j);
    if (curl_multi_add_handle(d->multi, c) != CURLM_OK)
        return -1;
    return 0;
}

static void http_cleanup(deliver_t *d, job_t *j)
{
    if (j->easy) {
        curl_multi_remove_handle(d->multi, j->easy);
        curl_easy_cleanup(j->easy);
        j->easy = NULL;
    }
    curl_slist_free_all(j->hl);
    j->hl = NULL;
}

/* s with its control characters (a service's answer) made blanks: one log line. */
static const char *one_line(char *s)
{
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return s;
}

static void http_finished(deliver_t *d)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(d->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        job_t *j = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
        if (!j)
            continue;
        long status = 0;
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        j->ok = m->data.result == CURLE_OK && status >= 200 && status < 300;
        if (!j->ok && m->data.result != CURLE_OK)
            log_warn("container %lld: alarm to %s failed: %s", j->uid, channel_names[j->ch],
                     j->errbuf[0] ? j->errbuf : curl_easy_strerror(m->data.result));
        else if (!j->ok)
            log_warn("container %lld: alarm to %s failed: the service answered %ld: %s",
                     j->uid, channel_names[j->ch], status, one_line(j->reply));
        j->done = true;
    }
}

/* ---- XMPP ---------------------------------------------------------------- */

static void xmpp_on_conn(xmpp_conn_t *conn, xmpp_conn_event_t ev, int error,
                         xmpp_stream_error_t *se, void *ud)
{
    (void)error, (void)se;
    job_t *j = ud;
    if (ev != XMPP_CONN_CONNECT) {
        /* Disconnected, or the connection (or authentication) failed.  A
         * job already ended (timed out) keeps its verdict: releasing its
         * connection fires this callback once more. */
        if (j->done)
            return;
        j->ok = j->sent;
        j->done = true;
        return;
    }
    xmpp_ctx_t *ctx = xmpp_conn_get_context(conn);
    /* strtok_r cuts its string: a copy, the job may be tried again. */
    char *dests = strdup(j->dests);
    for (char *save = NULL, *to = dests ? strtok_r(dests, ", ", &save) : NULL; to;
         to = strtok_r(NULL, ", ", &save)) {
        xmpp_stanza_t *msg = xmpp_message_new(ctx, "chat", to, NULL);
        if (!msg)
            continue;
        xmpp_message_set_body(msg, j->text);
        xmpp_send(conn, msg);
        xmpp_stanza_release(msg);
        j->sent = true;
    }
    free(dests);
    /* Sends what is queued, then closes: the DISCONNECT event ends the job. */
    xmpp_disconnect(conn);
}

/* Connect to host:port; libstrophe still takes the jid's domain for the
 * stream and the TLS certificate check (host is only where it connects). */
static int xmpp_connect(deliver_t *d, job_t *j, const char *host, unsigned short port)
{
    if (!(j->conn = xmpp_conn_new(d->xctx)))
        return -1;
    xmpp_conn_set_flags(j->conn, d->o.xmpp_insecure ? XMPP_CONN_FLAG_DISABLE_TLS
                                                    : XMPP_CONN_FLAG_MANDATORY_TLS);
    xmpp_conn_set_jid(j->conn, j->jid);
    xmpp_conn_set_pass(j->conn, j->pass);
    if (xmpp_connect_client(j->conn, host, port, xmpp_on_conn, j) != XMPP_EOK) {
        log_warn("container %lld: XMPP: cannot connect to %s:%u for %s", j->uid, host, port,
                 j->jid);
        return -1;
    }
    return 0;
}

/* xmpp_server set: the supplier's server.  Unset: the jid's own, found by
 * xmppdns (never libstrophe's own lookup: it blocks this thread and would
 * reach any address a customer's domain names). */
static int xmpp_start(deliver_t *d, job_t *j)
{
    j->sent = false;
    if (d->xmpp_host)
        return xmpp_connect(d, j, d->xmpp_host, d->xmpp_port);
    char domain[256];
    err_t e = {0};
    if (xmppdns_domain(j->jid, domain, sizeof domain, &e) < 0)
        j->refused = true; /* the same jid next time */
    else if ((j->dns = xmppdns_start(domain, d->deny, d->ndeny, XMPPDNS_TIMEOUT_MS, &e)))
        return 0;
    log_warn("container %lld: alarm not sent by XMPP: %s", j->uid, e.msg);
    return -1;
}

/* A lookup in flight: connect to what it found, or end the job. */
static void xmpp_dns_step(deliver_t *d, job_t *j)
{
    char ip[INET6_ADDRSTRLEN];
    int port = 0;
    bool refused = false;
    err_t e = {0};
    int rc = xmppdns_step(j->dns, ip, &port, &refused, &e);
    if (rc == 0)
        return;
    xmppdns_free(j->dns);
    j->dns = NULL;
    if (rc > 0 && xmpp_connect(d, j, ip, (unsigned short)port) == 0)
        return;
    if (rc < 0 && refused)
        log_warn("container %lld: alarm not sent by XMPP as %s: %s (with xmpp_server unset "
                 "the node connects only to public addresses on port 5222 or 5223)",
                 j->uid, j->jid, e.msg);
    else if (rc < 0)
        log_warn("container %lld: alarm to XMPP as %s: %s", j->uid, j->jid, e.msg);
    j->refused = refused;
    j->done = true, j->ok = false;
}

static void xmpp_cleanup(job_t *j)
{
    xmppdns_free(j->dns);
    j->dns = NULL;
    if (j->conn) {
        xmpp_conn_release(j->conn);
        j->conn = NULL;
    }
}

/* ---- shells --------------------------------------------------------------- */

/* posix_spawn of path with stdout to out and stdin from /dev/null; an
 * errno value.  The daemon blocks SIGTERM and SIGCHLD in every thread (its
 * signalfd): the child starts with no signal blocked. */
static int spawn(const char *path, char *const argv[], int out, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none;
    sigemptyset(&none);
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc)
        return rc;
    if ((rc = posix_spawnattr_init(&at))) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    if (!(rc = posix_spawnattr_setsigmask(&at, &none)) &&
        !(rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK)) &&
        !(rc = posix_spawn_file_actions_adddup2(&fa, out, STDOUT_FILENO)) &&
        !(rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0)))
        rc = posix_spawn(pid, path, &fa, &at, argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

static int shell_start(deliver_t *d, job_t *j)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    char uid[24];
    snprintf(uid, sizeof uid, "%lld", j->uid);
    /* imperium-wall starts its line with "[imperium] " itself. */
    char *text = j->text;
    if (str_starts_with(text, "[imperium] "))
        text += strlen("[imperium] ");
    char *argv[] = {"imperium-wall", "--state-dir", (char *)d->o.state_dir, uid, text, NULL};
    pid_t pid = -1;
    int rc = spawn(d->wall, argv, p[1], &pid);
    close(p[1]);
    if (rc) {
        close(p[0]);
        log_warn("container %lld: alarm to the shells: %s: %s", j->uid, d->wall, strerror(rc));
        return -1;
    }
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    /* Its pidfd, to signal and wait for this child and never a process that
     * reused its pid after sv_reap reaped it (shell_cleanup). */
    j->pidfd = pidfd_open(pid, 0);
    if (j->pidfd < 0 && errno == ESRCH)
        pid = -1; /* it ended and was reaped already: nothing left to end */
    j->pid = pid;
    j->out_fd = p[0];
    j->out_len = 0;
    return 0;
}

/* Read the child's answer; at EOF the job is done (ok: it printed a count). */
static void shell_step(job_t *j)
{
    for (;;) {
        char c;
        ssize_t n = read(j->out_fd, &c, 1);
        if (n == 1) {
            if (j->out_len < sizeof j->out - 1)
                j->out[j->out_len++] = c;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        break;
    }
    j->out[j->out_len] = '\0';
    long long count;
    j->ok = str_to_ll(str_trim(j->out), &count) && count >= 0;
    if (!j->ok)
        log_warn("container %lld: imperium-wall failed (its errors are on the node's stderr)",
                 j->uid);
    j->done = true;
}

/* End the wall child with its job: one still running (it timed out, or it
 * closed its stdout and lingers) is SIGKILLed and reaped.  The node's
 * sv_reap (the main thread's SIGCHLD) reaps every child too: whichever
 * waits first reaps it and the other gets ECHILD, which is fine.  Signals
 * go through the pidfd, so a pid that sv_reap freed and the kernel gave to
 * another process is never hit. */
static void shell_cleanup(job_t *j)
{
    if (j->out_fd >= 0) {
        close(j->out_fd);
        j->out_fd = -1;
    }
    if (j->pidfd >= 0) {
        siginfo_t si = {0};
        if (waitid(P_PIDFD, (id_t)j->pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid == 0) {
            if (pidfd_send_signal(j->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
                log_warn("container %lld: kill imperium-wall %d: %s", j->uid, (int)j->pid,
                         strerror(errno));
            struct pollfd p = {.fd = j->pidfd, .events = POLLIN};
            while (poll(&p, 1, WALL_KILL_WAIT_MS) < 0 && errno == EINTR)
                ;
            waitid(P_PIDFD, (id_t)j->pidfd, &si, WEXITED | WNOHANG);
        }
        close(j->pidfd);
        j->pidfd = -1;
    } else if (j->pid > 0 && waitpid(j->pid, NULL, WNOHANG) == 0) {
        /* No pidfds (Linux < 5.3): by pid, as it still is our unreaped child. */
        kill(j->pid, SIGKILL);
        waitpid(j->pid, NULL, 0);
    }
    j->pid = -1;
}

/* ---- the job's life ------------------------------------------------------ */

static void job_cleanup(deliver_t *d, job_t *j)
{
    http_cleanup(d, j);
    xmpp_cleanup(j);
    shell_cleanup(j);
    j->running = false;
}

static int job_start(deliver_t *d, job_t *j)
{
    j->running = true;
    j->done = j->ok = false;
    j->started = now_ms();
    switch (j->ch) {
    case DC_SHELL:
        return shell_start(d, j);
    case DC_XMPP:
        return xmpp_start(d, j);
    default:
        return http_start(d, j);
    }
}

static long long retry_delay(const deliver_t *d, int tries)
{
    long long base = d->o.retry_base_ms > 0 ? d->o.retry_base_ms : BACKOFF_MIN_MS;
    long long ms = base;
    for (int i = 1; i < tries && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

/* A job ended: counted; freed when sent or out of tries, else scheduled again.
 * Returns true when it was freed. */
static bool job_end(deliver_t *d, job_t *j)
{
    job_cleanup(d, j);
    nodestats_delivery(j->ch, j->ok);
    j->tries++;
    if (j->ok) {
        log_debug("container %lld: alarm delivered by %s", j->uid, channel_names[j->ch]);
        return true;
    }
    if (j->refused)
        return true; /* logged: the same answer would refuse it again */
    if (j->tries >= DELIVER_MAX_TRIES) {
        log_warn("container %lld: alarm to %s given up after %d tries", j->uid,
                 channel_names[j->ch], j->tries);
        return true;
    }
    j->done = false;
    j->not_before = now_ms() + retry_delay(d, j->tries);
    return false;
}

/* Start what is due, end what finished; the poll timeout in ms. */
static int step_jobs(deliver_t *d)
{
    long long now = now_ms(), next = now + IDLE_POLL_MS;
    bool busy = false;
    for (job_t **pp = &d->jobs; *pp;) {
        job_t *j = *pp;
        if (!j->running && j->not_before <= now && job_start(d, j) < 0)
            j->done = true, j->ok = false;
        if (j->running && !j->done && j->ch == DC_SHELL)
            shell_step(j);
        if (j->running && !j->done && j->dns)
            xmpp_dns_step(d, j);
        if (j->running && !j->done && j->ch != DC_PUSHOVER && j->ch != DC_PUSHBULLET &&
            j->ch != DC_SLACK &&
            now - j->started > (d->o.job_timeout_ms > 0 ? d->o.job_timeout_ms : JOB_TIMEOUT_MS)) {
            log_warn("container %lld: alarm to %s timed out", j->uid, channel_names[j->ch]);
            j->done = true, j->ok = false;
        }
        if (j->done && job_end(d, j)) {
            *pp = j->next;
            job_free(j);
            continue;
        }
        if (j->running && (j->ch == DC_SHELL || j->ch == DC_XMPP))
            busy = true;
        if (!j->running && j->not_before < next)
            next = j->not_before;
        pp = &j->next;
    }
    long long t = next - now;
    if (busy && t > BUSY_POLL_MS)
        t = BUSY_POLL_MS;
    return t < 0 ? 0 : (int)t;
}

/* Append the jobs deliver_push queued, in their order; false when stopping. */
static bool take_incoming(deliver_t *d)
{
    pthread_mutex_lock(&d->mu);
    job_t *in = d->incoming;
    d->incoming = NULL;
    bool stop = d->stop;
    pthread_mutex_unlock(&d->mu);
    /* deliver_push prepends batches: reverse to keep the oldest first. */
    job_t *rev = NULL;
    while (in) {
        job_t *n = in->next;
        in->next = rev;
        rev = in;
        in = n;
    }
    job_t **tail = &d->jobs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = rev;
    return !stop;
}

static void *thread_main(void *arg)
{
    deliver_t *d = arg;
    while (take_incoming(d)) {
        int timeout = step_jobs(d);
        int running;
        curl_multi_perform(d->multi, &running);
        http_finished(d);
        xmpp_run_once(d->xctx, 1);
        curl_multi_poll(d->multi, NULL, 0, timeout, NULL);
        curl_multi_perform(d->multi, &running);
        http_finished(d);
    }
    return NULL;
}

/* ---- life ------------------------------------------------------------------ */

/* imperium-wall: the setting, or beside the running program (make builds
 * them into one directory, like imperium-init).  Not found: no shells
 * (logged), the other channels still work. */
static int find_wall(deliver_t *d, err_t *e)
{
    if (set(d->o.wall)) {
        d->wall = strdup(d->o.wall);
    } else {
        char path[PATH_MAX];
        if (fs_beside_self("imperium-wall", path, sizeof path, e) < 0)
            return -1;
        d->wall = strdup(path);
    }
    if (!d->wall)
        return err_set(e, ERR_INTERNAL, "out of memory");
    if (access(d->wall, X_OK) < 0) {
        log_warn("alarms reach no shell: %s: %s (install it beside imperium-node or in ../lib/imperium, or set "
                 "wall = PATH)",
                 d->wall, strerror(errno));
        free(d->wall);
        d->wall = NULL;
    }
    return 0;
}

static int parse_xmpp_server(deliver_t *d, err_t *e)
{
    const char *s = d->o.xmpp_server;
    if (!set(s))
        return 0;
    const char *colon = strrchr(s, ':');
    long long port = 5222;
    if (colon && (!str_to_ll(colon + 1, &port) || port < 1 || port > 65535))
        return err_set(e, ERR_INPUT, "xmpp_server %s: the port must be 1-65535", s);
    size_t n = colon ? (size_t)(colon - s) : strlen(s);
    if (!n)
        return err_set(e, ERR_INPUT, "xmpp_server %s: no host", s);
    if (!(d->xmpp_host = strndup(s, n)))
        return err_set(e, ERR_INTERNAL, "out of memory");
    d->xmpp_port = (unsigned short)port;
    return 0;
}

deliver_t *deliver_new(const deliver_opts_t *o, err_t *e)
{
    deliver_t *d = calloc(1, sizeof *d);
    if (!d) {
        err_set(e, ERR_INTERNAL, "alarm delivery: out of memory");
        return NULL;
    }
    d->o = *o;
    pthread_mutex_init(&d->mu, NULL);
    if (parse_xmpp_server(d, e) < 0 || find_wall(d, e) < 0 ||
        xmppdns_deny_add(&d->deny, &d->ndeny, o->container_network, "container_network", e) <
            0 ||
        xmppdns_deny_add(&d->deny, &d->ndeny, o->nat_deny, "nat_deny", e) < 0)
        goto fail;
    if (xmppdns_init(e) < 0)
        goto fail;
    d->ares_ready = true;
    xmpp_initialize();
    d->multi = curl_multi_init();
    d->xctx = xmpp_ctx_new(NULL, NULL);
    if (!d->multi || !d->xctx) {
        err_set(e, ERR_INTERNAL, "alarm delivery: out of memory (libcurl or libstrophe)");
        goto fail;
    }
    int rc = pthread_create(&d->thread, NULL, thread_main, d);
    if (rc) {
        err_set(e, ERR_INTERNAL, "alarm delivery: pthread_create: %s", strerror(rc));
        goto fail;
    }
    d->started = true;
    return d;
fail:
    deliver_free(d);
    return NULL;
}

static size_t free_list(deliver_t *d, job_t *j)
{
    size_t n = 0;
    while (j) {
        job_t *next = j->next;
        job_cleanup(d, j);
        job_free(j);
        j = next;
        n++;
    }
    return n;
}

/* XMPP sessions still open at exit are closed through libstrophe's own
 * disconnect (releasing a connected session leaks what it had queued),
 * waiting at most XMPP_DRAIN_MS: a stop is not held by a slow server. */
#define XMPP_DRAIN_MS 500
static bool xmpp_open(const deliver_t *d)
{
    for (const job_t *j = d->jobs; j; j = j->next)
        if (j->conn && !xmpp_conn_is_disconnected(j->conn))
            return true;
    return false;
}

static void xmpp_drain(deliver_t *d)
{
    if (!d->xctx || !xmpp_open(d))
        return;
    for (job_t *j = d->jobs; j; j = j->next)
        if (j->conn && !xmpp_conn_is_disconnected(j->conn)) {
            j->done = true; /* dropped: the callback keeps no verdict */
            xmpp_disconnect(j->conn);
        }
    long long end = now_ms() + XMPP_DRAIN_MS;
    while (xmpp_open(d) && now_ms() < end)
        xmpp_run_once(d->xctx, 10);
}

void deliver_free(deliver_t *d)
{
    if (!d)
        return;
    if (d->started) {
        pthread_mutex_lock(&d->mu);
        d->stop = true;
        pthread_mutex_unlock(&d->mu);
        curl_multi_wakeup(d->multi);
        pthread_join(d->thread, NULL);
    }
    xmpp_drain(d);
    size_t n = free_list(d, d->jobs) + free_list(d, d->incoming);
    if (n)
        log_info("alarm delivery: %zu deliveries still pending at exit were dropped", n);
    if (d->xctx) {
        xmpp_ctx_free(d->xctx);
        xmpp_shutdown();
    }
    if (d->multi)
        curl_multi_cleanup(d->multi);
    free(d->xmpp_host);
    free(d->deny);
    if (d->ares_ready)
        xmppdns_cleanup();
    free(d->wall);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
