/* validate.h - pure checks and derivations of the API contract.
 *
 * Nothing here touches the database or the network, so every rule has a
 * unit test (tests/unit/test_validate.c). */
#ifndef IMP_VALIDATE_H
#define IMP_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#define UID_BASE 30000

/* The largest request body the API reads (server.c answers a larger one 413
 * and the node's outbox drops a 4xx body): the node keeps each report it
 * posts (metrics, alarms) to REPORT_MAX_BODY bytes, a margin below it. */
#define API_MAX_BODY (64 * 1024)
#define REPORT_MAX_BODY 60000
_Static_assert(REPORT_MAX_BODY < API_MAX_BODY, "the node's reports must fit the API's bodies");

/* uid = 30000 + internal id. */
long long container_uid(long long id);
/* The internal id of a uid path segment ("30009"), or -1 if it is not one. */
long long container_id_from_uid(const char *seg);
/* The same of a uid as a number (a JSON body's "container"). */
long long container_id_of_uid(long long uid);
/* 10.0.0.0/8 with id + 2 in the low 24 bits; false if id does not fit. */
bool container_ip(long long id, char *out, size_t len);
/* `name` (UTF-8) with every character outside [A-Za-z0-9-] replaced by one
 * '-' (a multibyte character is one character), cut to len - 1 characters:
 * with len = HOSTNAME_MAX + 1, a hostname the kernel and the runtime accept. */
#define HOSTNAME_MAX 63
void container_hostname(const char *name, char *out, size_t len);

/* An authorized_keys line as sshd(8) reads it: "[options] <type> <base64>
 * [comment]", one line; options are sshd's own (from="...", no-pty,
 * command="..." with \" inside quotes, restrict, ...), the type a known one,
 * the blob valid base64 naming that type, and the comment no second key.
 * On false, `reason` says what is wrong. */
bool ssh_key_valid(const char *key, char *reason, size_t len);

/* A positive integer path segment (tag, domain ids); -1 if not one. */
long long parse_id(const char *seg);


/* Lower-case and check a domain name for /domains/: labels of [a-z0-9-]
 * (1-63 chars, no leading or trailing '-'), at least two labels, 253 chars
 * at most, one trailing dot dropped; a leading '.' marks a wildcard entry
 * and is kept.  On false, `reason` says what is wrong. */
bool domain_name_normalize(const char *in, char *out, size_t len, char *reason, size_t rlen);

/* A loopbox `filename` or `mountpoint` (API.md, Loopboxes): 1 to max_len
 * characters relative to the container home; no leading or trailing '/',
 * no "..", "./", "/." or "//", no control characters, not "." (the home
 * itself), and neither one of the directories the platform manages (etc
 * logs run tmp vassals, plus .ssh) nor inside one.  On false, `reason`
 * says what is wrong. */
bool loopbox_path_valid(const char *path, size_t max_len, char *reason, size_t rlen);

/* Port mappings.  Public ports are 1025-65535 (the seed: "> 1024") minus
 * the ports the platform itself listens on (the list lives in validate.c);
 * private ports are 1024-65535 (API.md).  On false, `reason` says why. */
bool portmap_public_port_valid(long long port, char *reason, size_t rlen);
bool portmap_private_port_valid(long long port, char *reason, size_t rlen);

/* A custom distro `path`: a directory name in the storage container's
 * distros/, 1 to 255 of [A-Za-z0-9._-], not "." or "..". */
bool custom_distro_path_valid(const char *path, char *reason, size_t rlen);

/* A container's alarm_freq bounds, seconds (docs/ALARMS.md): the API stores
 * a smaller value as the minimum and refuses a larger one; the node clamps
 * what a state says to them (an older API's value). */
#define ALARM_FREQ_MIN 60
#define ALARM_FREQ_MAX 604800
/* An alarm service key (pushover_user, pushover_token, pushover_sound,
 * pushbullet_token): 1 to 128 of [A-Za-z0-9._-].  The node puts them in
 * request headers and forms: nothing else may reach them. */
#define ALARM_TOKEN_MAX 128
bool alarm_token_valid(const char *s);
/* jid_destinations: comma (and/or blank) separated jids, at most
 * JID_DESTINATIONS_MAX of them, each [local@]domain[/resource] with no
 * control character or blank, at most 256 bytes.  "" (none) is valid. */
#define JID_DESTINATIONS_MAX 10
bool jid_destinations_valid(const char *list, char *reason, size_t rlen);
/* Does s hold a control character (< 0x20 or 0x7f)? */
bool str_has_control(const char *s);

#endif
