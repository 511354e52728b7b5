/* overlay.h - links across servers: the node's VXLAN device and what it
 * carries (docs/NETWORK.md, "The overlay").
 *
 * Each node has one VXLAN device (overlay_dev, VNI vxlan_id, UDP vxlan_port,
 * source overlay_local, learning off) whose MAC is derived from its underlay
 * address: 02:<the 4 bytes of the address>:00, so every node knows every
 * other node's MAC from its address alone (no API change, no ARP, no flood).
 * For the state's link_peers (containers on other servers linked both ways
 * with one of ours) the device holds exactly:
 *   - per remote node, a forwarding entry MAC(node) -> dst <node address>
 *     (`bridge fdb append MAC dev vx-imperium dst ADDR`);
 *   - per remote container, a route `<ip>/32 dev vx-imperium proto 73` and a
 *     permanent neighbour `<ip> lladdr MAC(its node)`.
 * Each state is reconciled against what the kernel has (three dumps): only
 * the difference is added or deleted, and only on the overlay device.  The
 * device stays when the daemon exits (containers keep running); stop-all
 * removes it (and everything on it with it).
 *
 * The nft side (which packets the overlay may carry) is overlay_nft_*,
 * text that netpolicy.c puts into the node's table. */
#ifndef IMP_NODE_OVERLAY_H
#define IMP_NODE_OVERLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "../common/settings.h"
#include "../common/strutil.h"
#include "../runtime/net.h"
#include "spec.h"

#define OVERLAY_DEFAULT_MODE "off"
#define OVERLAY_DEFAULT_DEV "vx-imperium"
#define OVERLAY_DEFAULT_VNI 4242
#define OVERLAY_VNI_MAX 16777215 /* 24 bits */
#define OVERLAY_DEFAULT_PORT 4789
/* VXLAN over IPv4 adds 50 bytes (outer IP 20, UDP 8, VXLAN 8, Ethernet 14):
 * a 1500 underlay carries 1450. */
#define OVERLAY_DEFAULT_MTU 1450
#define OVERLAY_MTU_MIN 576
#define OVERLAY_MTU_MAX 65485

/* The node's settings (agent_config.c rows); texts as configured. */
typedef struct {
    const char *mode;  /* "off" | "vxlan" (overlay_check_mode refuses the rest) */
    const char *local; /* overlay_local; NULL or "": the server's address */
    const char *dev;   /* overlay_dev */
    int vni;           /* vxlan_id */
    int port;          /* vxlan_port */
    int mtu;           /* overlay_mtu: the device's, and uwsgi0's with the overlay on */
} overlay_cfg_t;

bool overlay_on(const overlay_cfg_t *c);

/* The settings rows' checks: -1 with a sentence naming s->name. */
int overlay_check_mode(const setting_t *s, const char *v, err_t *e);
int overlay_check_dev(const setting_t *s, const char *v, err_t *e);
int overlay_check_local(const setting_t *s, const char *v, err_t *e);

/* 02:<addr's 4 bytes>:00 (addr in network order). */
void overlay_mac(uint32_t addr, uint8_t mac[6]);

/* ---- the reconcile, as pure functions (unit-tested) ---- */

/* One thing on the device.  key/val by kind: OV_FDB mac48 -> dst address,
 * OV_NEIGH ip -> mac48, OV_ROUTE ip -> 0 (addresses in network order, a
 * mac48 is its 6 bytes big-endian in the low 48 bits).  Lists are sorted by
 * (kind, key, val), kinds in the order they are added. */
enum { OV_FDB, OV_NEIGH, OV_ROUTE };
typedef struct {
    int kind;
    uint64_t key, val;
} ov_entry_t;

typedef struct {
    ov_entry_t *v;
    size_t n, cap;
} ov_list_t;

