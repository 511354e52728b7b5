"""Issue 12, items 6 and 7, end to end: a container cannot starve the node
(pids limit, CPU and I/O weights in its cgroups) and reaches less of the
kernel (a seccomp filter on its init, everything below it and every ssh
session; the init is the small imperium-init program, not a fork of the
node daemon).  The real API, the real imperium-node daemon with its HTTP
router, containers on the host distro; root only.

The node, router and sshd helpers are those of tests/e2e/nodeutil.py and
sshutil.py, the fixtures those of conftest.py."""

import json
import os
import time

import pytest
import requests

from conftest import BIN, unique
from helpers import proc_status, procs_of_uid, wait_for
from nodeutil import (CGROUP_PARENT, NEEDS_CONTAINERS, add_domain, cgroup_dirs, launch,
                      router_node, running)
from sshutil import Sshd, ok

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]

PIDS_MAX = 64
CPU_WEIGHT = 50   # v1: 512 shares
IO_WEIGHT = 200

# Run inside a container (as a vassal's import, or over ssh): what the
# kernel answers to the calls the filter must refuse.
PROBE = r'''
import ctypes, errno, json, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r == 0 and nr == 56:   # a clone that went through: the child leaves at once
        os._exit(0)
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17
u = subprocess.run(["unshare", "-U", "true"], capture_output=True, text=True)
out = {
    "unshare_U": [u.returncode, u.stderr.strip()],
    "unshare_user": sc(272, CLONE_NEWUSER),
    "clone_newuser": sc(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
    "clone_newnet": sc(56, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0),
    "clone3": sc(435, 0, 0),
    "keyctl": sc(250, 0, 0, 0, 0, 0),            # KEYCTL_GET_KEYRING_ID
    "add_key": sc(248, 0, 0, 0, 0, 0),
    "bpf": sc(321, 0, 0, 0),
    "perf_event_open": sc(298, 0, 0, -1, -1, 0),
    "userfaultfd": sc(323, 0),
    "setns": sc(308, 0, 0),
    "ptrace_init": sc(101, 16, 1, 0, 0),         # PTRACE_ATTACH to PID 1
    "seccomp": [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0],
    "fork_ok": subprocess.run(["sh", "-c", "echo $((6*7))"], capture_output=True,
                              text=True).stdout.strip(),
}
print(json.dumps(out))
'''

DENIED = ("unshare_user", "clone_newuser", "clone_newnet", "keyctl", "add_key", "bpf",
          "perf_event_open", "userfaultfd", "setns")

# A fork loop: forks until the kernel refuses, the children spin (a busy
# loop on every CPU the container gets), all of it ends by itself in 15 s.
BOMB = r'''
import errno, json, os, time
home = os.environ["HOME"]
deadline = time.time() + 15
n, err = 0, None
while n < 100000:
    try:
        pid = os.fork()
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
        break
    if pid == 0:
        while time.time() < deadline:
            pass
        os._exit(0)
    n += 1
tmp = os.path.join(home, ".bomb.json.tmp")
with open(tmp, "w") as f:
    json.dump({"forks": n, "error": err}, f)
os.rename(tmp, os.path.join(home, "bomb.json"))
while time.time() < deadline:
    time.sleep(0.2)
'''

BOMB_APP = '''import os, subprocess
subprocess.Popen(["python3", os.environ["HOME"] + "/bomb.py"], start_new_session=True)
def application(environ, start_response):
    start_response("200 OK", [])
    return [b"bomb"]
'''

PROBE_APP = '''import os, subprocess
r = subprocess.run(["python3", os.environ["HOME"] + "/probe.py"], capture_output=True, text=True)
tmp = os.environ["HOME"] + "/.probe.json.tmp"
open(tmp, "w").write(r.stdout or ("ERR " + r.stderr))
os.rename(tmp, os.environ["HOME"] + "/probe.json")
def application(environ, start_response):
    start_response("200 OK", [])
    return [b"probe"]
'''


@pytest.fixture
def snode(api):
    """A node (daemon + HTTP router) with a small pids limit and explicit
    CPU and I/O weights in its config."""
    def remove_cgroups(n):  # the other controllers' cgroups, if any was left
        for uid in n.uids:
            for d in ctl_dirs(uid).values():
                if os.path.isdir(d):
                    os.rmdir(d)

    with router_node(api, "secrt-",
                     f"pids_max = {PIDS_MAX}\ncpu_weight = {CPU_WEIGHT}\nio_weight = {IO_WEIGHT}\n",
                     after_cleanup=remove_cgroups, no_leaked_mounts=True) as n:
        yield n


