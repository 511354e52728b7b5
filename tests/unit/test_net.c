/* Unit tests for src/runtime/net.c (the netlink messages, parsed back with
 * libmnl, and the address rules) and the node's network settings
 * (src/node/agent_config.c).  No privileges: nothing is sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/node/agent.h"
#include "../../src/runtime/net.h"

static uint32_t ip(const char *s)
{
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, s, &a), 1);
    return a.s_addr;
}

/* ---- the veth message ---- */

typedef struct {
    const struct nlattr *tb[IFLA_MAX + 1];
} attrs_t;

static int collect(const struct nlattr *a, void *data)
{
    attrs_t *t = data;
    if (mnl_attr_type_valid(a, IFLA_MAX) > 0)
        t->tb[mnl_attr_get_type(a)] = a;
    return MNL_CB_OK;
}

static const struct nlattr *nested(const struct nlattr *nest, int type)
{
    const struct nlattr *a;
    mnl_attr_for_each_nested(a, nest) if (mnl_attr_get_type(a) == type) return a;
    return NULL;
}

static void test_veth_message(void **state)
{
    (void)state;
    char buf[NET_MSG_MAX];
    struct nlmsghdr *nlh = net_msg_veth(buf, "imp30001", "uwsgi0", 4242, 1450);
    assert_int_equal(nlh->nlmsg_type, RTM_NEWLINK);
    assert_true(nlh->nlmsg_flags & NLM_F_CREATE);
    assert_true(nlh->nlmsg_flags & NLM_F_EXCL);
    assert_true(nlh->nlmsg_len <= NET_MSG_MAX);
    const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
    assert_true(ifm->ifi_flags & IFF_UP);
    assert_true(ifm->ifi_change & IFF_UP);

    attrs_t top = {0};
    assert_true(mnl_attr_parse(nlh, sizeof *ifm, collect, &top) >= 0);
    assert_string_equal(mnl_attr_get_str(top.tb[IFLA_IFNAME]), "imp30001");
    assert_int_equal(mnl_attr_get_u32(top.tb[IFLA_MTU]), 1450);
    const struct nlattr *kind = nested(top.tb[IFLA_LINKINFO], IFLA_INFO_KIND);
    assert_non_null(kind);
    assert_string_equal(mnl_attr_get_str(kind), "veth");
    const struct nlattr *data = nested(top.tb[IFLA_LINKINFO], IFLA_INFO_DATA);
    assert_non_null(data);
    const struct nlattr *peer = nested(data, VETH_INFO_PEER);
    assert_non_null(peer);

    /* The peer: an ifinfomsg, then its own attributes. */
    void *p = (char *)mnl_attr_get_payload(peer) + sizeof(struct ifinfomsg);
    size_t len = mnl_attr_get_payload_len(peer);
    assert_true(len > sizeof(struct ifinfomsg));
    attrs_t in = {0};
    struct nlattr *attr;
    mnl_attr_for_each_payload(p, len - sizeof(struct ifinfomsg))
        collect(attr, &in);
    assert_string_equal(mnl_attr_get_str(in.tb[IFLA_IFNAME]), "uwsgi0");
    assert_int_equal(mnl_attr_get_u32(in.tb[IFLA_NET_NS_PID]), 4242);
    assert_int_equal(mnl_attr_get_u32(in.tb[IFLA_MTU]), 1450);

    /* No MTU asked: none sent (the kernel's default). */
    nlh = net_msg_veth(buf, "imp30001", "uwsgi0", 1, 0);
    attrs_t none = {0};
    assert_true(mnl_attr_parse(nlh, sizeof *ifm, collect, &none) >= 0);
    assert_null(none.tb[IFLA_MTU]);
}

static int collect_rt(const struct nlattr *a, void *data)
{
    const struct nlattr **tb = data;
    if (mnl_attr_type_valid(a, RTA_MAX) > 0)
        tb[mnl_attr_get_type(a)] = a;
    return MNL_CB_OK;
}

