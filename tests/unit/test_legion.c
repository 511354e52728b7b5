/* Unit tests for the legion membership (src/node/legion.c): the cipher key
 * and IV derived from the legion's key, the member's ini text (ports, other
 * members only, hooks, arbiter, no raw secret), refusals and quorum
 * warnings, the watchdog's reading of canned stats JSON and its rule, the
 * hook's argument checks, the nft rules for the legions' ports; and, as
 * root, in a network namespace of this test process's own (unshare: nothing
 * on the machine's namespace): the address added and removed on a veth
 * uplink, a gratuitous ARP sent, the kernel taking the legion rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/common/log.h"
#include "../../src/node/legion.h"
#include "../../src/node/netpolicy.h"
#include "state_fixture.h"

static const char legion_state[] =
    "{\"version\": \"v1\", \"containers\": [],"
    " \"server\": {\"name\": \"a\", \"address\": \"203.0.113.2\"},"
    " \"legions\": [{\"id\": 1, \"name\": \"milan\", \"address\": \"203.0.113.100\","
    "  \"key\": \"s3cret key with spaces\", \"quorum\": 2,"
    "  \"nodes\": [\"203.0.113.2\", \"203.0.113.3\", \"203.0.113.4\"]},"
    " {\"id\": 5, \"name\": \"rome\", \"address\": \"203.0.113.101\", \"key\": \"k\","
    "  \"quorum\": 1, \"nodes\": [\"203.0.113.2\", \"203.0.113.4\", \"203.0.113.9\"]}]}";

static legion_opts_t opts(void)
{
    return (legion_opts_t){.state_dir = "/var/lib/imperium", .uwsgi = "/usr/bin/uwsgi-core",
                           .hook = "/usr/lib/imperium/imperium-legion-hook", .uplink = "world0",
                           .router = true, .network = true, .port = 4242, .freq = 1,
                           .tolerance = 1};
}

static void derivation(void **st)
{
    (void)st;
    char k1[LEGION_KEY_CHARS + 1], iv1[LEGION_IV_CHARS + 1];
    char k2[LEGION_KEY_CHARS + 1], iv2[LEGION_IV_CHARS + 1];
    err_t e;
    err_clear(&e);
    assert_int_equal(legion_derive("a key", k1, iv1, &e), 0);
    assert_int_equal(legion_derive("a key", k2, iv2, &e), 0);
    assert_string_equal(k1, k2); /* every member derives the same */
    assert_string_equal(iv1, iv2);
    assert_int_equal(strlen(k1), 32);
    assert_int_equal(strlen(iv1), 16);
    assert_int_equal(strspn(k1, "0123456789abcdef"), 32); /* no space can split it */
    /* Every byte of the key counts, even past the cipher's 32. */
    char long1[80], long2[80];
    memset(long1, 'x', sizeof long1 - 1);
    long1[sizeof long1 - 1] = '\0';
    memcpy(long2, long1, sizeof long1);
    long2[70] = 'y';
    assert_int_equal(legion_derive(long1, k1, iv1, &e), 0);
    assert_int_equal(legion_derive(long2, k2, iv2, &e), 0);
    assert_string_not_equal(k1, k2);
    assert_string_not_equal(iv1, iv2);
}

