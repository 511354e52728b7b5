/* alarm_burst.h - one alarm per window for events that come in floods
 * (docs/ALARMS.md, "OOM kills"; issue 16).
 *
 * A container looping into its memory limit is OOM-killed tens of times a
 * second: an alarm (and a state file write, log lines, a body to the API)
 * for each would flood the node and the API's outbox.  The first event of a
 * window is said at once; the window's others are counted and said in one
 * alarm when it ends ("N OOM kills since HH:MM:SS").  Pure: the caller
 * gives the clocks (the supervisor; the unit tests). */
#ifndef IMP_NODE_ALARM_BURST_H
#define IMP_NODE_ALARM_BURST_H

#include <time.h>

typedef struct {
    long long last_ms; /* monotonic ms of the last alarm said; -1: none yet */
    long long pending; /* events not said yet */
    time_t since;      /* wall clock of the first of them */
} alarm_burst_t;

/* A container's alarm_freq (seconds, 0 = unset) as the window in ms: the
 * default when unset, else clamped to ALARM_FREQ_MIN..ALARM_FREQ_MAX (a
 * state from an older API may hold anything). */
long long alarm_freq_ms(long long freq);

void alarm_burst_init(alarm_burst_t *b);
/* n more events, the first of them at wall clock `wall`. */
void alarm_burst_add(alarm_burst_t *b, long long n, time_t wall);
/* The events to say in an alarm now (the window restarts at now), with
 * *since the wall clock of the first; 0 while the window is closed or
 * nothing is pending. */
long long alarm_burst_take(alarm_burst_t *b, long long now_ms, long long window_ms,
                           time_t *since);
/* When the pending events are due (monotonic ms), -1 when none is. */
long long alarm_burst_deadline(const alarm_burst_t *b, long long window_ms);

#endif