def ctl_dirs(uid):
    """{controller: directory} of the container's cgroups besides memory."""
    v2 = f"/sys/fs/cgroup/{CGROUP_PARENT}/{uid}"
    if os.path.exists(f"{v2}/pids.max"):
        return {"pids": v2, "cpu": v2, "io": v2}
    return {"pids": f"/sys/fs/cgroup/pids/{CGROUP_PARENT}/{uid}",
            "cpu": f"/sys/fs/cgroup/cpu/{CGROUP_PARENT}/{uid}",
            "io": f"/sys/fs/cgroup/blkio/{CGROUP_PARENT}/{uid}"}


def read(path):
    with open(path) as f:
        return f.read().strip()


def deploy(node, uid, name, app, files):
    node.vassal(uid, f"{name}.ini", f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/{name}.py\n"
                f"socket = $(HOME)/run/{name}.sock\n", files=[(f"{name}.py", app), *files])


def test_the_init_is_imperium_init_under_seccomp(snode, host_distro, ssh_keys):
    uid = launch(snode, host_distro, ssh_keys)
    init, emperor = running(uid)
    # PID 1 of the container is its own small program, not the node daemon.
    want = os.path.realpath(os.path.join(BIN, "imperium-init"))
    assert os.readlink(f"/proc/{init}/exe") == want
    assert os.readlink(f"/proc/{init}/exe") != os.readlink(f"/proc/{snode.proc.pid}/exe")
    with open(f"/proc/{init}/cmdline") as f:
        argv = f.read().split("\0")
    assert argv[0] == "imperium-init" and argv[4] == "--" and argv[5].endswith("uwsgi"), argv
    st = proc_status(init)
    assert st["Seccomp"] == "2" and proc_status(emperor)["Seccomp"] == "2"
    assert st["NoNewPrivs"] == "1" and int(st["CapEff"], 16) == 0
    assert st["Threads"] == "1"
    # Only the sync socket went through exec, and it is closed by now.
    fds = os.listdir(f"/proc/{init}/fd")
    targets = [os.readlink(f"/proc/{init}/fd/{fd}") for fd in fds]
    assert not any(t.startswith("socket:") for t in targets), targets


def test_a_missing_init_is_a_clear_error(snode, host_distro, ssh_keys):
    snode.stop()
    with open(snode.conf, "a") as f:
        f.write(f"init = {snode.base}/no-such-init\n")
    snode.start()
    uid = snode.new_container()
    snode.post(uid, {"distro": host_distro["id"]})
    snode.post(uid, {"ssh_keys": [ssh_keys[0]]})
    st = snode.wait_status(uid, state="failed")
    assert f"the container init {snode.base}/no-such-init: No such file or directory" \
        in st["last_error"], st
    assert not procs_of_uid(uid)


def test_kernel_attack_surface_is_refused_inside(snode, host_distro, ssh_keys):
    uid = launch(snode, host_distro, ssh_keys)
    deploy(snode, uid, "probeapp", PROBE_APP, [("probe.py", PROBE)])
    path = os.path.join(snode.home(uid), "probe.json")
    wait_for(lambda: os.path.exists(path), 30, "the probe's report", interval=0.1)
    text = read(path)
    r = json.loads(text)
    assert r["unshare_U"][0] != 0 and "Operation not permitted" in r["unshare_U"][1], r
    for name in DENIED:
        assert r[name] == "EPERM", (name, r)
    assert r["clone3"] == "ENOSYS", r  # libc falls back to clone, whose flags are checked
    assert r["ptrace_init"] == "EPERM", r  # the kernel: PID 1 is not dumpable
    assert r["seccomp"] == "2"
    assert r["fork_ok"] == "42"  # plain fork/exec (clone without namespaces) still works


