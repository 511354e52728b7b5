"""The container runtime of imperium-node (src/runtime/), driven through its debug
CLI with the `host` distro (the node's own root, read-only).

Runs as root.  Every test gets its own node directory (state + homes) and a
random container uid, and cleans up even when it fails: containers stopped,
stray processes killed, cgroups removed; the fixture then checks that no
mount leaked onto the host."""

import base64
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT
from helpers import SANITIZER_MARKERS, mount_lines, proc_status, procs_of_uid, wait_for
# BASE is not under /tmp: inside, /tmp is the home's tmp/, which would hide
# the node directory anyway and make the "not visible" checks meaningless.
from nodeutil import (BASE, NEEDS_CONTAINERS, NODE, PROBE_REPORT, PROBE_START, MiB, leaked_mounts,
                      run_probe, subreaping)

SHORTCUTS = os.path.join(ROOT, "etc", "uwsgi", "shortcuts.ini")
# Not the daemon's (nodeutil.CGROUP_PARENT): these containers are the CLI's.
CGROUP_PARENT = f"imperium-e2e-{os.getpid()}"

pytestmark = NEEDS_CONTAINERS

PROBE = '\n' + PROBE_START + r'''def mount_opts(target):
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        if f[4] == target:
            opts = f[5]
    return opts
status = dict(l.split(":", 1) for l in open("/proc/self/status"))
out = {
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "id_u": subprocess.check_output(["id", "-u"]).decode().strip(),
    "hostname": socket.gethostname(),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "init_comm": open("/proc/1/comm").read().strip(),
    "limit": open("/run/cgroup/memory.limit_in_bytes").read().strip(),
    "usage": open("/run/cgroup/memory.usage_in_bytes").read().strip(),
    "write_usr": attempt(lambda: open("/usr/imperium-probe", "w")),
    "write_root": attempt(lambda: open("/imperium-probe", "w")),
    "write_limit": attempt(lambda: open("/run/cgroup/memory.limit_in_bytes", "w")),
    "write_home": attempt(lambda: open(home + "/probe-write", "w").write("x")),
    "write_tmp": attempt(lambda: open("/tmp/probe-tmp", "w").write("x")),
    "write_usr_local": attempt(lambda: open("/usr/local/probe-usr-local", "w").write("x")),
    "write_var_log": attempt(lambda: open("/var/log/probe-log", "w").write("x")),
    "root_opts": mount_opts("/"),
    "containers": sorted(os.listdir("/containers")),
    "visible": {p: os.path.exists(p) for p in HIDDEN},
    "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "cwd": os.getcwd(), "home": home,
    "dev": sorted(os.listdir("/dev")),
    "sys": os.listdir("/sys"),
    "net": sorted(l.split(":")[0].strip() for l in list(open("/proc/net/dev"))[2:]),
}
''' + PROBE_REPORT


def ssh_key(comment="test"):
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def pids_of_uid(uid):
    return list(procs_of_uid(uid))


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def cgroup_parents():
    return [f"/sys/fs/cgroup/{c}/{CGROUP_PARENT}" for c in ("memory", "pids", "cpu", "blkio")] + [
        f"/sys/fs/cgroup/{CGROUP_PARENT}"]


@pytest.fixture(scope="module", autouse=True)
def cli_subreaper():
    """Containers outlive the CLI that starts them; make this process their
    reaper (instead of the host's PID 1) so no zombie is left behind.  The
    tests reap their inits themselves (Node.reap)."""
    with subreaping(cgroup_parents(), reap=False):
        yield


