/* legion.h - the node's legion membership and floating address (issue 19,
 * docs/CLUSTER.md "Membership and the floating address").
 *
 * For every legion the state lists, one uWSGI legion member (`uwsgi-core
 * --ini <state_dir>/legion/<name>/member.ini`, the secret only in that 0600
 * file) is started from the daemon's main thread under a single-threaded
 * guard (imperium-legion-hook guard, PR_SET_PDEATHSIG = SIGINT: the daemon
 * killed, the member gets one SIGINT, announces its death, and the guard
 * removes the address when it has ended; another member is Lord in ~1 s).  Valor = seniority:
 * a member first listens as an arbiter (valor 0) for a few announcements,
 * then restarts with a valor below every member it heard, so a returning
 * member never takes the Lord back.  Its lord/unlord/death
 * hooks run imperium-legion-hook (add/remove ADDR/32 on the uplink, gratuitous
 * ARP); a watchdog in the main loop reads the member's stats socket every
 * LEGION_WATCH_MS and keeps the address on the uplink iff the member is the
 * Lord with its quorum (uWSGI's own quorum loss can lag 60 s), refreshes the
 * ARP caches while Lord and removes a stale address. */
#ifndef IMP_NODE_LEGION_H
#define IMP_NODE_LEGION_H

#include <stdbool.h>

#include "../common/err.h"
#include "spec.h"

#define LEGION_DEFAULT_PORT 4242
#define LEGION_DEFAULT_FREQ 1
#define LEGION_DEFAULT_TOLERANCE 1
#define LEGION_HOOK_NAME "imperium-legion-hook"
#define LEGION_DIR "legion"          /* <state_dir>/legion/<name>/ */
#define LEGION_WATCH_MS 250          /* the watchdog's period */
#define LEGION_GARP_EVERY_MS 10000   /* gratuitous ARP refresh while Lord */
#define LEGION_STOP_WAIT_MS 3000     /* a member's graceful stop before SIGKILL */
/* uWSGI 2.0.21 keeps the other members' valors in 16 bits
 * (uwsgi_legion_add_node): a valor above this breaks the election. */
#define LEGION_VALOR_MAX 65535
#define LEGION_CIPHER "aes-256-cbc"
#define LEGION_KEY_CHARS 32 /* aes-256: the cipher's key length */
#define LEGION_IV_CHARS 16

typedef struct {
    const char *state_dir; /* members live in <state_dir>/legion/<name>/ */
    const char *uwsgi;     /* uwsgi-core */
    const char *hook;      /* imperium-legion-hook; NULL: beside this program */
    const char *uplink;    /* where the Lord holds the address; NULL or "": arbiter */
    bool router;           /* router_http is set (without it: arbiter) */
    bool network;          /* network = on (without it no legion is joined) */
    int port, freq, tolerance;
} legion_opts_t;

typedef struct legions legions_t;

/* NULL with e (a bad hook path, out of memory). */
legions_t *legions_new(const legion_opts_t *o, err_t *e);
/* The state's legions: members started, restarted (changed record) or
 * stopped (gone).  Main thread only (PDEATHSIG is per thread). */
void legions_set_state(legions_t *l, const spec_state_t *s);
/* Dead members restarted (with backoff), the watchdog's pass when due. */
void legions_tick(legions_t *l);
/* When legions_tick wants to run next (now_ms clock); -1: never. */
long long legions_next_deadline(const legions_t *l);
/* Members stopped (SIGINT, then SIGKILL after LEGION_STOP_WAIT_MS) and
 * their addresses removed.  NULL is fine. */
void legions_free(legions_t *l);

/* ---- pure parts, exposed for the tests ---- */

/* The uWSGI cipher key and IV derived from the legion's key: hex of
 * BLAKE2b("imperium legion uwsgi" || key), 32 + 16 characters (no space can
 * split the secret, every byte of it counts). */
int legion_derive(const char *key, char out_key[LEGION_KEY_CHARS + 1],
                  char out_iv[LEGION_IV_CHARS + 1], err_t *e);

/* Why this node cannot join lg (a sentence), or NULL when it can. */
const char *legion_refusal(const legion_opts_t *o, const spec_legion_t *lg, const char *self);
/* A warning about lg's quorum (split brain possible, never a Lord), or NULL. */
const char *legion_quorum_warning(const spec_legion_t *lg);
/* True when this node may be Lord (an uplink and a router): else arbiter. */
bool legion_can_lord(const legion_opts_t *o);

/* The member's ini text (malloc'd), NULL with e.  Valor 0: an arbiter (no
 * hooks); a node that may not be Lord is always one. */
char *legion_ini(const legion_opts_t *o, const spec_legion_t *lg, const char *self,
                 const char *dir, const char *hook, long long valor, err_t *e);

/* What the watchdog reads of a member's stats JSON for legion `name`. */
typedef struct {
    bool lord;           /* i_am_the_lord */
    int members;         /* the other members it hears */
    long long min_valor; /* the smallest valor > 0 among them; 0: none */
} legion_stats_t;
int legion_parse_stats(const char *json, const char *name, legion_stats_t *out, err_t *e);
/* The watchdog's rule: the address is held iff this may be Lord, the member
 * says it is and it hears enough members for the quorum. */
bool legion_want_address(const legion_stats_t *st, long long quorum, bool can_lord);
/* Seniority: the valor a member takes after listening as an arbiter, one
 * below every member it heard (LEGION_VALOR_MAX when it heard none, at
 * least 1), so a returning member never takes the Lord back. */
long long legion_valor_below(const legion_stats_t *st);

/* ---- the address (the hook and the watchdog) ---- */

/* ADDR/32 added to (add) or removed from IFNAME: 1 when it changed, 0 when
 * it was already so, -1 with e. */
int legion_address(const char *addr, const char *ifname, bool add, err_t *e);
/* One gratuitous ARP request for addr out of ifname (AF_PACKET). */
int legion_garp(const char *addr, const char *ifname, err_t *e);
/* imperium-legion-hook's work: argv = {prog, "lord"|"unlord", ADDR, IFNAME}. */
int legion_hook_run(int argc, char **argv, err_t *e);
/* imperium-legion-hook guard (legion_guard.c): argv = {prog, "guard",
 * ADDR|-, IFNAME|-, MEMBER, ARGS...}: runs the member as its child, forwards
 * one stop signal, removes ADDR/32 from IFNAME when the member ends; the
 * member's exit status (128 + signal when killed), -1 with e. */
int legion_guard_run(int argc, char **argv, err_t *e);

#endif
