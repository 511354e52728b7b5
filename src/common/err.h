/* err.h - the error object threaded through library calls.
 *
 * A function that can fail takes an `err_t *` and returns -1 (or NULL) after
 * filling it with a human-readable message.  Callers decide how the message
 * reaches the user (API reason, log line, CLI stderr); library code never
 * prints or exits on its own. */
#ifndef IMP_ERR_H
#define IMP_ERR_H

#include <stddef.h>

enum err_kind {
    ERR_NONE = 0,
    ERR_INTERNAL,   /* a bug or an environment failure (disk, memory) */
    ERR_CONSTRAINT, /* the database refused a duplicate or a dangling reference */
    ERR_INPUT,      /* the caller's input is invalid (400) */
    ERR_FORBIDDEN,  /* not the caller's to touch (403) */
    ERR_NOTFOUND,   /* no such object (404) */
    ERR_CONFLICT,   /* clashes with the current state (409) */
    ERR_UNAVAILABLE, /* the database is busy or unreachable: the same request may be
                        sent again (503, Retry-After) */
};

typedef struct {
    enum err_kind kind;
    char msg[512];
} err_t;

/* Fill `e` (if not NULL) with a formatted message; always returns -1. */
int err_set(err_t *e, enum err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void err_clear(err_t *e);

#endif
