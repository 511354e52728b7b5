/* namespaces.c - clone into new namespaces, hostname, loopback, and the
 * drop to the container's uid with no capabilities.
 *
 * Everything here runs in the child between clone and exec, so it uses raw
 * syscalls: glibc's setresuid() & co. broadcast to every thread glibc
 * remembers, and after a raw clone those are the parent's threads, which do
 * not exist here (the call would wait for them forever). */
#include "runtime.h"

#include <errno.h>
#include <linux/capability.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* struct clone_args of linux/sched.h, first version (64 bytes): spelled out
 * because linux/sched.h and glibc's sched.h both define the CLONE_ flags. */
struct rt_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

pid_t rt_clone(unsigned long long flags)
{
    struct rt_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = flags;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0 && errno == ENOSYS) /* before Linux 5.3 */
        pid = syscall(SYS_clone, (unsigned long)flags | SIGCHLD, NULL, NULL, NULL, NULL);
    return (pid_t)pid;
}

int rt_enter_cgroup_ns(err_t *e)
{
    /* After the parent moved us into our cgroup: inside, /proc/self/cgroup
     * then reads "/" instead of the node's cgroup layout. */
    if (unshare(CLONE_NEWCGROUP) < 0)
        return rt_fail(e, "new cgroup namespace");
    return 0;
}

int rt_set_hostname(const rt_plan_t *p, err_t *e)
{
    if (sethostname(p->hostname, strlen(p->hostname)) < 0)
        return rt_fail(e, "set hostname");
    return 0;
}

int rt_loopback_up(err_t *e)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return rt_fail(e, "loopback: socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    int rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    int err = errno;
    close(fd);
    errno = err;
    return rc < 0 ? rt_fail(e, "loopback: bring lo up") : 0;
}

static void set_in(struct sockaddr *sa, uint32_t addr)
{
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = addr;
}

/* Address, netmask, MTU and up: the kernel then adds the on-link route of
 * the whole container network, which proxy ARP on the host end answers. */
static int uwsgi0_addr(int fd, const net_spec_t *n, err_t *e)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, NET_INSIDE_NAME, sizeof NET_INSIDE_NAME);
    set_in(&ifr.ifr_addr, n->ip);
    if (ioctl(fd, SIOCSIFADDR, &ifr) < 0)
        return rt_fail(e, "uwsgi0: set the address");
    set_in(&ifr.ifr_netmask, htonl(n->prefixlen ? ~0u << (32 - n->prefixlen) : 0));
    if (ioctl(fd, SIOCSIFNETMASK, &ifr) < 0)
        return rt_fail(e, "uwsgi0: set the netmask");
    if (n->mtu > 0) {
        ifr.ifr_mtu = n->mtu;
        if (ioctl(fd, SIOCSIFMTU, &ifr) < 0)
            return rt_fail(e, "uwsgi0: set the MTU");
    }
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
        return rt_fail(e, "uwsgi0: read the flags");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
        return rt_fail(e, "uwsgi0: bring it up");
    return 0;
}

static int uwsgi0_default_route(int fd, const net_spec_t *n, err_t *e)
{
    struct rtentry rt;
    memset(&rt, 0, sizeof rt);
    set_in(&rt.rt_dst, 0);
    set_in(&rt.rt_genmask, 0);
    set_in(&rt.rt_gateway, n->gateway);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    rt.rt_dev = (char *)NET_INSIDE_NAME;
    if (ioctl(fd, SIOCADDRT, &rt) < 0)
        return rt_fail(e, "uwsgi0: add the default route");
    return 0;
}

int rt_uwsgi0_up(const rt_plan_t *p, err_t *e)
{
    if (!p->net.on)
        return 0;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return rt_fail(e, "uwsgi0: socket");
    int rc = uwsgi0_addr(fd, &p->net, e) < 0 || uwsgi0_default_route(fd, &p->net, e) < 0 ? -1 : 0;
    close(fd);
    return rc;
}

static int drop_bounding_set(err_t *e)
{
    /* Needs CAP_SETPCAP, so before the uid changes.  EINVAL marks the first
     * capability this kernel does not know. */
    for (unsigned long cap = 0; cap < 64; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break;
            return rt_fail(e, "drop the capability bounding set");
        }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return rt_fail(e, "clear ambient capabilities");
    return 0;
}

int rt_drop_privileges(int uid, err_t *e)
{
    if (drop_bounding_set(e) < 0)
        return -1;
    if (syscall(SYS_setgroups, 0, NULL) < 0)
        return rt_fail(e, "setgroups");
    if (syscall(SYS_setresgid, uid, uid, uid) < 0)
        return rt_fail(e, "setresgid");
    /* From uid 0 to non-zero uids: the kernel clears the permitted and
     * effective sets (PR_SET_KEEPCAPS is off)... */
    if (syscall(SYS_setresuid, uid, uid, uid) < 0)
        return rt_fail(e, "setresuid");
    /* ...but not the inheritable one: clear all three explicitly. */
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &hdr, data) < 0)
        return rt_fail(e, "capset");
    /* setuid binaries of the distro (su, sudo, ping) gain nothing. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return rt_fail(e, "no_new_privs");
    /* Until it execs imperium-init this process is a copy of the node's
     * memory: the customer's processes (same uid) must neither ptrace it
     * nor read it.  (imperium-init sets this again: exec resets it.) */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return rt_fail(e, "not dumpable");
    return 0;
}
