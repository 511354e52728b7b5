/* dns_check.h - the ownership check of POST /domains/: a TXT record
 * "uwsgi:<customer uuid>" on the name or one of its parents (c-ares). */
#ifndef IMP_DNS_CHECK_H
#define IMP_DNS_CHECK_H

#include "../common/err.h"

#include <stdbool.h>
#include <stddef.h>

#define DNS_DEFAULT_TIMEOUT_MS 5000

typedef enum {
    DNS_CHECK_FOUND,   /* the record is there */
    DNS_CHECK_MISSING, /* every name answered, none carries the record */
    DNS_CHECK_FAILED,  /* some name could not be looked up (timeout, SERVFAIL, ...) */
} dns_check_result;

typedef struct {
    const char *resolver; /* "IP", "IP:PORT" or "[IPv6]:PORT"; NULL or "" = system's */
    int timeout_ms;       /* for the whole check */
} dns_check_cfg_t;

/* Once per process, before any check (c-ares library state). */
int dns_check_init(err_t *e);
void dns_check_cleanup(void);

/* Validate a resolver setting ("IP", "IP:PORT", "[IPv6]:PORT"). */
int dns_resolver_check(const char *spec, err_t *e);

/* Look for a TXT record containing `want` on `name` (a normalised domain
 * name; a leading '.' wildcard is checked on the name without it), then on
 * each parent down to two labels.  On FOUND, `where` names the owner of the
 * record; otherwise `reason` says, for the customer, what is missing or
 * what failed.  Thread-safe: everything lives in this call. */
dns_check_result dns_check_txt(const dns_check_cfg_t *cfg, const char *name, const char *want,
                               char *where, size_t wlen, char *reason, size_t rlen);

#endif
