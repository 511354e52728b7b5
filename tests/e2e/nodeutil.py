"""The node of the end-to-end tests: an imperium-node daemon with a server of
its own in a real imperium-api (Node), the same with the HTTP router
(RouterNode), and the host's view of its containers (inits, Emperors,
cgroups, mounts).  Fixtures built on these live in conftest.py.

Every node has its own directory under build/e2e-node/ (not /tmp: inside a
container /tmp is the home's tmp/)."""

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from helpers import (BIN, ROOT, SANITIZER_MARKERS, Netns, Relay, free_port, in_netns,  # noqa: F401
                     mount_lines, proc_status, procs_of_uid, reap_orphans, socket_in_netns,
                     stop_proc, sweep_stale_netns, unique, wait_for)

NODE = os.path.join(BIN, "imperium-node")
BASE = os.path.join(ROOT, "build", "e2e-node")
CGROUP_PARENT = f"imperium-e2e-daemon-{os.getpid()}"
MiB = 1024 * 1024
PR_SET_CHILD_SUBREAPER = 36

# pytestmark of the modules that start containers.
NEEDS_CONTAINERS = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root"),
    pytest.mark.skipif(not os.path.exists("/usr/lib/uwsgi/plugins/python3_plugin.so"),
                       reason="needs uwsgi-core and uwsgi-plugin-python3"),
]

# The start of a probe vassal (attempt(fn): "ok" or the errno's name), its end
# (its out, written atomically) and its vassal file.
PROBE_START = r'''import errno, json, os, socket, subprocess
home = os.environ["HOME"]
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
'''
PROBE_REPORT = r'''tmp = os.path.join(home, ".probe.json.tmp")
open(tmp, "w").write(json.dumps(out))
os.rename(tmp, os.path.join(home, "probe.json"))

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"probe"]
'''

VASSAL = """[uwsgi]
plugin = 0:python
wsgi-file = $(HOME)/probe.py
socket = $(HOME)/run/probe.sock
"""

# A vassal reporting, from inside, what a customer's process can see and do.
PROBE = '\n' + PROBE_START + r'''def comm(p):
    try:
        return open("/proc/%s/comm" % p).read().strip()
    except OSError:
        return "?"
root_opts = [l.split()[5] for l in open("/proc/self/mountinfo") if l.split()[4] == "/"][-1]
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out = {
    "uid": os.getuid(), "gid": os.getgid(),
    "id_u": subprocess.check_output(["id", "-u"]).decode().strip(),
    "hostname": socket.gethostname(),
    "pids": pids, "comms": sorted(set(comm(p) for p in pids)),
    "write_usr": attempt(lambda: open("/usr/imperium-probe", "w")),
    "write_root": attempt(lambda: open("/imperium-probe", "w")),
    "write_home": attempt(lambda: open(home + "/probe-write", "w").write("x")),
    "root_opts": root_opts,
    "containers": sorted(os.listdir("/containers")),
    "other": {p: attempt(lambda: os.listdir(p)) for p in OTHER},
    "other_files": {p: attempt(lambda: open(p).read()) for p in OTHER_FILES},
}
''' + PROBE_REPORT

PY_APP = '''def application(environ, start_response):
    start_response('200 OK', [('Content-Type','text/plain')])
    return [b"Hello i am python %s" % NAME.encode()]
'''


# ---- the host's view ----------------------------------------------------------

def init_of(uid):
    """The pid of the container's live init, or None.  (For a moment the
    Emperor is a fork of init, not exec'd yet, named like it.)"""
    procs = procs_of_uid(uid, ppids=True)
    inits = [p for p, (name, ppid) in procs.items()
             if name == "imperium-init" and ppid not in procs]
    assert len(inits) <= 1, inits
    return inits[0] if inits else None


