/* server.h - the HTTP server of imperium-api (libmicrohttpd): where it
 * listens and how many connections it serves; dispatch.c answers. */
#ifndef IMP_SERVER_H
#define IMP_SERVER_H

#include "api.h"

typedef struct server server_t;

/* Listen on cfg.listen_addr:cfg.port; NULL with e set (a bad address, or
 * one in use). */
server_t *server_start(api_t *api, err_t *e);
/* Stop listening and end every connection; NULL is nothing to stop. */
void server_stop(server_t *s);

#endif
