/* alarm_burst.c - one alarm per window for floods of events (alarm_burst.h). */
#include "alarm_burst.h"

#include <limits.h>

#include "../common/validate.h"
#include "alarms.h"

long long alarm_freq_ms(long long freq)
{
    if (freq <= 0)
        freq = ALARMS_DEFAULT_FREQ_S;
    else if (freq < ALARM_FREQ_MIN)
        freq = ALARM_FREQ_MIN;
    else if (freq > ALARM_FREQ_MAX)
        freq = ALARM_FREQ_MAX;
    return freq * 1000;
}

void alarm_burst_init(alarm_burst_t *b)
{
    *b = (alarm_burst_t){.last_ms = -1};
}

void alarm_burst_add(alarm_burst_t *b, long long n, time_t wall)
{
    if (n <= 0)
        return;
    if (!b->pending)
        b->since = wall;
    b->pending = n > LLONG_MAX - b->pending ? LLONG_MAX : b->pending + n;
}

long long alarm_burst_take(alarm_burst_t *b, long long now_ms, long long window_ms,
                           time_t *since)
{
    if (!b->pending || (b->last_ms >= 0 && now_ms - b->last_ms < window_ms))
        return 0;
    long long n = b->pending;
    *since = b->since;
    b->pending = 0;
    b->last_ms = now_ms;
    return n;
}

long long alarm_burst_deadline(const alarm_burst_t *b, long long window_ms)
{
    if (!b->pending)
        return -1;
    if (b->last_ms < 0)
        return 0; /* due now */
    return b->last_ms > LLONG_MAX - window_ms ? LLONG_MAX : b->last_ms + window_ms;
}
