/* test_loopboxes.c - the node's loopboxes thread (src/node/loopboxes.c):
 * the records in <state_dir>/<uid>/loopboxes.json against the running
 * inits.  A "container" here is a child process running as its uid, with
 * the state.json a start would write; the mounts themselves are
 * tests/unit/test_loopbox.c's and tests/e2e/test_loopbox_mounts.py's. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/common/clock.h"
#include "../../src/common/fsutil.h"
#include "../../src/node/loopboxes.h"
#include "../../src/runtime/state.h"
#include "state_fixture.h"

#define TMPDIR_FIXTURE_NAME "loopboxes"
#include "tmpdir_fixture.h"

#define RUNNING 39001 /* a container whose init runs */
#define STOPPED 39002 /* one that does not run */
#define SYSTEM 29999  /* a uid at or under UID_BASE: never a container's */

static char state_dir[128], homes[128];

/* A child as uid, recorded in state.json as that container's init. */
static pid_t fake_init(int uid)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgid((gid_t)uid) < 0 || setuid((uid_t)uid) < 0)
            _exit(1);
        pause();
        _exit(0);
    }
    long long deadline = now_ms() + 2000;
    while (proc_uid(pid) != uid && now_ms() < deadline)
        sleep_ms(5);
    assert_int_equal(proc_uid(pid), uid);
    err_t e;
    err_clear(&e);
    state_t st = {.uid = uid, .pid = pid};
    char letter;
    assert_int_equal(proc_stat(pid, &st.starttime, &letter), 0);
    assert_int_equal(state_prepare(state_dir, uid, &e), 0);
    assert_int_equal(state_save(state_dir, &st, &e), 0);
    return pid;
}

static void end_init(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void record_path(int uid, char *out, size_t len)
{
    snprintf(out, len, "%s/%d/%s", state_dir, uid, LOOPBOXES_FILE);
}

/* A record of loopbox 7 mounted as mnt_id for init (pid, starttime). */
static void write_record(int uid, long long pid, unsigned long long starttime, long long mnt_id)
{
    char path[256], text[512];
    record_path(uid, path, sizeof path);
    snprintf(text, sizeof text,
             "{\"pid\":%lld,\"starttime\":%llu,\"loopboxes\":[{\"id\":7,\"filename\":\"zeus001\","
             "\"mountpoint\":\"zeus\",\"ro\":false,\"mnt_id\":%lld,\"dev\":\"/dev/loop99\","
             "\"img_dev\":1,\"img_ino\":2,\"img_size\":3}]}",
             pid, starttime, mnt_id);
    err_t e;
    err_clear(&e);
    assert_int_equal(state_prepare(state_dir, uid, &e), 0);
    assert_int_equal(fs_write_atomic(path, text, strlen(text), 0600, &e), 0);
}

static bool exists(int uid)
{
    char path[256];
    record_path(uid, path, sizeof path);
    return access(path, F_OK) == 0;
}

static loopboxes_t *start(node_cfg_t *node)
{
    snprintf(state_dir, sizeof state_dir, "%s/state", base);
    snprintf(homes, sizeof homes, "%s/homes", base);
    memset(node, 0, sizeof *node);
    node->state_dir = state_dir;
    node->containers_dir = homes;
    loopboxes_opts_t o = {.node = node, .remount_delay_s = 1, .check_ms = 20};
    err_t e;
    err_clear(&e);
    loopboxes_t *l = loopboxes_new(&o, &e);
    assert_non_null(l);
    return l;
}

static const char *STATE = "{\"version\": \"1\", \"containers\": ["
                           "{\"uid\": 39001, \"loopboxes\": []},"
                           "{\"uid\": 39002, \"loopboxes\": []}]}";

/* Nothing is touched before the first state; then the records of another
 * init (the container restarted: its mounts went with its namespace) are
 * dropped, and those of a container that does not run are left for its
 * next start to judge. */
static void test_records_of_another_init_are_dropped(void **state)
{
    (void)state;
    node_cfg_t node;
    snprintf(state_dir, sizeof state_dir, "%s/state", base);
    pid_t init = fake_init(RUNNING);
    write_record(RUNNING, init + 100000, 1, 4242);
    write_record(STOPPED, 1, 1, 4243);
    loopboxes_t *l = start(&node);
    sleep_ms(150); /* several periods of the watch: no state, nothing done */
    assert_true(exists(RUNNING));
    spec_state_t *s = state_of(STATE);
    loopboxes_set_state(l, s);
    long long deadline = now_ms() + 2000;
    while (exists(RUNNING) && now_ms() < deadline)
        sleep_ms(10);
    assert_false(exists(RUNNING));
    assert_true(exists(STOPPED));
    loopboxes_free(l);
    spec_free(s);
    end_init(init);
}

/* The same init, but its namespace has no such mount any more (someone
 * unmounted it while no daemon ran): not adopted, the record goes. */
static void test_a_mount_no_longer_there_is_not_adopted(void **state)
{
    (void)state;
    node_cfg_t node;
    snprintf(state_dir, sizeof state_dir, "%s/state", base);
    pid_t init = fake_init(RUNNING);
    state_t st;
    err_t e;
    err_clear(&e);
    assert_int_equal(state_load(state_dir, RUNNING, &st, &e), 1);
    write_record(RUNNING, init, st.starttime, 1ULL << 40);
    loopboxes_t *l = start(&node);
    spec_state_t *s = state_of(STATE);
    loopboxes_set_state(l, s);
    loopboxes_poke(l);
    long long deadline = now_ms() + 2000;
    while (exists(RUNNING) && now_ms() < deadline)
        sleep_ms(10);
    assert_false(exists(RUNNING));
    loopboxes_free(l);
    spec_free(s);
    end_init(init);
}

/* A state naming a uid no container may have (at or under UID_BASE, as
 * the supervisor refuses it) is not followed: an init running as that uid
 * is not a container's, and its state directory is left alone.  (The
 * parser marks such a container with an error; this state is built by
 * hand, as another caller could.) */
static void test_a_uid_under_the_base_is_not_followed(void **state)
{
    (void)state;
    node_cfg_t node;
    snprintf(state_dir, sizeof state_dir, "%s/state", base);
    pid_t init = fake_init(SYSTEM);
    write_record(SYSTEM, init + 100000, 1, 4244);
    write_record(RUNNING, 1, 1, 4245); /* proof that a pass ran: another init's, dropped */
    pid_t running = fake_init(RUNNING);
    loopboxes_t *l = start(&node);
    spec_container_t ctrs[] = {{.uid = SYSTEM}, {.uid = RUNNING}};
    spec_state_t s = {.containers = ctrs, .n_containers = 2};
    loopboxes_set_state(l, &s);
    long long deadline = now_ms() + 2000;
    while (exists(RUNNING) && now_ms() < deadline)
        sleep_ms(10);
    assert_false(exists(RUNNING));
    sleep_ms(100); /* a few more passes */
    assert_true(exists(SYSTEM));
    loopboxes_free(l);
    end_init(init);
    end_init(running);
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_loopboxes: needs root (a child as a container's uid); skipped\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_records_of_another_init_are_dropped, make_base,
                                        remove_base),
        cmocka_unit_test_setup_teardown(test_a_mount_no_longer_there_is_not_adopted, make_base,
                                        remove_base),
        cmocka_unit_test_setup_teardown(test_a_uid_under_the_base_is_not_followed, make_base,
                                        remove_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
