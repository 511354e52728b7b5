/* Prototype (not built by the Makefile): libstrophe client on loopback.
 *   xmppsend recv JID PASS HOST PORT          prints the first <message/> body it receives
 *   xmppsend send JID PASS HOST PORT TO TEXT  sends one chat message and disconnects
 * cc -O2 -o /tmp/research16/xmppsend xmppsend.c $(pkg-config --cflags --libs libstrophe)
 * Plain auth without TLS is only for the loopback test server (XMPP_CONN_FLAG_TRUST_TLS /
 * mandatory TLS in production: the node's setting). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strophe.h>

static const char *to, *text, *mode;
static int got;

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    (void)conn;
    xmpp_stanza_t *body = xmpp_stanza_get_child_by_name(st, "body");
    if (!body) return 1;
    char *t = xmpp_stanza_get_text(body);
    printf("received from %s: %s\n", xmpp_stanza_get_from(st), t);
    xmpp_free(xmpp_conn_get_context(conn), t);
    got = 1;
    xmpp_stop((xmpp_ctx_t *)ud);
    return 0;
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t ev, int err, xmpp_stream_error_t *se, void *ud)
{
    (void)se;
    xmpp_ctx_t *ctx = ud;
    if (ev != XMPP_CONN_CONNECT) { fprintf(stderr, "disconnected (event %d, error %d)\n", ev, err); xmpp_stop(ctx); return; }
    if (!strcmp(mode, "recv")) {
        xmpp_handler_add(conn, on_message, NULL, "message", NULL, ctx);
        xmpp_stanza_t *pres = xmpp_presence_new(ctx);          /* available: messages get delivered */
        xmpp_send(conn, pres); xmpp_stanza_release(pres);
        printf("ready\n"); fflush(stdout);
    } else {
        xmpp_stanza_t *msg = xmpp_message_new(ctx, "chat", to, NULL);
        xmpp_message_set_body(msg, text);
        xmpp_send(conn, msg); xmpp_stanza_release(msg);
        xmpp_disconnect(conn);                                  /* flushes the queue, then closes */
    }
}

int main(int argc, char **argv)
{
    if (argc < 6) { fprintf(stderr, "usage: recv|send JID PASS HOST PORT [TO TEXT]\n"); return 2; }
    mode = argv[1]; if (argc > 7) { to = argv[6]; text = argv[7]; }
    xmpp_initialize();
    xmpp_ctx_t *ctx = xmpp_ctx_new(NULL, xmpp_get_default_logger(XMPP_LEVEL_ERROR));
    xmpp_conn_t *conn = xmpp_conn_new(ctx);
    xmpp_conn_set_flags(conn, XMPP_CONN_FLAG_DISABLE_TLS);
    xmpp_conn_set_jid(conn, argv[2]);
    xmpp_conn_set_pass(conn, argv[3]);
    if (xmpp_connect_client(conn, argv[4], (unsigned short)atoi(argv[5]), on_conn, ctx) != XMPP_EOK) {
        fprintf(stderr, "connect failed\n"); return 1;
    }
    xmpp_run(ctx);          /* the node would call xmpp_run_once(ctx, ms) from its delivery thread */
    xmpp_conn_release(conn); xmpp_ctx_free(ctx); xmpp_shutdown();
    return (!strcmp(mode, "recv") && !got) ? 1 : 0;
}
