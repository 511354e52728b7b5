/* auth.h - who sends a request (auth.c): customers (Basic or the hex
 * headers, argon2id checked, cached and throttled), the supplier's admin
 * token, and the nodes' secrets.  The dispatcher calls the auth_* of a
 * route's auth mode; handlers of AUTH_OPTIONAL / AUTH_ALARM routes call
 * auth_optional themselves. */
#ifndef IMP_AUTH_H
#define IMP_AUTH_H

#include "req.h"

/* Customer authentication.  Answers 401 itself on failure, or 429 (with
 * Retry-After) when password checks of this username or client address are
 * throttled, or all argon2 slots are busy. */
int auth_customer(req_t *r);
int auth_admin(req_t *r);
/* 0: authenticated; -1: no or wrong credentials (nothing answered);
 * AUTH_ANSWERED: answered already (429 throttled; 503/500 the lookup failed). */
#define AUTH_ANSWERED (-2)
int auth_optional(req_t *r);
/* Before anything else answers a customer request (the response cache):
 * true after answering 429 when its username or address is throttled. */
bool auth_throttled(req_t *r);
/* The limits on password checks, from api->cfg; freed by auth_limits_free. */
int auth_limits_init(api_t *api, err_t *e);
void auth_limits_free(api_t *api);
int auth_node(req_t *r);
/* Answer 429 "<why>: retry in N seconds" with Retry-After: N. */
void reply_429(req_t *r, int seconds, const char *why);
/* A fresh node secret (hex) and the hash stored for it. */
int node_secret_new(char secret[65], char hash[65]);
auth_cache_t *auth_cache_new(int ttl);
void auth_cache_free(auth_cache_t *c);

/* Password hashing: argon2id via libsodium. */
int password_hash(const char *password, char out[128], err_t *e);

#endif