class Node:
    def __init__(self, base):
        self.base = base
        self.state = os.path.join(base, "state")
        self.containers = os.path.join(base, "containers")
        self.uids = []
        self.pids = set()

    def new_uid(self):
        while True:
            uid = 30000 + random.randint(5000, 9000)
            if uid not in self.uids and not pids_of_uid(uid) and not any(
                    os.path.exists(f"{d}/{uid}") for d in cgroup_parents()):
                self.uids.append(uid)
                return uid

    def home(self, uid):
        return os.path.join(self.containers, str(uid))

    def run(self, *args, expect=0):
        p = subprocess.run([NODE, *args], capture_output=True, text=True, timeout=60)
        for marker in SANITIZER_MARKERS:
            assert marker not in p.stderr, p.stderr
        if expect is not None:
            assert p.returncode == expect, (args, p.returncode, p.stdout, p.stderr)
        return p

    def spec(self, uid, **over):
        spec = {"uid": uid, "hostname": f"box{uid}", "memory": 192, "rootfs": "host",
                "ssh_keys": [ssh_key("one")],
                "rsa_key": "-----BEGIN PRIVATE KEY-----\nMIIfake\n-----END PRIVATE KEY-----\n",
                "rsa_pubkey": "-----BEGIN PUBLIC KEY-----\nMIIfake\n-----END PUBLIC KEY-----\n",
                "etc_hosts": "127.0.0.1 localhost\n", "etc_resolv_conf": "nameserver 10.0.0.1\n",
                "generation": 1, "ssh_generation": 1}
        spec.update(over)
        path = os.path.join(self.base, f"spec-{uid}.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        return path

    def start(self, uid, expect=0, extra=(), **over):
        p = self.run("container", "start", "--spec", self.spec(uid, **over), "--state-dir",
                     self.state, "--containers-dir", self.containers, "--shortcuts",
                     SHORTCUTS, "--cgroup-parent", CGROUP_PARENT, *extra, expect=expect)
        if p.returncode == 0:
            st = json.loads(p.stdout)
            self.pids.add(st["pid"])
            return st
        return p

    def status(self, uid):
        return json.loads(self.run("container", "status", str(uid), "--state-dir",
                                   self.state).stdout)

    def stop(self, uid, timeout=10, expect=0):
        return self.run("container", "stop", str(uid), "--state-dir", self.state,
                        "--timeout", str(timeout), expect=expect)

    def reap(self):
        for pid in list(self.pids):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    self.pids.discard(pid)
            except ChildProcessError:
                self.pids.discard(pid)

    def cleanup(self):
        for uid in self.uids:
            self.run("container", "stop", str(uid), "--state-dir", self.state, "--timeout",
                     "3", expect=None)
            for pid in pids_of_uid(uid):  # should be none: belt and braces
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for d in cgroup_parents():
                if os.path.isdir(f"{d}/{uid}"):
                    with open(f"{d}/{uid}/cgroup.procs") as f:
                        for pid in f.read().split():
                            os.kill(int(pid), signal.SIGKILL)
                    wait_for(lambda: not open(f"{d}/{uid}/cgroup.procs").read(), 5)
                    os.rmdir(f"{d}/{uid}")
        time.sleep(0.1)
        self.reap()


@pytest.fixture
def node():
    os.makedirs(BASE, exist_ok=True)
    base = tempfile.mkdtemp(prefix="node-", dir=BASE)
    before = mount_lines()
    n = Node(base)
    try:
        yield n
    finally:
        try:
            n.cleanup()
        finally:
            shutil.rmtree(base, ignore_errors=True)
        leaked = leaked_mounts(before, base)
        assert not leaked, leaked


def deploy_probe(node, uid, hidden=()):
    return run_probe(node.home(uid), uid, f"HIDDEN = {list(hidden)!r}\n" + PROBE)


def emperor_of(init_pid):
    kids = wait_for(lambda: children(init_pid), 5, what="the Emperor")
    assert len(kids) == 1, kids
    return kids[0]


def test_container_runs_the_emperor_isolated(node):
    uid = node.new_uid()
    st = node.start(uid)
    assert st["state"] == "running" and st["uid"] == uid and st["restarts"] == 0
    init = st["pid"]
    emperor = emperor_of(init)

    # The Emperor (and init) run as uid/gid 30000+id with no capabilities.
    for pid in (init, emperor):
        s = proc_status(pid)
        assert s["Uid"].split() == [str(uid)] * 4
        assert s["Gid"].split() == [str(uid)] * 4
        assert s["Groups"] == ""
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(s[cap], 16) == 0, (pid, cap, s[cap])
        assert s["NoNewPrivs"] == "1"

    # Namespaces differ from the host's.
    for ns in ("mnt", "pid", "uts", "ipc", "net"):
        assert os.readlink(f"/proc/{emperor}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns

    # The memory cgroup, seen from the host.
    cg = st["cgroup"]
    assert cg.endswith(f"/{CGROUP_PARENT}/{uid}")
    limit_file = "memory.max" if os.path.exists(f"{cg}/memory.max") else "memory.limit_in_bytes"
    with open(f"{cg}/{limit_file}") as f:
        assert int(f.read()) == 192 * MiB
    with open(f"{cg}/cgroup.procs") as f:
        assert emperor in [int(x) for x in f.read().split()]

    # The Emperor's command line.
    with open(f"/proc/{emperor}/cmdline") as f:
        argv = f.read().split("\0")
    home_in = f"/containers/{uid}"
    assert argv[argv.index("--emperor") + 1] == f"{home_in}/vassals"
    assert argv[argv.index("--logto") + 1] == f"{home_in}/logs/emperor.log"
    assert argv[argv.index("--log-maxsize") + 1] == "104857600"
    assert argv[argv.index("--log-backupname") + 1] == f"{home_in}/logs/emperor.log.1"
    # Both files come before each vassal: plugins load, and custom options
    # (declare-option2) exist, by the time the vassal's own lines are read.
    includes = [argv[i + 1] for i, a in enumerate(argv) if a == "--vassals-include-before"]
    assert includes == ["/run/imperium/platform.ini", "/run/imperium/shortcuts.ini"]

    # The home layout, owned by the uid.
    home = node.home(uid)
    for d in ("vassals", "logs", "etc", ".ssh", "run", "tmp", "distros"):
        s = os.lstat(os.path.join(home, d))
        assert (s.st_uid, s.st_gid) == (uid, uid), d
    etc = os.path.join(home, "etc")
    assert open(os.path.join(etc, "hostname")).read() == f"box{uid}\n"
    assert open(os.path.join(etc, "resolv.conf")).read() == "nameserver 10.0.0.1\n"
    assert "MIIfake" in open(os.path.join(etc, "uwsgi.key")).read()
    assert os.stat(os.path.join(etc, "uwsgi.key")).st_mode & 0o777 == 0o600
    assert "PUBLIC KEY" in open(os.path.join(etc, "uwsgi.pubkey")).read()
    keys = open(os.path.join(home, ".ssh", "uwsgi_authorized_keys")).read()
    assert keys.startswith("ssh-ed25519 ") and keys.endswith(" one\n")

    # Another customer's home on this node (not started).
    other = node.new_uid()
    os.makedirs(os.path.join(node.home(other), "secret"))
    hidden = [node.home(other), os.path.join(node.home(other), "secret"),
              f"/containers/{other}", home, os.path.join(node.state, str(uid))]

    # A vassal dropped into vassals/ runs inside, with `plugin = 0:python`.
    r = deploy_probe(node, uid, hidden=hidden)
    assert r["uid"] == uid and r["gid"] == uid and r["id_u"] == str(uid)
    assert r["hostname"] == f"box{uid}"
    assert r["init_comm"] == "imperium-init"
    assert 1 in r["pids"] and len(r["pids"]) < 12, r["pids"]
    assert os.getpid() not in r["pids"] and emperor not in r["pids"]
    assert r["limit"] == str(192 * MiB) and int(r["usage"]) > 0
    assert r["write_usr"] == "EROFS" and r["write_root"] == "EROFS"
    assert r["write_limit"] in ("EROFS", "EACCES")
    assert "ro" in r["root_opts"].split(",")
    assert r["write_home"] == r["write_tmp"] == r["write_usr_local"] == r["write_var_log"] == "ok"
    assert os.path.exists(os.path.join(home, "tmp", "probe-tmp"))  # /tmp is home/tmp
    assert os.path.exists(os.path.join(home, "probe-usr-local"))  # /usr/local is the home
    assert os.path.exists(os.path.join(home, "logs", "probe-log"))  # /var/log is logs/
    assert r["containers"] == [str(uid)]
    # Nothing of other homes or of the node's directories shows through.
    assert r["visible"] == {p: False for p in hidden}, r["visible"]
    assert r["cap_eff"] == "0000000000000000" and r["cap_bnd"] == "0000000000000000"
    assert r["no_new_privs"] == "1"
    assert r["cwd"].startswith(home_in)
    assert r["home"] == home_in
    assert {"null", "zero", "urandom", "pts", "shm", "tty"} <= set(r["dev"])
    assert r["sys"] == []
    assert r["net"] == ["lo"]

    log = open(os.path.join(home, "logs", "emperor.log")).read()
    assert "*** starting uWSGI Emperor ***" in log
    assert "[emperor] vassal probe.ini has been spawned" in log


def test_containers_do_not_see_each_other(node):
    a, b = node.new_uid(), node.new_uid()
    sa, sb = node.start(a), node.start(b)
    assert sa["pid"] != sb["pid"]
    ra = deploy_probe(node, a, hidden=[node.home(b), f"/containers/{b}"])
    rb = deploy_probe(node, b, hidden=[node.home(a), f"/containers/{a}"])
    assert ra["containers"] == [str(a)] and rb["containers"] == [str(b)]
    assert not any(ra["visible"].values()) and not any(rb["visible"].values())
    assert ra["hostname"] == f"box{a}" and rb["hostname"] == f"box{b}"
    # Each sees only its own few processes: pid 1 is its own init.
    assert len(ra["pids"]) < 12 and len(rb["pids"]) < 12
    for ns in ("mnt", "pid", "uts", "ipc", "net"):
        assert os.readlink(f"/proc/{sa['pid']}/ns/{ns}") != os.readlink(f"/proc/{sb['pid']}/ns/{ns}")


def test_stop_stops_everything_and_keeps_the_home(node):
    uid = node.new_uid()
    st = node.start(uid)
    deploy_probe(node, uid)
    assert len(pids_of_uid(uid)) >= 4  # init, master, Emperor, the vassal
    node.stop(uid)
    assert pids_of_uid(uid) == []
    assert not os.path.exists(st["cgroup"])
    home = node.home(uid)
    assert os.path.exists(os.path.join(home, "probe.json"))
    assert os.path.exists(os.path.join(home, "vassals", "probe.ini"))
    assert "goodbye to uWSGI" in open(os.path.join(home, "logs", "emperor.log")).read()
    after = node.status(uid)
    assert after["state"] == "stopped" and after["pid"] is None
    assert after["since"] >= st["since"]
    node.stop(uid)  # stopping a stopped container is fine
    node.reap()


def test_kill_9_of_init_then_start_again(node):
    uid = node.new_uid()
    st = node.start(uid)
    deploy_probe(node, uid)
    os.kill(st["pid"], signal.SIGKILL)
    # The kernel takes the whole pid namespace down with its init.
    wait_for(lambda: node.status(uid)["state"] == "stopped", 10, what="stopped")
    wait_for(lambda: not pids_of_uid(uid), 10, what="no process left")
    node.reap()
    again = node.start(uid)
    assert again["state"] == "running" and again["pid"] != st["pid"]
    assert again["restarts"] == 1
    emperor_of(again["pid"])
    os.remove(os.path.join(node.home(uid), "probe.json"))
    r = deploy_probe(node, uid)  # the vassal is still there and runs again
    assert r["uid"] == uid


def test_start_while_running_is_refused(node):
    uid = node.new_uid()
    st = node.start(uid)
    p = node.start(uid, expect=1)
    assert "already running" in p.stderr and str(st["pid"]) in p.stderr
    assert node.status(uid)["pid"] == st["pid"]


def test_adoption_after_the_cli_exited(node):
    uid = node.new_uid()
    st = node.start(uid)
    # The CLI that started it is gone; the container is not its child.
    assert proc_status(st["pid"])["PPid"] != "0"
    for _ in range(2):
        again = node.status(uid)
        assert again["state"] == "running" and again["pid"] == st["pid"]
        assert again["since"] == st["since"] and again["generation"] == 1


def test_missing_distro_fails_clearly(node):
    uid = node.new_uid()
    missing = os.path.join(node.base, "distros", "nope")
    p = node.start(uid, expect=1, rootfs=missing)
    assert f"distro directory {missing} missing" in p.stderr
    st = node.status(uid)
    assert st["state"] == "failed" and missing in st["last_error"] and st["pid"] is None
    assert not pids_of_uid(uid)
    assert not any(os.path.exists(f"{d}/{uid}") for d in cgroup_parents())


def test_a_failing_step_inside_is_reported(node):
    uid = node.new_uid()
    p = node.start(uid, expect=1, extra=("--uwsgi", "/nonexistent/uwsgi"))
    assert "exec the Emperor /nonexistent/uwsgi: No such file or directory" in p.stderr
    st = node.status(uid)
    assert st["state"] == "failed" and "/nonexistent/uwsgi" in st["last_error"]
    assert not pids_of_uid(uid)
    assert not any(os.path.exists(f"{d}/{uid}") for d in cgroup_parents())
    node.reap()
    # The error is cleared by the next good start.
    ok = node.start(uid)
    assert ok["state"] == "running" and ok["last_error"] is None


def test_keys_rewrite_does_not_restart(node):
    uid = node.new_uid()
    st = node.start(uid)
    # The third is how an API before the authorized_keys options stored two
    # keys pasted on one line (one key, the other its comment): the node
    # still writes it, as sshd reads it.
    keys = [ssh_key("two"), ssh_key("three"), ssh_key("four") + " " + ssh_key("five")]
    spec = node.spec(uid, ssh_keys=keys, ssh_generation=2)
    node.run("container", "keys", "--spec", spec, "--state-dir", node.state,
             "--containers-dir", node.containers)
    path = os.path.join(node.home(uid), ".ssh", "uwsgi_authorized_keys")
    assert open(path).read() == "".join(k + "\n" for k in keys)
    s = os.stat(path)
    assert (s.st_uid, s.st_mode & 0o777) == (uid, 0o600)
    after = node.status(uid)
    assert after["pid"] == st["pid"] and after["state"] == "running"
    assert after["ssh_generation"] == 2 and after["restarts"] == 0
    # An invalid key is refused and the file is left as it was.
    bad = node.spec(uid, ssh_keys=["ssh-ed25519 AAAA\nevil"])
    p = node.run("container", "keys", "--spec", bad, "--state-dir", node.state,
                 "--containers-dir", node.containers, expect=1)
    assert "ssh key 1" in p.stderr
    assert open(path).read() == "".join(k + "\n" for k in keys)


def test_symlinks_planted_in_the_home_are_not_followed(node):
    uid = node.new_uid()
    home = node.home(uid)
    victim = os.path.join(node.base, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.makedirs(os.path.join(home, "etc"))
    os.makedirs(os.path.join(home, ".ssh"))
    os.symlink(victim, os.path.join(home, "etc", "uwsgi.key"))
    os.symlink(victim, os.path.join(home, ".ssh", "uwsgi_authorized_keys"))
    with open(os.path.join(home, "mine.txt"), "w") as f:
        f.write("customer data\n")
    node.start(uid)
    assert open(victim).read() == "precious\n"
    assert not os.path.islink(os.path.join(home, "etc", "uwsgi.key"))
    assert "MIIfake" in open(os.path.join(home, "etc", "uwsgi.key")).read()
    assert not os.path.islink(os.path.join(home, ".ssh", "uwsgi_authorized_keys"))
    assert open(os.path.join(home, "mine.txt")).read() == "customer data\n"
    node.stop(uid, timeout=3)
    node.reap()
    # A directory the node mounts must be a real one: logs -> / is refused.
    shutil.rmtree(os.path.join(home, "logs"))
    os.symlink("/", os.path.join(home, "logs"))
    p = node.start(uid, expect=1)
    assert "logs is not a directory (a symbolic link)" in p.stderr
    assert node.status(uid)["state"] == "failed"


def test_memory_limit_is_enforced_inside_only(node):
    uid = node.new_uid()
    st = node.start(uid, memory=64)
    home = node.home(uid)
    with open(os.path.join(home, "hog.py"), "w") as f:
        f.write("import os\nh = os.environ['HOME']\nopen(h + '/hog.start', 'w').close()\n"
                "x = bytearray(256 * 1024 * 1024)\nopen(h + '/hog.done', 'w').close()\n")
    with open(os.path.join(home, "vassals", "hog.ini"), "w") as f:
        f.write("[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/hog.py\n"
                "socket = $(HOME)/run/hog.sock\n")
    wait_for(lambda: os.path.exists(os.path.join(home, "hog.start")), 30, what="the hog")
    cg = st["cgroup"]
    if os.path.exists(f"{cg}/memory.events"):
        def ooms():
            return int(dict(l.split() for l in open(f"{cg}/memory.events"))["oom_kill"])
    else:
        def ooms():
            return int(dict(l.split() for l in open(f"{cg}/memory.oom_control")).get(
                "oom_kill", open(f"{cg}/memory.failcnt").read()))
    wait_for(lambda: ooms() > 0, 20, what="an OOM kill in the container's cgroup")
    assert not os.path.exists(os.path.join(home, "hog.done"))
    assert node.status(uid)["state"] == "running"  # init and the Emperor survive


def test_init_reaps_orphans_and_exits_with_the_emperor(node):
    uid = node.new_uid()
    st = node.start(uid)
    init = st["pid"]
    home = node.home(uid)
    # Orphans: the shell exits at once, its background sleeps are reparented
    # to the container's PID 1 and die a moment later.
    with open(os.path.join(home, "orphans.py"), "w") as f:
        f.write("import os, subprocess\n"
                "subprocess.run(['sh', '-c', 'for i in 1 2 3 4 5; do sleep 0.3 & done'])\n"
                "open(os.environ['HOME'] + '/orphans.done', 'w').close()\n"
                "def application(e, s):\n    s('200 OK', [])\n    return [b'']\n")
    with open(os.path.join(home, "vassals", "orphans.ini"), "w") as f:
        f.write("[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/orphans.py\n"
                "socket = $(HOME)/run/orphans.sock\n")
    wait_for(lambda: os.path.exists(os.path.join(home, "orphans.done")), 30, what="orphans")
    time.sleep(1.5)

    def states():
        with open(f"{st['cgroup']}/cgroup.procs") as f:
            pids = f.read().split()
        out = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    out.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                pass
        return out
    assert "Z" not in states(), states()

    # The Emperor dies: init exits with its status, taking the rest along.
    emperor = emperor_of(init)
    os.kill(emperor, signal.SIGKILL)
    _, status = os.waitpid(init, 0)  # we are the reaper of orphaned inits
    node.pids.discard(init)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 128 + signal.SIGKILL
    assert node.status(uid)["state"] == "stopped"
    wait_for(lambda: not pids_of_uid(uid), 10, what="no process left")
