/* http.h - the libmicrohttpd front of imperium-api. */
#ifndef IMP_HTTP_H
#define IMP_HTTP_H

#include "api.h"

typedef struct http_server http_server_t;

http_server_t *http_start(api_t *api, err_t *e);
void http_stop(http_server_t *s);

#endif