def test_an_ssh_session_is_filtered_and_counted(snode, host_distro, keypairs):
    sshd = Sshd(snode)
    try:
        sshd.start()
        key, pub = keypairs[0]
        uid = launch(snode, host_distro, [pub])
        with open(os.path.join(snode.home(uid), "probe.py"), "w") as f:
            f.write(PROBE)
        r = json.loads(ok(sshd.ssh(key, uid, "python3 ~/probe.py")))
        assert r["unshare_U"][0] != 0, r
        for name in DENIED:
            assert r[name] == "EPERM", (name, r)
        assert r["clone3"] == "ENOSYS" and r["seccomp"] == "2", r
        # The session is in the container's pids cgroup too (the root of its
        # cgroup namespace: elsewhere the path would climb out with "..").
        out = ok(sshd.ssh(key, uid, "cat /proc/self/cgroup"))
        lines = {l.split(":")[1]: l.split(":")[2] for l in out.splitlines()}
        for ctl in ("pids", "memory") if "pids" in lines else ("",):
            assert lines[ctl] == "/", out
    finally:
        sshd.stop()


def test_a_fork_bomb_stops_at_the_pids_limit_and_others_keep_serving(snode, host_distro,
                                                                      ssh_keys):
    dom = unique("calm") + ".org"
    other, _ = snode.api.new_customer()
    add_domain(snode.api, other, dom)
    bomber = launch(snode, host_distro, ssh_keys, i=0)
    calm = launch(snode, host_distro, ssh_keys, auth=other, i=1)
    snode.py_vassal(calm, "calm", dom, tag="calm")
    snode.wait_answer(dom, "python calm")

    # The cgroup files say what the node's config asked for.
    dirs = ctl_dirs(bomber)
    assert int(read(f"{dirs['pids']}/pids.max")) == PIDS_MAX
    if os.path.exists(f"{dirs['cpu']}/cpu.weight"):
        assert int(read(f"{dirs['cpu']}/cpu.weight")) == CPU_WEIGHT
    else:
        assert int(read(f"{dirs['cpu']}/cpu.shares")) == CPU_WEIGHT * 1024 // 100
    io = [f for f in ("io.bfq.weight", "io.weight", "blkio.bfq.weight", "blkio.weight")
          if os.path.exists(f"{dirs['io']}/{f}")]
    if io:  # an I/O scheduler with weights (BFQ or iocost); else the node logged it
        assert read(f"{dirs['io']}/{io[0]}").split()[-1] == str(IO_WEIGHT)
    else:
        assert "containers get no I/O weight" in snode.log()

    deploy(snode, bomber, "bombapp", BOMB_APP, [("bomb.py", BOMB)])
    report = os.path.join(snode.home(bomber), "bomb.json")
    wait_for(lambda: os.path.exists(report), 30, "the fork loop's report", interval=0.1)
    r = json.loads(read(report))
    # fork() failed with EAGAIN, below the limit (init, the Emperor and the
    # vassals hold some of it), and the cgroup is full.
    assert r["error"] == "EAGAIN" and 0 < r["forks"] < PIDS_MAX, r
    assert int(read(f"{dirs['pids']}/pids.current")) >= PIDS_MAX - 2

    # While it spins: the other container answers through the router...
    t0 = time.monotonic()
    got = []
    for _ in range(20):
        try:
            resp = snode.get(dom, timeout=5)
            got.append((resp.status_code, resp.text))
        except requests.RequestException as e:
            got.append((0, str(e)))
    assert all(code == 200 and text.endswith("calm") for code, text in got), got
    assert time.monotonic() - t0 < 10
    # ...and the node follows the API: a key change is on disk within 2 s,
    # and its status report says the bomber still runs.
    keys = os.path.join(snode.home(calm), ".ssh", "uwsgi_authorized_keys")
    snode.api.post(f"/containers/{calm}", auth=other, json={"ssh_keys": [ssh_keys[2]]})
    wait_for(lambda: read(keys) == ssh_keys[2], 2, "the node applying a change during the bomb")
    assert int(read(f"{dirs['pids']}/pids.current")) >= PIDS_MAX - 2  # still spinning
    snode.wait_status(bomber, state="running")

    # Stopping the container removes every one of its cgroups.
    snode.post(bomber, {"ssh_keys": []})
    wait_for(lambda: not procs_of_uid(bomber), 15, "the bomber stopped")
    wait_for(lambda: not any(os.path.exists(d) for d in dirs.values()), 5,
             "the pids, cpu and blkio cgroups removed")
    assert not any(os.path.exists(d) for d in cgroup_dirs(bomber))
