/* Unit tests for fifo_lock.h: waiters get the lock in the order they came,
 * and the releasing thread cannot take it back ahead of them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <unistd.h>

#include "../../src/common/fifo_lock.h"

typedef struct {
    fifo_lock_t *lock;
    pthread_mutex_t *order_lock;
    int *order, *n, id;
} arg_t;

static void *waiter(void *p)
{
    arg_t *a = p;
    fifo_lock(a->lock);
    pthread_mutex_lock(a->order_lock);
    a->order[(*a->n)++] = a->id;
    pthread_mutex_unlock(a->order_lock);
    fifo_unlock(a->lock);
    return NULL;
}

static int queued(fifo_lock_t *l)
{
    pthread_mutex_lock(&l->m);
    int n = l->waiting;
    pthread_mutex_unlock(&l->m);
    return n;
}

static void test_waiters_in_order(void **state)
{
    (void)state;
    fifo_lock_t l;
    assert_int_equal(fifo_lock_init(&l), 0);
    pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
    int order[5], n = 0;
    arg_t args[5];
    pthread_t t[5];
    fifo_lock(&l);
    assert_int_equal(queued(&l), 0);
    for (int i = 0; i < 5; i++) {
        args[i] = (arg_t){&l, &order_lock, order, &n, i};
        assert_int_equal(pthread_create(&t[i], NULL, waiter, &args[i]), 0);
        while (queued(&l) < i + 1) /* thread i queues before thread i + 1 starts */
            usleep(1000);
    }
    assert_int_equal(queued(&l), 5);
    fifo_unlock(&l);
    fifo_lock(&l); /* the releaser asks again at once: it must come last */
    pthread_mutex_lock(&order_lock);
    int seen = n;
    pthread_mutex_unlock(&order_lock);
    assert_int_equal(seen, 5);
    fifo_unlock(&l);
    for (int i = 0; i < 5; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(order[i], i);
    }
    fifo_lock_destroy(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waiters_in_order),
    };
    return cmocka_run_group_tests_name("fifo_lock", tests, NULL, NULL);
}