static void ini_text(void **st)
{
    (void)st;
    spec_state_t *s = state_of(legion_state);
    legion_opts_t o = opts();
    err_t e;
    err_clear(&e);
    char *ini = legion_ini(&o, &s->legions[0], "203.0.113.2", "/d/milan", o.hook, 65534, &e);
    assert_non_null(ini);
    char key[LEGION_KEY_CHARS + 1], iv[LEGION_IV_CHARS + 1], line[256];
    assert_int_equal(legion_derive("s3cret key with spaces", key, iv, &e), 0);
    snprintf(line, sizeof line, "legion = milan 203.0.113.2:4243 65534 aes-256-cbc:%s %s\n", key,
             iv);
    has(ini, line);
    lacks(ini, "s3cret");
    has(ini, "master = true\n");
    has(ini, "stats = /d/milan/stats.sock\n");
    has(ini, "legion-freq = 1\nlegion-tolerance = 1\n");
    has(ini, "legion-death-on-lord-error = 5\n");
    /* The others, on the same port; never itself. */
    has(ini, "legion-node = milan 203.0.113.3:4243\n");
    has(ini, "legion-node = milan 203.0.113.4:4243\n");
    lacks(ini, "legion-node = milan 203.0.113.2");
    has(ini, "legion-quorum = milan 2\n");
    has(ini, "legion-lord = milan cmd:/usr/lib/imperium/imperium-legion-hook lord "
             "203.0.113.100 world0\n");
    has(ini, "legion-unlord = milan cmd:/usr/lib/imperium/imperium-legion-hook unlord "
             "203.0.113.100 world0\n");
    has(ini, "legion-death = milan cmd:/usr/lib/imperium/imperium-legion-hook unlord "
             "203.0.113.100 world0\n");
    free(ini);
    /* legion_port + id; an arbiter (no uplink): valor 0, no hooks. */
    o.uplink = "";
    ini = legion_ini(&o, &s->legions[1], "203.0.113.2", "/d/rome", o.hook, 65534, &e);
    assert_non_null(ini);
    has(ini, "legion = rome 203.0.113.2:4247 0 aes-256-cbc:");
    lacks(ini, "legion-lord");
    lacks(ini, "legion-death =");
    free(ini);
    /* Valor 0 (listening first, to rank below the others): an arbiter too. */
    o = opts();
    ini = legion_ini(&o, &s->legions[0], "203.0.113.2", "/d/milan", o.hook, 0, &e);
    assert_non_null(ini);
    has(ini, "legion = milan 203.0.113.2:4243 0 aes-256-cbc:");
    lacks(ini, "legion-lord");
    free(ini);
    o.router = false;
    assert_false(legion_can_lord(&o));
    spec_free(s);
}

static void refusals_and_warnings(void **st)
{
    (void)st;
    spec_state_t *s = state_of(legion_state);
    legion_opts_t o = opts();
    spec_legion_t *lg = &s->legions[0];
    assert_null(legion_refusal(&o, lg, "203.0.113.2"));
    o.network = false;
    has(legion_refusal(&o, lg, "203.0.113.2"), "network = on");
    o = opts();
    o.port = 65535;
    has(legion_refusal(&o, lg, "203.0.113.2"), "beyond 65535");
    o = opts();
    assert_non_null(legion_refusal(&o, lg, "not-an-ip"));
    char *key = lg->key;
    lg->key = "";
    has(legion_refusal(&o, lg, "203.0.113.2"), "has no key");
    lg->key = key;
    char *name = lg->name;
    lg->name = "../x";
    has(legion_refusal(&o, lg, "203.0.113.2"), "its name");
    lg->name = "a b";
    assert_non_null(legion_refusal(&o, lg, "203.0.113.2"));
    lg->name = name;
    /* Quorum 2 of 3: a majority, no warning; 1 of 3: split brain; 4 of 3: never. */
    assert_null(legion_quorum_warning(lg));
    has(legion_quorum_warning(&s->legions[1]), "two Lords");
    lg->quorum = 4;
    has(legion_quorum_warning(lg), "no Lord can ever be elected");
    spec_free(s);
}

/* Shaped as uWSGI 2.0.21's stats server writes it (core/master_utils.c). */
static const char stats_lord[] =
    "{\"version\":\"2.0.21\",\"workers\":[],\"legions\":[{\"legion\":\"other\",\"addr\":\"x\","
    "\"i_am_the_lord\":0,\"members\":[]},{\"legion\":\"milan\",\"addr\":\"203.0.113.2:4243\","
    "\"uuid\":\"u\",\"valor\":2204044395,\"checksum\":1,\"quorum\":2,\"i_am_the_lord\":1,"
    "\"lord_valor\":65535,\"lord_uuid\":\"u\",\"nodes\":[\"203.0.113.3:4243\"],"
    "\"members\":[{\"name\":\"h\",\"uuid\":\"v\",\"valor\":65000,\"checksum\":1,"
    "\"last_seen\":1}, {\"name\":\"h\",\"uuid\":\"w\",\"valor\":0,\"checksum\":1,"
    "\"last_seen\":1}]}]}";

