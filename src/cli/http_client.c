/* http_client.c - one HTTP request to the API with libcurl. */
#include "../common/strutil.h"
#include "cli.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

int http_init(err_t *e)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return err_set(e, ERR_INTERNAL, "libcurl failed to initialise");
    return 0;
}

void http_cleanup(void) { curl_global_cleanup(); }

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    buf_t *b = ud;
    /* Returning less than given makes libcurl stop with CURLE_WRITE_ERROR. */
    return buf_append(b, p, size * n) < 0 ? 0 : size * n;
}

/* A header "Name: value" appended to *list; -1 when out of memory. */
static int add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *n = curl_slist_append(*list, line);
    if (!n)
        return -1;
    *list = n;
    return 0;
}

int http_request(const http_req_t *rq, http_resp_t *resp, err_t *e)
{
    memset(resp, 0, sizeof *resp);
    buf_t body = {0};
    struct curl_slist *headers = NULL;
    char *authz = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    int rc = -1;
    CURL *c = curl_easy_init();
    if (!c)
        return err_set(e, ERR_INTERNAL, "libcurl: cannot create a handle");

    if (add_header(&headers, "Accept: application/json") < 0 ||
        (rq->body && add_header(&headers, "Content-Type: application/json") < 0)) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto out;
    }
    if (rq->bearer) {
        if (!(authz = str_printf("Authorization: Bearer %s", rq->bearer)) ||
            add_header(&headers, authz) < 0) {
            err_set(e, ERR_INTERNAL, "out of memory");
            goto out;
        }
    }
    curl_easy_setopt(c, CURLOPT_URL, rq->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "imperium-cli/1.0");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long timeout = rq->timeout > 0 ? rq->timeout : 120;
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, timeout < 10 ? timeout : 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    if (rq->user) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, rq->user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, rq->password ? rq->password : "");
    }
    if (rq->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(rq->body));
    }
    if (!strcmp(rq->method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(rq->method, rq->body ? "POST" : "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);

    CURLcode cr = curl_easy_perform(c);
    if (cr != CURLE_OK) {
        if (cr == CURLE_WRITE_ERROR)
            err_set(e, ERR_INTERNAL, "out of memory reading the answer of %s", rq->url);
        else if (cr == CURLE_OPERATION_TIMEDOUT)
            err_set(e, ERR_INTERNAL, "no answer from the API at %s within %ld s (--timeout)",
                    rq->url, timeout);
        else
            err_set(e, ERR_INTERNAL, "cannot reach the API at %s: %s", rq->url,
                    errbuf[0] ? errbuf : curl_easy_strerror(cr));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    if (!body.data && buf_append(&body, "", 0) < 0) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto out;
    }
    resp->body = body.data;
    resp->len = body.len;
    body.data = NULL;
    rc = 0;
out:
    buf_free(&body);
    curl_slist_free_all(headers);
    if (authz) {
        memset(authz, 0, strlen(authz));
        free(authz);
    }
    curl_easy_cleanup(c);
    return rc;
}

void http_resp_free(http_resp_t *resp)
{
    free(resp->body);
    memset(resp, 0, sizeof *resp);
}

/* Error kinds for API refusals: never ERR_INPUT, which means a usage error
 * of the command line (exit 2); a refusal by the API exits 1. */
static enum err_kind kind_of(long status)
{
    switch (status) {
    case 403: return ERR_FORBIDDEN;
    case 404: return ERR_NOTFOUND;
    case 409: return ERR_CONFLICT;
    default: return ERR_INTERNAL;
    }
}

int http_check(const http_resp_t *resp, err_t *e)
{
    if (resp->status >= 200 && resp->status < 300)
        return 0;
    json_t *o = json_loadb(resp->body ? resp->body : "", resp->len, 0, NULL);
    const char *error = json_string_value(json_object_get(o, "error"));
    const char *reason = json_string_value(json_object_get(o, "reason"));
    if (error && reason)
        err_set(e, kind_of(resp->status), "%ld %s: %s", resp->status, error, reason);
    else if (error)
        err_set(e, kind_of(resp->status), "%ld %s", resp->status, error);
    else {
        /* Not our API's error object (a proxy in between?): show the start. */
        char text[201] = "";
        snprintf(text, sizeof text, "%s", resp->body ? resp->body : "");
        err_set(e, kind_of(resp->status), "%ld %s", resp->status,
                *str_trim(text) ? str_trim(text) : "(empty answer)");
    }
    json_decref(o);
    return -1;
}

json_t *http_json(const http_resp_t *resp, err_t *e)
{
    json_error_t je;
    json_t *o = json_loadb(resp->body ? resp->body : "", resp->len, 0, &je);
    if (!o)
        err_set(e, ERR_INTERNAL, "the API answered %ld with something that is not JSON: %s",
                resp->status, je.text);
    return o;
}

char *http_escape(const char *s, err_t *e)
{
    char *esc = curl_easy_escape(NULL, s, (int)strlen(s));
    char *out = esc ? strdup(esc) : NULL;
    curl_free(esc);
    if (!out)
        err_set(e, ERR_INTERNAL, "out of memory");
    return out;
}
