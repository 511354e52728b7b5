/* subscription_packet.h - uWSGI 2.0 subscription packets for the unit
 * tests of the gate's policy (test_subscription.c) and of the gate itself
 * (test_subgate.c), built exactly as uWSGI builds them. */
#ifndef IMP_TEST_SUBSCRIPTION_PACKET_H
#define IMP_TEST_SUBSCRIPTION_PACKET_H

#include <string.h>

#include "../../src/node/subscription.h"

typedef struct {
    unsigned char b[SUBSCRIPTION_MAX];
    size_t len;
} pkt_t;

static inline void item(pkt_t *p, const char *k, const char *v)
{
    size_t kl = strlen(k), vl = strlen(v);
    p->b[p->len++] = (unsigned char)(kl & 0xff);
    p->b[p->len++] = (unsigned char)(kl >> 8);
    memcpy(p->b + p->len, k, kl);
    p->len += kl;
    p->b[p->len++] = (unsigned char)(vl & 0xff);
    p->b[p->len++] = (unsigned char)(vl >> 8);
    memcpy(p->b + p->len, v, vl);
    p->len += vl;
}

/* Append an item to a finished packet (its size updated). */
static inline void add_item(pkt_t *p, const char *k, const char *v)
{
    item(p, k, v);
    p->b[1] = (unsigned char)((p->len - 4) & 0xff);
    p->b[2] = (unsigned char)((p->len - 4) >> 8);
}

/* A subscription (cmd 0) or unsubscription (cmd 1) of key -> address. */
static inline pkt_t packet(int cmd, const char *key, const char *addr)
{
    pkt_t p;
    memset(&p, 0, sizeof p);
    p.b[0] = 224;
    p.b[3] = (unsigned char)cmd;
    p.len = 4;
    if (key)
        item(&p, "key", key);
    if (addr)
        item(&p, "address", addr);
    item(&p, "modifier1", "0");
    item(&p, "modifier2", "0");
    item(&p, "unix", "1700000000");
    item(&p, "sign", "\x01\x02signature-bytes");
    p.b[1] = (unsigned char)((p.len - 4) & 0xff);
    p.b[2] = (unsigned char)((p.len - 4) >> 8);
    return p;
}

#endif