static void watchdog_decisions(void **st)
{
    (void)st;
    legion_stats_t s = {0};
    err_t e;
    err_clear(&e);
    assert_int_equal(legion_parse_stats(stats_lord, "milan", &s, &e), 0);
    assert_true(s.lord);
    assert_int_equal(s.members, 2);
    assert_int_equal(s.min_valor, 65000); /* an arbiter's 0 does not count */
    assert_int_equal(legion_valor_below(&s), 64999); /* ranks below every member alive */
    assert_true(legion_want_address(&s, 3, true)); /* 1 + 2 members >= quorum 3 */
    assert_false(legion_want_address(&s, 4, true)); /* lost its quorum: the address goes */
    assert_false(legion_want_address(&s, 2, false)); /* an arbiter never holds it */
    assert_int_equal(legion_parse_stats(stats_lord, "other", &s, &e), 0);
    assert_false(s.lord);
    assert_int_equal(s.members, 0);
    assert_int_equal(legion_valor_below(&s), LEGION_VALOR_MAX); /* alone: the highest */
    assert_false(legion_want_address(&s, 1, true)); /* not Lord: a stale address goes */
    s.min_valor = 1;
    assert_int_equal(legion_valor_below(&s), 1); /* never 0: that is an arbiter */
    assert_int_equal(legion_parse_stats(stats_lord, "rome", &s, &e), -1);
    has(e.msg, "no legion rome");
    err_clear(&e);
    assert_int_equal(legion_parse_stats("{\"workers\": [", "milan", &s, &e), -1);
    has(e.msg, "not JSON");
    err_clear(&e);
    assert_int_equal(legion_parse_stats("{\"workers\": []}", "milan", &s, &e), -1);
}