static void test_route_messages(void **state)
{
    (void)state;
    char buf[NET_MSG_MAX];
    struct nlmsghdr *nlh = net_msg_route32(buf, RTM_NEWROUTE, ip("10.0.0.5"), 7);
    assert_int_equal(nlh->nlmsg_type, RTM_NEWROUTE);
    assert_true(nlh->nlmsg_flags & NLM_F_REPLACE);
    const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
    assert_int_equal(rtm->rtm_protocol, NET_RTPROT);
    assert_int_equal(rtm->rtm_dst_len, 32);
    assert_int_equal(rtm->rtm_scope, RT_SCOPE_LINK);
    assert_int_equal(rtm->rtm_table, RT_TABLE_MAIN);
    const struct nlattr *tb[RTA_MAX + 1] = {0};
    assert_true(mnl_attr_parse(nlh, sizeof *rtm, collect_rt, tb) >= 0);
    assert_int_equal(mnl_attr_get_u32(tb[RTA_DST]), ip("10.0.0.5"));
    assert_int_equal(mnl_attr_get_u32(tb[RTA_OIF]), 7);

    /* Never over the server's own route to the network: EXCL, no REPLACE. */
    nlh = net_msg_unreachable(buf, RTM_NEWROUTE, ip("10.0.0.0"), 8);
    rtm = mnl_nlmsg_get_payload(nlh);
    assert_int_equal(rtm->rtm_type, RTN_UNREACHABLE);
    assert_int_equal(rtm->rtm_protocol, NET_RTPROT);
    assert_int_equal(rtm->rtm_dst_len, 8);
    assert_true(nlh->nlmsg_flags & NLM_F_EXCL);
    assert_false(nlh->nlmsg_flags & NLM_F_REPLACE);
    /* The delete names type and protocol: the kernel then matches only ours. */
    nlh = net_msg_unreachable(buf, RTM_DELROUTE, ip("10.0.0.0"), 8);
    rtm = mnl_nlmsg_get_payload(nlh);
    assert_int_equal(nlh->nlmsg_type, RTM_DELROUTE);
    assert_int_equal(rtm->rtm_type, RTN_UNREACHABLE);
    assert_int_equal(rtm->rtm_protocol, NET_RTPROT);
    assert_false(nlh->nlmsg_flags & NLM_F_CREATE);

    nlh = net_msg_dellink(buf, "imp30001");
    assert_int_equal(nlh->nlmsg_type, RTM_DELLINK);
}

/* ---- addresses ---- */

static net_cfg_t cfg_of(const char *network, const char *gateway, const char *prefix)
{
    net_cfg_t c = {.on = true, .network_text = network, .gateway_text = gateway, .prefix = prefix};
    return c;
}