int ov_list_add(ov_list_t *l, int kind, uint64_t key, uint64_t val, err_t *e);
void ov_list_sort(ov_list_t *l); /* sorted, duplicates removed */
void ov_list_free(ov_list_t *l);
uint64_t ov_mac48(const uint8_t mac[6]);
void ov_mac_bytes(uint64_t mac48, uint8_t mac[6]);

/* What the device must hold for these peers (local: this node's underlay
 * address).  A peer whose ip is not a container address of `net`, whose
 * server is not an IPv4 address, is this node, or lies inside the
 * container network, is left out (an API bug must not route anything
 * else over the overlay; the caller logs it); an ip given twice keeps its
 * first server.  Returns how many peers were left out (skipped: the first
 * one's reason, may be NULL), -1 when out of memory. */
int ov_desired(const spec_link_peer_t *peers, size_t n, uint32_t local, const net_cfg_t *net,
               ov_list_t *out, err_t *skipped, err_t *e);

/* want and have sorted: del = in have, not in want; add = in want, not in
 * have.  A neighbour whose MAC changed is one delete and one add. */
int ov_diff(const ov_list_t *want, const ov_list_t *have, ov_list_t *add, ov_list_t *del,
            err_t *e);

/* ---- nftables: the text netpolicy.c puts into the node's table ---- */

/* The underlay address: overlay_local, else the state's server address;
 * 0 when neither is an IPv4 address. */
uint32_t overlay_local_of(const overlay_cfg_t *c, const spec_state_t *s);

/* Where a part goes in the table netpolicy.c renders:
 *   OVERLAY_NFT_DECLS   after the table's sets: the set overlay_peers (the
 *                       servers of link_peers but this one: the only
 *                       sources whose VXLAN the node takes) and
 *                       the chain overlay_in (from the overlay, only the
 *                       pairs of `links_set`, the table's ip . ip set);
 *   OVERLAY_NFT_FORWARD first in the forward chain: the overlay's packets
 *                       go to overlay_in (linked pairs or dropped: a remote
 *                       node cannot use this one as a router or NAT);
 *   OVERLAY_NFT_INPUT   in the input chain: nothing from the overlay is for
 *                       the node itself, and VXLAN to vxlan_port from any
 *                       address but a peer's is dropped.
 * Nothing is appended with the overlay off (c NULL or mode off).  -1 when
 * out of memory. */
typedef enum { OVERLAY_NFT_DECLS, OVERLAY_NFT_FORWARD, OVERLAY_NFT_INPUT } overlay_nft_part_t;
int overlay_nft(buf_t *b, overlay_nft_part_t part, const overlay_cfg_t *c, const spec_state_t *s,
                const char *links_set);

/* ---- the daemon's side (netlink) ---- */

typedef struct overlay overlay_t;

/* NULL with e set on allocation failure; the settings are kept by
 * reference (c, net and their strings outlive the overlay). */
overlay_t *overlay_new(const overlay_cfg_t *c, const net_cfg_t *net, err_t *e);
void overlay_free(overlay_t *ov);

/* Make the device match the settings (adopt an identical one, replace one
 * that differs, create a missing one) and its entries the state's
 * link_peers (read back each time: four dumps, only the difference is
 * changed).  Idempotent.  -1 with e set when something could not be done
 * (what could was done; overlay_retry tries again). */
int overlay_apply(overlay_t *ov, const spec_state_t *s, err_t *e);
/* After a failed apply, again every OVERLAY_RETRY_MS (0: nothing due or
 * done; -1 with e set: failed again); overlay_retry_at is when (-1: no
 * retry pending), for the daemon's epoll timeout. */
#define OVERLAY_RETRY_MS 1000
int overlay_retry(overlay_t *ov, err_t *e);
long long overlay_retry_at(const overlay_t *ov);

/* stop-all: delete the device (its routes, neighbours and forwarding
 * entries go with it); a missing one is fine. */
int overlay_remove(const overlay_cfg_t *c, err_t *e);

#endif