static void hook_arguments(void **st)
{
    (void)st;
    static const struct {
        int argc;
        const char *argv[5];
        const char *msg;
    } bad[] = {
        {2, {"h", "lord"}, "usage"},
        {4, {"h", "steal", "203.0.113.100", "world0"}, "usage"},
        {4, {"h", "lord", "203.0.113.300", "world0"}, "not an IPv4 address"},
        {4, {"h", "lord", "203.0.113.100;reboot", "world0"}, "not an IPv4 address"},
        {4, {"h", "unlord", "203.0.113.100", "a-very-long-interface-name"}, ""},
        {4, {"h", "unlord", "203.0.113.100", ""}, ""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_t e;
        err_clear(&e);
        assert_int_equal(legion_hook_run(bad[i].argc, (char **)bad[i].argv, &e), -1);
        assert_true(e.msg[0]);
        has(e.msg, bad[i].msg);
    }
}

static netpolicy_cfg_t np_cfg(void)
{
    netpolicy_cfg_t c = {.table = "imp_legion", .prefix = "imp", .uplink = "", .prefixlen = 8,
                         .legion_port = 4242, .cluster_port = 3032,
                         .cluster_gate_port = 3033};
    inet_pton(AF_INET, "10.0.0.0", &c.network);
    inet_pton(AF_INET, "10.0.0.1", &c.gateway);
    return c;
}

static void nft_rules(void **st)
{
    (void)st;
    netpolicy_cfg_t c = np_cfg();
    spec_state_t *s = state_of(legion_state);
    err_t e;
    err_clear(&e);
    char *t = netpolicy_render(&c, s, &e);
    assert_non_null(t);
    /* The other members of every legion, each once; never this server. */
    has(t, "set legion_peers {\n\t\ttype ipv4_addr\n\t\telements = { 203.0.113.3, 203.0.113.4, "
           "203.0.113.9 }");
    has(t, "udp dport { 4243, 4247, 3033 } ip saddr != @legion_peers drop\n");
    has(t, "tcp dport 3032 ip saddr != @legion_peers drop\n");
    /* A container's packet leaves masqueraded as this member: never to
     * those ports of another member. */
    has(t, "udp dport { 4243, 4247, 3033 } ip daddr @legion_peers reject with icmpx "
           "admin-prohibited\n");
    has(t, "tcp dport 3032 ip daddr @legion_peers reject with tcp reset\n");
    free(t);
    spec_free(s);
    /* A port mapping of one of those ports would be DNATed before the input
     * chain's drop: left out; others apply. */
    s = state_of("{\"version\": \"v1\", \"containers\": [],"
                 " \"server\": {\"address\": \"203.0.113.2\"}, \"legions\":"
                 " [{\"id\": 1, \"name\": \"milan\", \"address\": \"203.0.113.100\", \"key\": "
                 "\"k\", \"quorum\": 1, \"nodes\": [\"203.0.113.2\"]}], \"portmappings\": ["
                 "{\"id\": 1, \"proto\": \"tcp\", \"public_port\": 3032, \"container\": 30001,"
                 " \"container_ip\": \"10.0.0.3\", \"private_port\": 8000},"
                 "{\"id\": 2, \"proto\": \"udp\", \"public_port\": 3033, \"container\": 30001,"
                 " \"container_ip\": \"10.0.0.3\", \"private_port\": 8000},"
                 "{\"id\": 3, \"proto\": \"udp\", \"public_port\": 4243, \"container\": 30001,"
                 " \"container_ip\": \"10.0.0.3\", \"private_port\": 8000},"
                 "{\"id\": 4, \"proto\": \"udp\", \"public_port\": 3032, \"container\": 30001,"
                 " \"container_ip\": \"10.0.0.3\", \"private_port\": 8001}]}");
    t = netpolicy_render(&c, s, &e);
    assert_non_null(t);
    lacks(t, "3032 : 10.0.0.3 . 8000");
    lacks(t, "3033 : 10.0.0.3 . 8000");
    lacks(t, "4243 : 10.0.0.3 . 8000");
    has(t, "3032 : 10.0.0.3 . 8001"); /* udp 3032 is nobody's */
    free(t);
    spec_free(s);
    /* No legion: the router's fastrouter and the gate still listen (they
     * are started with the router), so nobody may reach them. */
    s = state_of("{\"version\": \"v1\", \"containers\": [],"
                 " \"server\": {\"address\": \"203.0.113.2\"}}");
    t = netpolicy_render(&c, s, &e);
    assert_non_null(t);
    has(t, "set legion_peers {\n\t\ttype ipv4_addr\n\t}\n");
    has(t, "udp dport { 3033 } ip saddr != @legion_peers drop\n");
    has(t, "tcp dport 3032 ip saddr != @legion_peers drop\n");
    free(t);
    /* Nor a fastrouter (cluster_port = 0): no such rule. */
    c.cluster_port = 0;
    t = netpolicy_render(&c, s, &e);
    assert_non_null(t);
    lacks(t, "legion_peers");
    free(t);
    c.cluster_port = 3032;
    spec_free(s);
    /* A legion of this server alone: an empty set, everything dropped. */
    s = state_of("{\"version\": \"v1\", \"containers\": [],"
                 " \"server\": {\"address\": \"203.0.113.2\"}, \"legions\":"
                 " [{\"id\": 2, \"name\": \"solo\", \"address\": \"203.0.113.100\", \"key\": "
                 "\"k\", \"quorum\": 1, \"nodes\": [\"203.0.113.2\"]}]}");
    t = netpolicy_render(&c, s, &e);
    assert_non_null(t);
    has(t, "set legion_peers {\n\t\ttype ipv4_addr\n\t}\n");
    has(t, "udp dport { 4244, 3033 } ip saddr != @legion_peers drop\n");
    free(t);
    spec_free(s);
}

/* ---- as root, in a network namespace of this process's own ---- */

static bool in_own_netns;

static int own_netns(void **st)
{
    (void)st;
    in_own_netns = geteuid() == 0 && unshare(CLONE_NEWNET) == 0 &&
                   system("ip link add up0 type veth peer name up1 && ip link set up1 up && "
                          "ip link set up0 up") == 0;
    return 0;
}

static bool has_address(const char *addr)
{
    char cmd[128], out[4096] = "";
    snprintf(cmd, sizeof cmd, "ip -4 -o addr show dev up0");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose(p);
    char want[64];
    snprintf(want, sizeof want, "inet %s/32 ", addr);
    return strstr(out, want) != NULL;
}

static void address_on_the_uplink(void **st)
{
    (void)st;
    if (!in_own_netns)
        skip();
    err_t e;
    err_clear(&e);
    char *lord[] = {"h", "lord", "203.0.113.100", "up0", NULL};
    char *unlord[] = {"h", "unlord", "203.0.113.100", "up0", NULL};
    if (legion_hook_run(4, lord, &e) < 0)
        fail_msg("lord: %s", e.msg);
    assert_true(has_address("203.0.113.100"));
    assert_int_equal(legion_address("203.0.113.100", "up0", true, &e), 0); /* already */
    assert_int_equal(legion_hook_run(4, unlord, &e), 0);
    assert_false(has_address("203.0.113.100"));
    assert_int_equal(legion_address("203.0.113.100", "up0", false, &e), 0); /* already gone */
    assert_int_equal(legion_address("203.0.113.100", "up0", true, &e), 1);
    assert_int_equal(legion_garp("203.0.113.100", "up0", &e), 0);
    assert_int_equal(legion_address("203.0.113.100", "up0", false, &e), 1);
    assert_int_equal(legion_address("203.0.113.100", "nosuch0", true, &e), -1);
    has(e.msg, "nosuch0");
}

/* The guard run in a child of this test (it blocks signals, forks): its
 * exit code, or -1 when the guard refused (e.msg on stderr). */
static pid_t guard_start(char **argv, int argc)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        err_t e;
        err_clear(&e);
        int rc = legion_guard_run(argc, argv, &e);
        if (rc < 0)
            fprintf(stderr, "guard: %s\n", e.msg);
        _exit(rc < 0 ? 200 : rc);
    }
    return pid;
}

