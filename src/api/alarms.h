/* alarms.h - stored alarms, shared by the customer API and the nodes'
 * channel, and the pure rules of /alarms/ (unit-tested). */
#ifndef IMP_ALARMS_H
#define IMP_ALARMS_H

#include "api.h"

#include <stdbool.h>
#include <stddef.h>

enum {
    ALARM_LEVEL_SYSTEM = 0, /* raised by the platform only */
    ALARM_LEVEL_USER = 1,
    ALARM_LEVEL_LOG = 4, /* the highest level */
};

#define ALARM_TEXT_MAX 255 /* class, vassal, filename, func */
#define ALARM_DEFAULT_COLOR "#ffffff"

/* One alarm to store.  `color` NULL or "" stores the default color,
 * otherwise it must be "#rrggbb"; NULL texts store ""; `line` < 0 stores no
 * line.  `node_ref` is the node's id of an alarm it raised (unique per
 * container: storing a known one again is skipped), NULL for the others. */
typedef struct {
    int level;
    const char *color, *cls, *vassal, *filename, *func, *msg;
    long long line, unix_time;
    const char *node_ref;
} alarm_t;

/* Store one alarm of container `container_id`, deleting its oldest alarms
 * so that it keeps at most `max_alarms`, in the caller's transaction (the
 * one insert path of alarms).  1 stored, 0 skipped (its node_ref is
 * known), -1 on failure.  Texts must be valid UTF-8 (ERR_INPUT otherwise);
 * a missing container is ERR_NOTFOUND.  Level 0 is for the platform's own
 * alarms: callers on the customers' side refuse it before calling. */
int alarm_store_in(db_t *db, err_t *e, long long container_id, const alarm_t *a);
/* alarm_store_in in a transaction of its own (do not call it inside another). */
int alarm_store(db_t *db, err_t *e, long long container_id, const alarm_t *a);

/* The limit on raising (api->alarm_raises, setting alarm_raises): a token
 * bucket per container, in a table of ALARM_RAISE_KEYS, so that one
 * container's loop cannot keep rewriting its ring and waking its node.
 * 0 when container `container_id` may raise one now (and it is counted),
 * else the whole seconds until it may.  A NULL `t` never limits. */
#define ALARM_RAISE_KEYS 16384
int alarm_raise_admit(throttle_t *t, long long container_id, double now);

/* ?range= of GET /alarms/: "N" = the N newest; "A-B" with A < B =
 * positions A..B-1 of the newest-first list; A > B = positions B..A-1
 * counted from the oldest, oldest first; A == B = nothing.  False for
 * anything else (the caller answers 416). */
typedef struct {
    long long offset, limit;
    bool oldest_first;
} alarm_range_t;
bool alarm_range_parse(const char *s, alarm_range_t *out);

/* A color of /alarms/raise: "#" + 6 hex digits, the '#' added when missing.
 * False when it is not one. */
bool alarm_color_normalize(const char *in, char out[8]);

/* True when s[0..len) is well-formed UTF-8 without NUL bytes (no overlong
 * forms, no surrogates, nothing past U+10FFFF). */
bool alarm_text_valid(const char *s, size_t len);

#endif