static void test_cfg_and_spec(void **state)
{
    (void)state;
    err_t e;
    net_cfg_t c = cfg_of("10.0.0.0/8", "10.0.0.1", "imp");
    assert_int_equal(net_cfg_parse(&c, &e), 0);
    assert_int_equal(c.prefixlen, 8);
    assert_int_equal(c.network, ip("10.0.0.0"));

    net_spec_t n;
    assert_int_equal(net_spec_fill(&c, "10.0.0.2", &n, &e), 0);
    assert_true(n.on);
    assert_int_equal(n.ip, ip("10.0.0.2"));
    assert_int_equal(n.gateway, ip("10.0.0.1"));
    assert_int_equal(n.prefixlen, 8);
    assert_string_equal(n.prefix, "imp");

    /* Outside the network, the gateway, the broadcast, no ip: refused. */
    const char *bad[] = {"192.168.0.2", "10.0.0.1", "10.255.255.255", "10.0.0.0", "", "10.0.0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err_clear(&e);
        assert_int_equal(net_spec_fill(&c, bad[i], &n, &e), -1);
        assert_false(n.on);
        assert_int_equal(e.kind, ERR_INPUT);
    }
    assert_int_equal(net_spec_fill(&c, "192.168.0.2", &n, &e), -1);
    assert_non_null(strstr(e.msg, "192.168.0.2"));
    assert_non_null(strstr(e.msg, "10.0.0.0/8"));
    assert_int_equal(net_spec_fill(&c, NULL, &n, &e), -1);

    /* The gateway must be a host of the network. */
    c = cfg_of("10.0.0.0/8", "192.168.1.1", "imp");
    assert_int_equal(net_cfg_parse(&c, &e), -1);
    assert_non_null(strstr(e.msg, "gateway"));
    c = cfg_of("10.0.0.1/8", "10.0.0.1", "imp");
    assert_int_equal(net_cfg_parse(&c, &e), -1);
    assert_non_null(strstr(e.msg, "host bits"));
    const char *nets[] = {"10.0.0.0", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/8x", "x/8", "10.0.0.0/0"};
    for (size_t i = 0; i < sizeof nets / sizeof *nets; i++) {
        c = cfg_of(nets[i], "10.0.0.1", "imp");
        assert_int_equal(net_cfg_parse(&c, &e), -1);
    }

    char name[NET_IFNAME_MAX];
    assert_int_equal(net_host_name("imp", 30001, name, sizeof name, &e), 0);
    assert_string_equal(name, "imp30001");
    assert_int_equal(net_host_name("abcd", 16807213, name, sizeof name, &e), 0);
    assert_string_equal(name, "abcd16807213");
    assert_int_equal(net_host_name("", 30001, name, sizeof name, &e), -1);
}

static void test_prefix_rule(void **state)
{
    (void)state;
    err_t e;
    const char *good[] = {"imp", "a", "xyzw", "imz"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(net_check_prefix(good[i], &e), 0);
    /* Digits too: with prefix `imp`, node `imp1`'s imp130001 would read as
     * container 130001 of ours (and be deleted as a leftover). */
    const char *bad[] = {"", "imper", "Imp", "im-p", "i p", "im/", "imp1", "x9z0", "i2", "7"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(net_check_prefix(bad[i], &e), -1);
        assert_non_null(strstr(e.msg, "veth_prefix"));
    }
    assert_int_equal(net_check_prefix(NULL, &e), -1);

    /* The node's own interfaces must not look like a container's. */
    assert_int_equal(net_check_not_prefixed("eth0", "imp", "uplink", &e), 0);
    assert_int_equal(net_check_not_prefixed("", "imp", "uplink", &e), 0);
    assert_int_equal(net_check_not_prefixed("im", "imp", "uplink", &e), 0);
    assert_int_equal(net_check_not_prefixed("impx", "imp", "uplink", &e), -1);
    assert_non_null(strstr(e.msg, "uplink 'impx' starts with veth_prefix 'imp'"));
    assert_int_equal(net_check_not_prefixed("imperium-vx", "imp", "overlay_dev", &e), -1);
    assert_non_null(strstr(e.msg, "overlay_dev"));

    assert_true(net_is_loopback("127.0.0.2"));
    assert_true(net_is_loopback("127.255.0.1"));
    assert_false(net_is_loopback("128.0.0.1"));
    assert_false(net_is_loopback("203.0.113.5"));
    assert_false(net_is_loopback("127.0.0.1:80"));
    assert_false(net_is_loopback(NULL));
}

/* ---- the node's settings ---- */

static int load(const char *extra, agent_cfg_t *c, err_t *e)
{
    char path[] = "/tmp/imp-test-net-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fprintf(f, "api_url = http://127.0.0.1:1\nserver_name = s\nsecret = x\n"
               "state_dir = /tmp/imp-test-net-state\ncontainers_dir = /tmp/imp-test-net-c\n%s",
            extra);
    fclose(f);
    err_clear(e);
    int rc = agent_cfg_load(c, path, e);
    unlink(path);
    return rc;
}

static void test_settings(void **state)
{
    (void)state;
    agent_cfg_t c;
    err_t e;
    assert_int_equal(load("", &c, &e), 0);
    assert_true(c.node.net.on); /* the default */
    assert_string_equal(c.node.net.network_text, "10.0.0.0/8");
    assert_string_equal(c.node.net.gateway_text, "10.0.0.1");
    assert_string_equal(c.node.net.prefix, "imp");
    assert_int_equal(c.node.net.gateway, ip("10.0.0.1"));
    agent_cfg_free(&c);

    assert_int_equal(load("network = off\nveth_prefix = nb\ncontainer_network = 10.8.0.0/16\n"
                          "gateway = 10.8.0.1\n",
                          &c, &e),
                     0);
    assert_false(c.node.net.on);
    assert_string_equal(c.node.net.prefix, "nb");
    assert_int_equal(c.node.net.prefixlen, 16);
    agent_cfg_free(&c);

    struct {
        const char *line, *says;
    } bad[] = {
        {"veth_prefix = toolong\n", "veth_prefix"},
        {"veth_prefix = IMP\n", "veth_prefix"},
        {"veth_prefix = n2\n", "veth_prefix must be 1-4 letters"},
        {"uplink = impx\n", "uplink 'impx' starts with veth_prefix 'imp'"},
        {"veth_prefix = eth\nuplink = eth0\n", "uplink 'eth0' starts with veth_prefix 'eth'"},
        {"overlay = vxlan\noverlay_local = 192.0.2.1\noverlay_dev = impvx\n",
         "overlay_dev 'impvx' starts with veth_prefix 'imp'"},
        {"container_network = 10.0.0.0\n", "container_network"},
        {"gateway = ten\n", "gateway"},
        {"gateway = 192.168.0.1\n", "gateway 192.168.0.1 is not a host address"},
        {"network = maybe\n", "network"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(load(bad[i].line, &c, &e), -1);
        assert_int_equal(e.kind, ERR_INPUT);
        if (!strstr(e.msg, bad[i].says))
            fail_msg("%s: '%s' does not say '%s'", bad[i].line, e.msg, bad[i].says);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_veth_message),
        cmocka_unit_test(test_route_messages),
        cmocka_unit_test(test_cfg_and_spec),
        cmocka_unit_test(test_prefix_rule),
        cmocka_unit_test(test_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