def emperor_of(init):
    """The init's uwsgi child (the Emperor), or None."""
    try:
        with open(f"/proc/{init}/task/{init}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return None
    for k in kids:
        try:
            if proc_status(k)["Name"].startswith("uwsgi"):
                return k
        except FileNotFoundError:
            pass
    return None


def running(uid):
    """(init, emperor) once the container's Emperor runs, else None."""
    init = init_of(uid)
    emperor = emperor_of(init) if init else None
    return (init, emperor) if emperor else None


def cgroup_dirs(uid):
    return [f"/sys/fs/cgroup/memory/{CGROUP_PARENT}/{uid}", f"/sys/fs/cgroup/{CGROUP_PARENT}/{uid}"]


def memory_limit(uid):
    for d in cgroup_dirs(uid):
        for name in ("memory.limit_in_bytes", "memory.max"):
            if os.path.exists(f"{d}/{name}"):
                with open(f"{d}/{name}") as f:
                    return int(f.read()), d
    return None, None



def run_probe(home, uid, code):
    """Drop code in as the probe vassal of container uid (whose home is
    home) and return the report it writes (PROBE_REPORT)."""
    path = os.path.join(home, "probe.json")
    if os.path.exists(path):
        os.remove(path)
    with open(os.path.join(home, "probe.py"), "w") as f:
        f.write(code)
    tmp = os.path.join(home, "vassals", ".probe.ini.tmp")
    with open(tmp, "w") as f:
        f.write(VASSAL)
    os.chown(tmp, uid, uid)
    os.rename(tmp, os.path.join(home, "vassals", "probe.ini"))
    wait_for(lambda: os.path.exists(path), 30, "the probe vassal's report", interval=0.1)
    with open(path) as f:
        return json.load(f)


def new_base(prefix):
    """A node directory of its own under BASE, traversable by anyone: what
    keeps another home out of reach must be the node, not this mode."""
    os.makedirs(BASE, exist_ok=True)
    base = tempfile.mkdtemp(prefix=prefix, dir=BASE)
    os.chmod(base, 0o755)
    return base


def leaked_mounts(before, base):
    """The mounts of a node's containers left on the host since before."""
    return [line for line in mount_lines() - before
            if base in line or " /containers" in line or " - tmpfs none " in line
            or " - proc none " in line or " - devpts none " in line]


@contextlib.contextmanager
def subreaping(cgroup_roots, reap=True):
    """Like PID 1 on a real node: adopt the inits a stopped daemon (or the
    CLI) leaves behind and, with reap, reap them when they die; at the end
    remove the (then empty) cgroup_roots."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    done = threading.Event()

    def reaper():
        while not done.wait(0.05):
            reap_orphans()

    t = threading.Thread(target=reaper, daemon=True)
    if reap:
        t.start()
    yield
    if reap:
        done.set()
        t.join()
        reap_orphans()
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    for d in cgroup_roots:
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass


# ---- a node: its directory, its server in the API, its daemon ---------------------

class Node:
    """A node daemon in this (the host's) network namespace, so with
    `network = off`: its containers have only lo (NetNode networks them)."""
    # Prepended to every imperium-node command (NetNode: nsenter into its netns).
    wrap = ()

    def __init__(self, api, base, host_ok=True, server_fields=None):
        self.api = api
        self.base = base
        self.state = os.path.join(base, "state")
        self.containers = os.path.join(base, "containers")
        self.conf = os.path.join(base, "node.conf")
        self.logpath = os.path.join(base, "node.log")
        self.proc = None
        self.uids = []
        self.auth, _ = api.new_customer()
        # The customer owns the server, so it may change memory itself.
        self.server = api.new_server(owner=self.auth[0], **(server_fields or {}))
        with open(self.conf, "w") as f:
            f.write(f"# imperium-node for {self.server['name']}\n"
                    f"api_url = {api.base}\n"
                    f"server_name = {self.server['name']}\n"
                    f"secret = {self.server['node_secret']}\n"
                    f"state_dir = {self.state}\n"
                    f"containers_dir = {self.containers}\n"
                    f"shortcuts = {ROOT}/etc/uwsgi/shortcuts.ini\n"
                    f"cgroup_parent = {CGROUP_PARENT}\n"
                    f"distro_host_ok = {'true' if host_ok else 'false'}\n"
                    f"log_level = debug\n"
                    f"network = {'on' if self.wrap else 'off'}\n")

    # -- the daemon --
    def start(self):
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        offset = len(self.log())
        with open(self.logpath, "a") as log:
            self.proc = subprocess.Popen([*self.wrap, NODE, "run", "--config", self.conf],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: "node state received" in self.log()[offset:] or self.proc.poll(), 20,
                 "the daemon's first state")
        assert self.proc.poll() is None, self.log()

    def start_from_saved(self, state):
        """Start the daemon with `state` as its saved desired state and an API
        that does not answer: it follows that state 2 s later (agent.c)."""
        os.makedirs(self.state, mode=0o700, exist_ok=True)
        with open(os.path.join(self.state, "desired.json"), "w") as f:
            json.dump(state, f)
        with open(self.conf) as f:
            conf = f.read()
        with open(self.conf, "w") as f:
            f.write(conf.replace(self.api.base, f"http://127.0.0.1:{free_port()}"))
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        with open(self.logpath, "a") as log:
            self.proc = subprocess.Popen([*self.wrap, NODE, "run", "--config", self.conf],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self, again=False):
        """SIGTERM: the daemon exits cleanly, leaving the containers running.
        again: SIGTERM every 2 ms until it is gone (an impatient operator, or
        a second stop while it shuts down): still the clean exit."""
        if not self.proc or self.proc.poll() is not None:
            return
        deadline = time.monotonic() + 20
        while again and self.proc.poll() is None and time.monotonic() < deadline:
            self.proc.send_signal(signal.SIGTERM)
            time.sleep(0.002)
        if not stop_proc(self.proc):
            pytest.fail("imperium-node did not stop on SIGTERM:\n" + self.log()[-3000:])
        self.check_log()
        assert self.proc.returncode == 0, self.log()[-3000:]

    def log(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def check_log(self):
        log = self.log()
        for marker in SANITIZER_MARKERS:
            assert marker not in log, "sanitizer report in imperium-node log:\n" + log[-6000:]

    def run(self, *args):
        p = subprocess.run([*self.wrap, NODE, *args], capture_output=True, text=True,
                           timeout=120)
        for marker in SANITIZER_MARKERS:
            assert marker not in p.stderr, p.stderr
        return p

    # -- containers, through the API as a customer does --
    def new_container(self, memory=256):
        uid = self.api.new_container(self.auth[0], self.server["name"], name=unique("box"),
                                     memory=memory)
        assert not procs_of_uid(uid), f"leftover processes of uid {uid}"
        self.uids.append(uid)
        return uid

    def post(self, uid, body, expect=200):
        r = self.api.post(f"/containers/{uid}", auth=self.auth, json=body)
        assert r.status_code == expect, r.text
        return time.monotonic()

    def container(self, uid):
        r = self.api.get(f"/containers/{uid}", auth=self.auth)
        assert r.status_code == 200, r.text
        return r.json()

    def status(self, uid):
        return self.container(uid)["status"]

    def wait_status(self, uid, timeout=5, **want):
        def ok():
            st = self.status(uid)
            return st if all(st.get(k) == v for k, v in want.items()) else None
        try:
            return wait_for(ok, timeout, f"status {want}", interval=0.1)
        except AssertionError:
            raise AssertionError(f"status of {uid} is {self.status(uid)}, not {want}")

    def home(self, uid):
        return os.path.join(self.containers, str(uid))

    def launch(self, uid, distro, key):
        """distro, then ssh_keys: running within 1 s of the second call."""
        self.post(uid, {"distro": distro["id"]})
        t = self.post(uid, {"ssh_keys": [key]})
        got = wait_for(lambda: running(uid), 1.0 + 0.02, "the Emperor within 1 s")
        assert time.monotonic() - t <= 1.0 + 0.05
        return got

    def deploy_probe(self, uid, other=(), other_files=()):
        return run_probe(self.home(uid), uid, f"OTHER = {list(other)!r}\n"
                         f"OTHER_FILES = {list(other_files)!r}\n" + PROBE)

    # -- cleanup --
    def cleanup(self):
        try:
            self.stop()
        finally:
            p = self.run("stop-all", "--config", self.conf)
            for uid in self.uids:
                for pid in procs_of_uid(uid):  # should be none: belt and braces
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                for d in cgroup_dirs(uid):
                    if os.path.isdir(d):
                        with open(f"{d}/cgroup.procs") as f:
                            for pid in f.read().split():
                                os.kill(int(pid), signal.SIGKILL)
                        wait_for(lambda: not open(f"{d}/cgroup.procs").read(), 5, "empty cgroup")
                        os.rmdir(d)
            time.sleep(0.1)
            reap_orphans()
            assert p.returncode == 0, p.stderr


class RouterNode(Node):
    """A Node whose daemon also runs the HTTP router on 127.0.0.1:port."""

    def __init__(self, api, base, port=None):
        super().__init__(api, base)
        self.port = port or free_port()
        with open(self.conf, "a") as f:
            f.write(f"router_http = 127.0.0.1:{self.port}\n")

    def get(self, host, timeout=5):
        return requests.get(f"http://127.0.0.1:{self.port}/", headers={"Host": host},
                            timeout=timeout)

    def router_log(self):
        try:
            return open(os.path.join(self.state, "router", "router.log"), errors="replace").read()
        except FileNotFoundError:
            return ""

    def print_logs(self):
        """The tails of the router's and each container's Emperor's logs
        (pytest shows them for a failed test)."""
        print(self.router_log()[-3000:])
        for uid in self.uids:
            try:
                print(open(os.path.join(self.home(uid), "logs", "emperor.log"),
                           errors="replace").read()[-3000:])
            except OSError:
                pass

    def subscriptions(self):
        """{key: [node addresses]} from the http router's stats socket."""
        s = socket.socket(socket.AF_UNIX)
        s.connect(os.path.join(self.state, "router", "run", "router-stats.sock"))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        stats = json.loads(data)
        return {sub["key"]: [n["name"] for n in sub["nodes"]]
                for sub in stats.get("subscriptions", [])}

    def sockets(self, uid):
        """The container's run/ as the node keeps it (mounted on the home's
        run/ inside the container, the router's /containers/<uid>/run)."""
        return os.path.join(self.state, "router", "homes", str(uid), "run")

    def vassal(self, uid, name, text, files=()):
        home = self.home(uid)
        for fname, content in files:
            with open(os.path.join(home, fname), "w") as f:
                f.write(content)
        tmp = os.path.join(home, "vassals", f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.chown(tmp, uid, uid)
        os.rename(tmp, os.path.join(home, "vassals", name))

    def py_vassal(self, uid, name, domain, tag=None):
        tag = tag or name
        self.vassal(uid, f"{name}.ini",
                    f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/{name}.py\n"
                    f"domain = {domain}\n",
                    files=[(f"{name}.py", f"NAME = {tag!r}\n" + PY_APP)])

    def answers(self, host, n=30):
        out = []
        for _ in range(n):
            try:
                r = self.get(host)
                out.append((r.status_code, r.text))
            except requests.RequestException as e:
                out.append((0, str(e)))
        return out

    def wait_answer(self, host, text, timeout=30):
        def ok():
            try:
                r = self.get(host, timeout=2)
                return r.status_code == 200 and text in r.text
            except requests.RequestException:
                return False
        wait_for(ok, timeout, f"{text!r} on {host}", interval=0.1)

    def router_pid(self):
        with open(os.path.join(self.state, "router", "router.pid")) as f:
            return int(f.read().split()[0])

    def router_pids(self):
        """The router's master and every process below it."""
        pids, parents = [], {}
        for d in os.listdir("/proc"):
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (ValueError, OSError):
                pass
        todo = [self.router_pid()]
        while todo:
            p = todo.pop()
            pids.append(p)
            todo += [c for c, pp in parents.items() if pp == p]
        return pids


def add_domain(api, auth, name):
    # As the supplier (no DNS TXT check), for the customer.
    api.admin("POST", "/domains", {"name": name, "customer": auth[0]}, expect=201)


def new_box(node, **fields):
    """A new container of node's customer on its server (name box-..., memory
    256 MB unless fields say otherwise).  Other people's containers may run
    on this machine under small uids (another API's ids): uids that already
    have processes are skipped."""
    fields.setdefault("memory", 256)
    while True:
        uid = node.api.new_container(node.auth[0], node.server["name"], name=unique("box"),
                                     **fields)
        if not procs_of_uid(uid):
            break
    node.uids.append(uid)
    return uid


def fresh_box(node, distro, key, **fields):
    """new_box, launched with distro and ssh key `key`: running when it returns."""
    uid = new_box(node, **fields)
    node.launch(uid, distro, key)
    return uid


def launch(node, host_distro, ssh_keys, auth=None, i=0):
    """A container of node (or of auth, on node's server) running ssh_keys[i]'s Emperor."""
    uid = node.new_container() if auth is None else node.api.new_container(
        auth[0], node.server["name"], name=unique("box"))
    if auth is not None:
        node.uids.append(uid)
    a = auth or node.auth
    assert node.api.post(f"/containers/{uid}", auth=a,
                         json={"distro": host_distro["id"]}).status_code == 200
    assert node.api.post(f"/containers/{uid}", auth=a,
                         json={"ssh_keys": [ssh_keys[i]]}).status_code == 200
    wait_for(lambda: running(uid), 5, "the Emperor")
    return uid


@contextlib.contextmanager
def router_node(api, prefix, conf="", after_cleanup=None, show_logs=False, no_leaked_mounts=False):
    """A started RouterNode in a new base (new_base(prefix)), with `conf`
    appended to its config; at the end its containers are cleaned up, then
    after_cleanup(node), the logs printed (show_logs), the base removed, and
    (no_leaked_mounts) no mount under the base may be left on the host."""
    base = new_base(prefix)
    n = RouterNode(api, base)
    if conf:
        with open(n.conf, "a") as f:
            f.write(conf)
    before = mount_lines()
    try:
        n.start()
        yield n
    finally:
        try:
            n.cleanup()
            if after_cleanup:
                after_cleanup(n)
        finally:
            if show_logs:
                n.print_logs()
            shutil.rmtree(base, ignore_errors=True)
        if no_leaked_mounts:
            leaked = [line for line in mount_lines() - before if base in line]
            assert not leaked, leaked


# ---- network namespaces (issue 15, docs/NETWORK.md) --------------------------------
#
# A node with networking adds veths, routes, an address on lo and an nft
# table to its network namespace: in tests each such node (NetNode) runs in
# a namespace of its own (`imp-<pytest pid>-<n>`), whose uplink is a veth to
# a "world" namespace on TEST-NET-3 (203.0.113.0/24).  Nothing is ever made
# in the host's namespace and no 10.x packet can reach the host's routes: a
# node namespace's default route leads to the world namespace only.

NETTOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nettool.py")
WORLD_NET = "203.0.113"  # TEST-NET-3: the world bridge is .1, node k is .(2+k)


class World(Netns):
    """The world: bridge br0 on 203.0.113.1/24; plug(ns) gives a node
    namespace the uplink `world0` with 203.0.113.(2+k)/24 and its default
    route via 203.0.113.1 (so a stray packet can only die here)."""

    GATEWAY = f"{WORLD_NET}.1"

    def __init__(self):
        super().__init__()
        self.plugged = 0
        try:
            self.ip("link", "add", "br0", "type", "bridge")
            self.ip("addr", "add", f"{self.GATEWAY}/24", "dev", "br0")
            self.ip("link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def plug(self, ns):
        """Connect ns to the bridge; its address (203.0.113.(2+k))."""
        k = self.plugged
        self.plugged += 1
        addr = f"{WORLD_NET}.{2 + k}"
        port = f"w{k}"
        # Made here, the peer moved straight into ns: never in the host's namespace.
        self.ip("link", "add", port, "type", "veth", "peer", "name", "world0", "netns", ns.name)
        self.ip("link", "set", port, "master", "br0", "up")
        ns.ip("addr", "add", f"{addr}/24", "dev", "world0")
        ns.ip("link", "set", "world0", "up")
        ns.ip("route", "add", "default", "via", self.GATEWAY)
        return addr


class NetNode(Node):
    """A node daemon with networking on, in a network namespace of its own
    plugged into `world`; for tests of containers' networks.

        n = NetNode(api, new_base("net-"), world, conf="extra = lines\\n")
        n.start(); uid = launch(n, host_distro, ssh_keys)
        n.address            its TEST-NET address (its server's address in the API)
        n.ns                 its Netns: n.ns.run(...), n.ns.ip_json("route"), n.ns.path
        n.ip_of(uid)         the container's ip (API)
        n.in_container(uid, *cmd)   cmd in the container's network namespace
        n.probe(uid_or_None, "tcp"|"udp", host, port)  True when it got its echo back
        n.serve(uid, port)   a TCP+UDP echo on the container's ip:port (a Popen;
                             kill it before stopping the container)
        n.cleanup()          stop-all, then the namespace is deleted

    The daemon runs under `nsenter --net=...` (only its network namespace
    differs: mounts and cgroups are the host's, as for Node), `network = on`,
    `nat = off`, veth_prefix `veth_prefix`; its api_url is the host API
    through a Relay inside the namespace."""

    def __init__(self, api, base, world, conf="", veth_prefix="imp", host_ok=True):
        self.ns = Netns()
        self.relay = None
        try:
            self.address = world.plug(self.ns)
            self.wrap = tuple(self.ns.nsenter())
            self.relay = Relay(self.ns, api.port)
            super().__init__(api, base, host_ok=host_ok, server_fields={"address": self.address})
            self.veth_prefix = veth_prefix
            with open(self.conf, "a") as f:
                f.write(f"veth_prefix = {veth_prefix}\n")
                f.write("nat = off\n")
                f.write(conf)
        except BaseException:
            self.close_ns()
            raise

    def ip_of(self, uid):
        return self.container(uid)["ip"]

    def netns_of(self, uid):
        init = init_of(uid)
        assert init, f"container {uid} does not run"
        return f"/proc/{init}/ns/net"

    def in_container(self, uid, *cmd, timeout=30):
        """cmd in the container's network namespace (as root, with the host's
        files): the CompletedProcess (text)."""
        return subprocess.run(["nsenter", f"--net={self.netns_of(uid)}", *cmd],
                              capture_output=True, text=True, timeout=timeout)

    def container_ip_json(self, uid, *args):
        p = self.in_container(uid, "ip", "-j", *args)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout) if p.stdout.strip() else []

    def probe(self, uid, proto, host, port, timeout=1.5):
        """A TCP or UDP echo from the container uid (None: the node's
        namespace) to host:port: True when the echo came back."""
        cmd = ["python3", NETTOOL, proto, host, str(port), str(timeout)]
        p = self.in_container(uid, *cmd) if uid else self.ns.run(*cmd)
        return p.stdout.strip() == f"{proto} ok"

    def serve(self, uid, port):
        """nettool's echo on the container's ip:port, in its namespace."""
        p = subprocess.Popen(["nsenter", f"--net={self.netns_of(uid)}", "python3", NETTOOL,
                              "srv", self.ip_of(uid), str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert p.stdout.readline().strip() == "listening"
        return p

    def links(self):
        """The names of the node's `<veth_prefix>*` interfaces."""
        return [l["ifname"] for l in self.ns.ip_json("link")
                if l["ifname"].startswith(self.veth_prefix)]

    def our_routes(self):
        """The node's proto-73 routes (`ip route show proto 73`)."""
        return self.ns.ip_json("route", "show", "proto", "73")

    def close_ns(self):
        if self.relay:
            self.relay.close()
        self.ns.close()

    def cleanup(self):
        try:
            super().cleanup()
        finally:
            self.close_ns()


# ---- legions (issue 19, docs/CLUSTER.md) -------------------------------------------

class RouterNetNode(NetNode):
    """A NetNode whose daemon also runs the HTTP router on 0.0.0.0:80 of its
    namespace, with `uplink = world0` (where a legion's Lord holds the
    floating address), and RouterNode's helpers.  get() asks from the world
    namespace, by default the node's own address:

        n = RouterNetNode(api, new_base("lg-"), world); n.start()
        n.py_vassal(uid, "app", "app.example.org"); n.wait_answer("app.example.org", "app")
        n.get("app.example.org", address="203.0.113.100")"""

    def __init__(self, api, base, world, conf="", veth_prefix="imp", host_ok=True):
        self.world = world
        super().__init__(api, base, world, conf="router_http = 0.0.0.0:80\nuplink = world0\n"
                         + conf, veth_prefix=veth_prefix, host_ok=host_ok)

    def get(self, host, timeout=5, address=None, path="/"):
        """GET http://<address or the node's>/path with Host: host, from the world."""
        url = f"http://{address or self.address}{path}"
        return in_netns(self.world.path, requests.get, url, headers={"Host": host},
                        timeout=timeout)

    def answers(self, host, n=30, address=None):
        out = []
        for _ in range(n):
            try:
                r = self.get(host, address=address)
                out.append((r.status_code, r.text))
            except requests.RequestException as e:
                out.append((0, str(e)))
        return out

    def wait_answer(self, host, text, timeout=30, address=None):
        def ok():
            try:
                r = self.get(host, timeout=2, address=address)
                return r.status_code == 200 and text in r.text
            except requests.RequestException:
                return False
        wait_for(ok, timeout, f"{text!r} on {host}", interval=0.1)

    def legion_pids(self):
        """The node's uWSGI legion members (and anything below them)."""
        mark = (os.path.join(self.state, "legion") + "/").encode()
        pids = []
        for d in os.listdir("/proc"):
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if mark in f.read():
                        pids.append(int(d))
            except (ValueError, OSError):
                pass
        return pids

    router_log = RouterNode.router_log
    print_logs = RouterNode.print_logs
    subscriptions = RouterNode.subscriptions
    sockets = RouterNode.sockets
    vassal = RouterNode.vassal
    py_vassal = RouterNode.py_vassal
    router_pid = RouterNode.router_pid
    router_pids = RouterNode.router_pids


FLOATING = f"{WORLD_NET}.100"  # the tests' legion address


def make_legion(api, nodes, address=FLOATING, quorum=2, name=None, key=None):
    """A legion (admin API) over the servers of nodes, with a random 32-character
    key unless key is given ("" makes a legion without one); the record."""
    body = {"name": name or unique("legion"), "address": address, "quorum": quorum,
            "key": os.urandom(16).hex() if key is None else key,
            "nodes": [n.server["name"] for n in nodes]}
    return api.admin("POST", "/legions", body, expect=201).json()


def lord_of(nodes, address=FLOATING):
    """The node whose namespace holds address (on any interface), or None."""
    for n in nodes:
        p = n.ns.run("ip", "-j", "-4", "addr", "show")
        try:
            links = json.loads(p.stdout or "[]")
        except ValueError:
            continue
        if any(a.get("local") == address for link in links for a in link.get("addr_info", [])):
            return n
    return None


def kill_node(node):
    """The whole node dies: kill -9 of its legion members, router and daemon
    (in that order: nothing announces a death), then its uplink goes down."""
    pids = node.legion_pids()
    try:
        pids += node.router_pids()
    except (OSError, ValueError):
        pass
    if node.proc and node.proc.poll() is None:
        pids.append(node.proc.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if node.proc:
        node.proc.wait(timeout=10)
    node.ns.ip("link", "set", "world0", "down")


def holders(nodes, address=FLOATING):
    """The nodes whose namespace holds address."""
    return [n for n in nodes if lord_of([n], address) is n]


def wait_lord(nodes, timeout=15, other_than=None, address=FLOATING):
    """The one node holding address (not other_than), once exactly one does."""
    seen = []

    def one():
        h = holders(nodes, address)
        seen.append([n.address for n in h])
        return h[0] if len(h) == 1 and h[0] is not other_than else None
    try:
        return wait_for(one, timeout, "exactly one node holding the floating address",
                        interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}; holders seen: {seen[-3:]}") from None


def legion_cluster(api, make_node, host_distro, ssh_keys, deploy, n=3, quorum=2, conf="",
                   prefix="lg"):
    """n RouterNetNodes (make_node(conf=conf)) in one legion on FLOATING; a
    customer with a domain and a container on each node, where
    deploy(node, uid, domain, i) puts its vassal.  (nodes, legion, domain,
    uids, auth)"""
    nodes = [make_node(conf=conf) for _ in range(n)]
    legion = make_legion(api, nodes, address=FLOATING, quorum=quorum)
    auth, _ = api.new_customer()
    domain = f"{unique(prefix)}.example.org"
    add_domain(api, auth, domain)
    uids = []
    for i, node in enumerate(nodes):
        uids.append(launch(node, host_distro, ssh_keys, auth=auth))
        deploy(node, uids[-1], domain, i)
    return nodes, legion, domain, uids, auth
