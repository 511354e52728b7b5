/* validate.h - pure checks and derivations of the API contract.
 *
 * Nothing here touches the database or the network, so every rule has a
 * unit test (tests/unit/test_validate.c). */
#ifndef IMP_VALIDATE_H
#define IMP_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#define UID_BASE 30000

/* uid = 30000 + internal id. */
long long container_uid(long long id);
/* The internal id of a uid path segment ("30009"), or -1 if it is not one. */
long long container_id_from_uid(const char *seg);
/* 10.0.0.0/8 with id + 2 in the low 24 bits; false if id does not fit. */
bool container_ip(long long id, char *out, size_t len);
/* `name` with every character outside [A-Za-z0-9-] replaced by '-'. */
void container_hostname(const char *name, char *out, size_t len);

/* An OpenSSH public key line: "<type> <base64> [comment]", one line.
 * On false, `reason` says what is wrong. */
bool ssh_key_valid(const char *key, char *reason, size_t len);

/* A positive integer path segment (tag, domain ids); -1 if not one. */
long long parse_id(const char *seg);


/* Lower-case and check a domain name for /domains/: labels of [a-z0-9-]
 * (1-63 chars, no leading or trailing '-'), at least two labels, 253 chars
 * at most, one trailing dot dropped; a leading '.' marks a wildcard entry
 * and is kept.  On false, `reason` says what is wrong. */
bool domain_name_normalize(const char *in, char *out, size_t len, char *reason, size_t rlen);

#endif