static int guard_status(pid_t pid)
{
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void guard_arguments(void **st)
{
    (void)st;
    err_t e;
    char *few[] = {"h", "guard", "-", "-", NULL};
    err_clear(&e);
    assert_int_equal(legion_guard_run(4, few, &e), -1);
    has(e.msg, "usage");
    char *half[] = {"h", "guard", "203.0.113.100", "-", "/bin/true", NULL};
    err_clear(&e);
    assert_int_equal(legion_guard_run(5, half, &e), -1);
    has(e.msg, "both ADDR and IFNAME");
    char *bad_if[] = {"h", "guard", "203.0.113.100", "up0;x", "/bin/true", NULL};
    err_clear(&e);
    assert_int_equal(legion_guard_run(5, bad_if, &e), -1);
    /* The member's exit status is the guard's; a member that cannot start
     * is 127. */
    char *three[] = {"h", "guard", "-", "-", "/bin/sh", "-c", "exit 3", NULL};
    assert_int_equal(guard_status(guard_start(three, 7)), 3);
    char *none[] = {"h", "guard", "-", "-", "/nonexistent/uwsgi", NULL};
    assert_int_equal(guard_status(guard_start(none, 5)), 127);
}

/* Three stop signals reach the guard (a dying daemon's re-sent PDEATHSIG):
 * the member gets exactly one SIGINT, then SIGKILL when it lingers; the
 * address goes when it has ended. */
static void guard_forwards_one_stop(void **st)
{
    (void)st;
    if (!in_own_netns)
        skip();
    char dir[] = "/tmp/imp-guard-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char script[512];
    snprintf(script, sizeof script,
             "trap 'echo int >> %s/ints' INT; : > %s/ready; "
             "while :; do sleep 0.05; done", dir, dir);
    err_t e;
    err_clear(&e);
    assert_int_equal(legion_address("203.0.113.101", "up0", true, &e), 1);
    char *argv[] = {"h", "guard", "203.0.113.101", "up0", "/bin/sh", "-c", script, NULL};
    pid_t g = guard_start(argv, 7);
    char ready[600], ints[600];
    snprintf(ready, sizeof ready, "%s/ready", dir);
    snprintf(ints, sizeof ints, "%s/ints", dir);
    for (int i = 0; i < 200 && access(ready, F_OK) != 0; i++)
        usleep(10000);
    assert_int_equal(access(ready, F_OK), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(kill(g, i == 1 ? SIGTERM : SIGINT), 0);
        usleep(50000);
    }
    assert_true(has_address("203.0.113.101")); /* the member still runs */
    assert_int_equal(guard_status(g), 128 + SIGKILL);
    assert_false(has_address("203.0.113.101"));
    FILE *f = fopen(ints, "r");
    assert_non_null(f);
    char line[16];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n++;
    fclose(f);
    assert_int_equal(n, 1);
    unlink(ints);
    unlink(ready);
    rmdir(dir);
}

static void kernel_takes_the_rules(void **st)
{
    (void)st;
    if (!in_own_netns)
        skip();
    netpolicy_cfg_t c = np_cfg();
    err_t e;
    err_clear(&e);
    netpolicy_t *np = netpolicy_new(&c, &e);
    assert_non_null(np);
    spec_state_t *s = state_of(legion_state);
    if (netpolicy_apply(np, s, &e) != 1)
        fail_msg("apply: %s", e.msg);
    spec_free(s);
    netpolicy_free(np);
    assert_int_equal(netpolicy_delete("imp_legion", &e), 0);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(derivation),
        cmocka_unit_test(ini_text),
        cmocka_unit_test(refusals_and_warnings),
        cmocka_unit_test(watchdog_decisions),
        cmocka_unit_test(hook_arguments),
        cmocka_unit_test(guard_arguments),
        cmocka_unit_test(nft_rules),
        cmocka_unit_test(address_on_the_uplink),
        cmocka_unit_test(guard_forwards_one_stop),
        cmocka_unit_test(kernel_takes_the_rules),
    };
    return cmocka_run_group_tests(tests, own_netns, NULL);
}
