/* clock.h - deadlines on the monotonic clock (condition variables that wait
 * with pthread_condattr_setclock(CLOCK_MONOTONIC) take these). */
#ifndef IMP_COMMON_CLOCK_H
#define IMP_COMMON_CLOCK_H

#include <time.h>

/* CLOCK_MONOTONIC now plus ms milliseconds (ms >= 0). */
struct timespec clock_after_ms(int ms);

#endif
