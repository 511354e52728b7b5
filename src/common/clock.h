/* clock.h - the monotonic clock: deadlines (condition variables that wait
 * with pthread_condattr_setclock(CLOCK_MONOTONIC) take these), the time in
 * milliseconds, sleeping, and the backoff between retries. */
#ifndef IMP_COMMON_CLOCK_H
#define IMP_COMMON_CLOCK_H

#include <time.h>

/* The backoff of something restarted after it failed or died: 1 s, doubled
 * on each consecutive failure, at most 30 s. */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000
/* ... and reset once it ran this long. */
#define BACKOFF_RESET_MS 60000

/* CLOCK_MONOTONIC now plus ms milliseconds (ms >= 0). */
struct timespec clock_after_ms(int ms);

/* CLOCK_MONOTONIC in milliseconds: for deadlines, never for dates. */
long long now_ms(void);

/* Sleep ms milliseconds, resuming after a signal handler interrupts it. */
void sleep_ms(int ms);

/* The wait before the next try after `failures` (>= 1) consecutive
 * failures: BACKOFF_MIN_MS doubled failures - 1 times, at most
 * BACKOFF_MAX_MS. */
long long backoff_ms(int failures);

#endif
