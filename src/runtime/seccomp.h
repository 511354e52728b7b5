/* seccomp.h - the system-call filter of every container process: the
 * container's init (and so the Emperor, the vassals and everything they
 * start) and every ssh session entering a container (imperium-enter).
 * One definition, seccomp.c; docs/SECURITY.md says what it refuses. */
#ifndef IMP_RUNTIME_SECCOMP_H
#define IMP_RUNTIME_SECCOMP_H

#include "../common/err.h"

/* Build the filter and load it into the calling thread (inherited by every
 * child and kept across exec; sets no_new_privs).  Allocates: call it in a
 * single-threaded process, after its last privileged step. */
int sc_install(err_t *e);

#endif
