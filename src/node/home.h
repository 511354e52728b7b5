/* home.h - the customer's home: the layout of PLATFORM.md, created as root
 * but owned by the container uid.
 *
 * The customer owns the home, so everything is done relative to directory
 * file descriptors opened with O_NOFOLLOW: a symlink planted by the
 * customer (etc/uwsgi.key -> /etc/shadow) is replaced, never followed.
 * Existing customer files are never removed. */
#ifndef IMP_NODE_HOME_H
#define IMP_NODE_HOME_H

#include "../common/err.h"
#include "container.h"

/* Directories of the layout, in creation order. */
extern const char *const home_dirs[];

/* Create the home and its layout, write etc/ (hosts, resolv.conf, hostname,
 * uwsgi.key, uwsgi.pubkey) and .ssh/uwsgi_authorized_keys. */
int home_prepare(const container_spec_t *spec, err_t *e);
/* Rewrite .ssh/uwsgi_authorized_keys only (atomically). */
int home_write_keys(const container_spec_t *spec, err_t *e);

#endif
