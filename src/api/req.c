/* req.c - the request as handlers see it: its query arguments, headers and
 * JSON body, and the replies they end with.  It knows nothing of routes,
 * authentication or how the reply is sent (dispatch.c). */
#include "req.h"
#include "../common/log.h"

#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void reply(req_t *r, int status, json_t *body)
{
    free(r->text); /* the last reply*() wins */
    r->text = NULL;
    json_decref(r->out);
    r->status = status;
    r->out = body;
}

void reply_text(req_t *r, int status, char *text, const char *content_type)
{
    free(r->text);
    r->text = NULL;
    if (!text)
        return reply_internal(r, NULL);
    json_decref(r->out);
    r->out = NULL;
    r->status = status;
    r->text = text;
    r->content_type = content_type;
}

void reply_ok(req_t *r) { reply(r, 200, json_pack("{s:s}", "message", "Ok")); }

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not found";
    case 405: return "Method not allowed";
    case 409: return "Conflict";
    case 413: return "Request entity too large";
    case 416: return "Requested Range Not Satisfiable";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

void reply_error(req_t *r, int status, const char *reason)
{
    json_t *o = json_pack("{s:s}", "error", status_text(status));
    if (o && reason)
        json_object_set_new(o, "reason", json_string(reason));
    reply(r, status, o);
}

static void reply_errorv(req_t *r, int status, const char *fmt, va_list ap)
{
    char reason[512];
    vsnprintf(reason, sizeof reason, fmt, ap);
    reply_error(r, status, reason);
}

void reply_bad_request(req_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_errorv(r, 400, fmt, ap);
    va_end(ap);
}

void reply_conflict(req_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_errorv(r, 409, fmt, ap);
    va_end(ap);
}

/* The database could not answer now (a lost connection, a transaction it
 * ended): the client may send the same request again in a moment (err.h).
 * Why goes to the log, not to the client. */
static void reply_unavailable(req_t *r, const err_t *e)
{
    log_warn("%s %s: %s", r->method, r->path, e->msg[0] ? e->msg : "database unavailable");
    r->retry_after = 1;
    reply_error(r, 503, "the database is unavailable, try again");
}

/* A handler's storage failure may be the database's transient one: that
 * is a 503 to retry, not a 500. */
void reply_internal(req_t *r, const err_t *e)
{
    if (e && e->kind == ERR_UNAVAILABLE)
        return reply_unavailable(r, e);
    log_error("%s %s: %s", r->method, r->path, e && e->msg[0] ? e->msg : "internal error");
    reply_error(r, 500, NULL);
}

void reply_err(req_t *r, const err_t *e)
{
    switch (e->kind) {
    case ERR_INPUT: reply_error(r, 400, e->msg); break;
    case ERR_FORBIDDEN: reply_error(r, 403, e->msg[0] ? e->msg : NULL); break;
    case ERR_NOTFOUND: reply_error(r, 404, NULL); break;
    case ERR_CONFLICT:
    case ERR_CONSTRAINT: reply_error(r, 409, e->msg); break;
    case ERR_UNAVAILABLE: reply_unavailable(r, e); break;
    default: reply_internal(r, e);
    }
}

int reply_header(req_t *r, const char *name, const char *value)
{
    if (r->nheaders >= REQ_MAX_HEADERS || strlen(name) >= sizeof r->headers[0].name ||
        strlen(value) >= sizeof r->headers[0].value) {
        log_error("%s %s: header %s not added (too long or too many)", r->method, r->path,
                  name);
        return -1;
    }
    strcpy(r->headers[r->nheaders].name, name);
    strcpy(r->headers[r->nheaders].value, value);
    r->nheaders++;
    return 0;
}

int reply_expires(req_t *r, long long seconds)
{
    /* Day and month names of their own: HTTP dates are English whatever
     * the locale (strftime's %a and %b follow LC_TIME). */
    static const char days[][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t at = time(NULL) + (time_t)seconds;
    struct tm tm;
    if (!gmtime_r(&at, &tm)) {
        log_error("%s %s: no Expires: time %lld out of range", r->method, r->path,
                  (long long)at);
        return -1;
    }
    char date[40];
    snprintf(date, sizeof date, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
    return reply_header(r, "Expires", date);
}

const char *req_arg(req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

bool req_arg_present(req_t *r, const char *name, const char **value)
{
    *value = NULL;
    size_t vlen = 0;
    return MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name),
                                         value, &vlen) == MHD_YES;
}

const char *req_header(req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

int req_parse_object(req_t *r)
{
    if (r->json)
        return 0;
    if (r->body_len == 0) {
        reply_bad_request(r, "the body must be a JSON object");
        return -1;
    }
    json_error_t je;
    r->json = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!r->json) {
        reply_bad_request(r, "invalid JSON at line %d column %d: %s", je.line, je.column,
                          je.text);
        return -1;
    }
    if (!json_is_object(r->json)) {
        json_decref(r->json);
        r->json = NULL;
        reply_bad_request(r, "the body must be a JSON object");
        return -1;
    }
    return 0;
}

void req_free(req_t *r)
{
    json_decref(r->out);
    json_decref(r->json);
    free(r->segbuf);
    free(r->text);
}
