/* Unit tests for workers.h: every job runs once, on a pool thread, and a
 * stopping pool runs what was queued and refuses the rest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "../../src/api/workers.h"

typedef struct {
    work_t work; /* first, as dispatch.h's connection context */
    atomic_int *ran;
    int times;
    pthread_t thread;
} job_t;

static void run(work_t *w)
{
    job_t *j = (job_t *)w;
    usleep(1000); /* long enough for several workers to be busy at once */
    j->times++;
    j->thread = pthread_self();
    atomic_fetch_add(j->ran, 1);
}

static void test_every_job_runs_once_off_the_caller(void **state)
{
    (void)state;
    err_t e = {0};
    workers_t *p = workers_start(4, &e);
    assert_non_null(p);
    atomic_int ran;
    atomic_init(&ran, 0);
    job_t jobs[200] = {0};
    for (int i = 0; i < 200; i++) {
        jobs[i].work.fn = run;
        jobs[i].ran = &ran;
        assert_int_equal(workers_submit(p, &jobs[i].work), 0);
    }
    workers_stop(p); /* runs what is queued first */
    assert_int_equal(atomic_load(&ran), 200);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(jobs[i].times, 1);
        assert_false(pthread_equal(jobs[i].thread, pthread_self()));
    }
    job_t late = {.work.fn = run, .ran = &ran};
    assert_int_equal(workers_submit(p, &late.work), -1);
    workers_free(p);
    assert_int_equal(late.times, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_job_runs_once_off_the_caller),
    };
    return cmocka_run_group_tests_name("workers", tests, NULL, NULL);
}
