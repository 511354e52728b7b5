/* news.c - /news/ (see API.md): the supplier's announcements.  The admin
 * side (/admin/news) is in admin_other.c. */
#include "auth.h"
#include "routes.h"
#include "rows.h"

#define NEWS_SHOWN 10

/* Did the request carry credentials of any kind?  Wrong ones must answer
 * 401: quietly showing only the public news would hide the mistake. */
static bool has_credentials(req_t *r)
{
    return req_header(r, "Authorization") || req_header(r, "X-uwsgi-it-username") ||
           req_header(r, "X-uwsgi-it-password");
}

static json_t *news_row(db_res_t *res, int row)
{
    return json_pack("{s:s,s:I}", "content", db_get(res, row, 0), "date",
                     (json_int_t)db_get_int(res, row, 1));
}

static void h_news(req_t *r)
{
    int a = auth_optional(r);
    if (a == AUTH_ANSWERED)
        return; /* 429: too many wrong passwords */
    if (a < 0 && has_credentials(r))
        return reply_error(r, 401, NULL);
    /* Anonymous callers see public news only; customers see all. */
    reply_rows(r, news_row,
               "SELECT content, date FROM news WHERE public = 1 OR $1 = 1 "
               "ORDER BY date DESC, id DESC LIMIT $2",
               DB_ARGS(DB_INT(r->authed), DB_INT(NEWS_SHOWN)));
}

const route_t news_routes[] = {
    {"GET", "news", h_news, AUTH_OPTIONAL, CACHE_NONE, WAKE_NONE},
    {NULL, NULL, NULL, 0, 0, 0},
};
