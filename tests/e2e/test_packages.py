"""Issue 21: the Debian packages, built from a clean copy of the tree with
Debian's tools (lintian: no error), installed with apt into a throw-away
bookworm root (debootstrap, chrootutil.py), the units checked with
`systemd-analyze verify --root`, the installed API and node started there
as their units say (the node configured as docs/INSTALL.md says, following
the API), a customer made with the installed CLI, and an upgrade to a newer
build that keeps the supplier's changed configs and the data, after which
both daemons start again (the node adopting what runs).  What no chroot
can run is said where it matters: systemd itself (its restarts are done by
the test, the maintainer scripts' part read from them) and containers (see
the `node` fixture).

Slow (a debootstrap, two package builds, apt from Debian's mirror: about
2 minutes on 2 cores, 1.5 with the cached root) and it needs root and
deb.debian.org, so `make e2e` skips it: `make e2e-packages` runs it
(IMPERIUM_TEST_PACKAGES=1).  The first build is made while debootstrap
runs; the second (0.21.0-2, the same tree with a changelog entry added)
reuses the first's objects (`dpkg-buildpackage -nc`: no clean, so make
rebuilds nothing)."""

import base64
import glob
import os
import re
import shlex
import shutil
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from helpers import (ROOT, NotifySocket, free_port, procs_of_uid, stop_proc, unique,
                     unit_service_settings, wait_for)
from nodeutil import running

pytestmark = pytest.mark.skipif(
    os.environ.get("IMPERIUM_TEST_PACKAGES") != "1",
    reason="slow, needs root and Debian's mirror: make e2e-packages (IMPERIUM_TEST_PACKAGES=1)")

import chrootutil  # noqa: E402  (after the skip: nothing of it runs when skipped)

VERSION1, VERSION2 = "0.21.0-1", "0.21.0-2"
PACKAGES = ("imperium-api", "imperium-cli", "imperium-node")
UNITS = ("imperium-api.service", "imperium-node.service", "imperium-sshd.service")
API_CONF = "/etc/imperium/api.conf"
NODE_CONF = "/etc/imperium/node.conf"
NODE_SECRET = "/etc/imperium/node.secret"
STATE = "/var/lib/imperium"
TOKEN = STATE + "/admin.token"
WORK_PREFIX = "imperium-pkg-"  # the builds' temporary directory: <prefix><pid>-*
# What a build directory leaves in debian/ (a copy must not carry a build
# someone made in the checkout).
BUILD_LEFTOVERS = re.compile(r"^debian/(\.debhelper/|tmp/|build/|files$|debhelper-build-stamp$|"
                             r"imperium-[a-z]+/|.*\.substvars$|.*\.debhelper(\.log)?$)")


def log(msg):
    print(f"[packages {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- building -------------------------------------------------------------------

def copy_tree(dest):
    """The tree as a clone would have it, plus the files not committed yet
    (what `git ls-files` lists and .gitignore does not exclude), without
    build outputs."""
    files = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, check=True,
                           timeout=60).stdout.decode().split("\0")
    for rel in files:
        src = os.path.join(ROOT, rel)
        if not rel or BUILD_LEFTOVERS.match(rel) or not os.path.lexists(src):
            continue  # a deleted file is still in the index until committed
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel), follow_symlinks=False)


def add_changelog_entry(src, version):
    """A newer version, as `dch -v VERSION` would write it (same tree)."""
    path = os.path.join(src, "debian", "changelog")
    with open(path) as f:
        old = f.read()
    first = old.splitlines()[0]
    m = re.match(r"^(\S+) \(([^)]+)\) ([^;]+);", first)
    assert m, f"unexpected first line of debian/changelog: {first!r}"
    trailer = re.search(r"^ -- .*$", old, re.M).group(0)
    who = trailer[4:trailer.index(">") + 1]
    date = subprocess.run(["date", "-R"], capture_output=True, text=True,
                          check=True).stdout.strip()
    entry = (f"{m.group(1)} ({version}) {m.group(3)}; urgency=medium\n\n"
             f"  * Test rebuild: the upgrade path of tests/e2e/test_packages.py.\n\n"
             f" -- {who}  {date}\n\n")
    with open(path, "w") as f:
        f.write(entry + old)


def dpkg_buildpackage(src, logpath, *extra):
    """dpkg-buildpackage -us -uc -b [extra] in src (outputs beside it)."""
    env = {**os.environ, "DEB_BUILD_OPTIONS": f"parallel={os.cpu_count() or 1}",
           "LANG": "C.UTF-8"}
    t0 = time.monotonic()
    with open(logpath, "w") as out:
        p = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b", *extra], cwd=src,
                           stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900)
    with open(logpath) as f:
        text = f.read()
    assert p.returncode == 0, f"dpkg-buildpackage {' '.join(extra)} failed:\n{text[-6000:]}"
    log(f"dpkg-buildpackage {' '.join(extra)} took {time.monotonic() - t0:.0f} s")


class Build:
    """Both versions built from one copy of the tree (`-nc` for the second)."""

    def __init__(self, work):
        self.work = work
        self.src = os.path.join(work, "imperium")
        os.makedirs(self.src)
        copy_tree(self.src)
        assert os.path.exists(os.path.join(self.src, "debian", "control")), \
            "no debian/control in the tree"

    def build(self):
        dpkg_buildpackage(self.src, os.path.join(self.work, "build1.log"))
        self.changes1 = self.changes_of(VERSION1)
        add_changelog_entry(self.src, VERSION2)
        dpkg_buildpackage(self.src, os.path.join(self.work, "build2.log"), "-nc")
        self.changes2 = self.changes_of(VERSION2)

    def changes_of(self, version):
        found = glob.glob(os.path.join(self.work, f"imperium_{version}_*.changes"))
        assert len(found) == 1, (version, os.listdir(self.work))
        return found[0]

    def debs(self, version):
        """The packages of version (not their -dbgsym debug symbols)."""
        return sorted(d for d in glob.glob(os.path.join(self.work, f"imperium-*_{version}_*.deb"))
                      if "-dbgsym_" not in d)


@pytest.fixture(scope="module")
def stage():
    """The two builds and, made at the same time, the throw-away root;
    everything removed at the end, whatever happened (a failed build
    included: the root's thread is joined and the root closed)."""
    chrootutil.sweep_stale(log, prefix=WORK_PREFIX)
    work = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-")
    made = {}

    def make_root():
        try:
            made["root"] = chrootutil.Chroot(log=log)
        except BaseException as e:  # raised again in the test's thread
            made["err"] = e

    t = threading.Thread(target=make_root)
    try:
        t.start()
        try:
            build = Build(work)
            build.build()
        finally:
            t.join()
        if "err" in made:
            raise made["err"]
        yield build, made["root"]
    finally:
        try:
            if made.get("root") is not None:
                made["root"].close()
        finally:
            shutil.rmtree(work)


@pytest.fixture(scope="module")
def installed(stage):
    """Version 1 installed with apt in the root (dependencies from the
    mirror, systemd for `systemd-analyze verify --root`).  Without the
    Recommends (uacme, and openssh-server's xauth, ncurses-term ...): a
    minute less of downloads, and the packages must work without them."""
    build, root = stage
    debs = copy_debs(root, build.debs(VERSION1), "/tmp/debs1")
    t0 = time.monotonic()
    root.run("apt-get", "update", timeout=300)
    root.run("apt-get", "install", "-y", "--no-install-recommends", "systemd", *debs,
             timeout=900)
    log(f"apt-get install of version 1 took {time.monotonic() - t0:.0f} s")
    return build, root


def copy_debs(root, debs, where):
    assert [os.path.basename(d).split("_")[0] for d in debs] == list(PACKAGES), debs
    os.makedirs(root.host_path(where))
    for d in debs:
        shutil.copy(d, root.host_path(where))
    return [os.path.join(where, os.path.basename(d)) for d in debs]


# ---- the daemons as their units run them ---------------------------------------------

def unit_service(root, unit):
    """The [Service] keys of an installed unit file (the last value wins)."""
    return {k: v[-1] for k, v in unit_service_settings(root.read(unit)).items()}


def set_key(root, path, key, value):
    """Set `key = value` in a config file as a supplier would: the key's
    line (uncommented if it was a comment), or a line added."""
    text = root.read(path)
    new, n = re.subn(rf"^[#;]?\s*{key}\s*=.*$", f"{key} = {value}", text, count=1, flags=re.M)
    if n == 0:
        new = text.rstrip("\n") + f"\n{key} = {value}\n"
    root.write(path, new, os.stat(root.host_path(path)).st_mode & 0o7777)


class UnitProcess:
    """A daemon started in the root the way its installed unit says: its
    ExecStart, as its User and Group, in its WorkingDirectory, with its
    UMask, and (Type=notify) with a NOTIFY_SOCKET that must get READY=1,
    by which time ready() must hold (what systemd waits for before starting
    what comes after).  systemd's sandboxing options cannot apply in a
    chroot: the units are checked with systemd-analyze verify instead."""
    unit = None

    def __init__(self, root, logpath):
        self.root, self.logpath = root, logpath
        svc = unit_service(root, "/lib/systemd/system/" + self.unit)
        self.argv = shlex.split(svc["ExecStart"].lstrip("-@:+!"))
        self.user, self.group = svc.get("User"), svc.get("Group")
        self.cwd = svc.get("WorkingDirectory")
        self.umask = int(svc["UMask"], 8) if "UMask" in svc else -1
        self.notify = svc.get("Type") == "notify"
        # What systemd sets up before the start: the unit's own mount
        # namespace with BindReadOnlyPaths ("-" prefix: optional source),
        # its RuntimeDirectory under /run, then ExecStartPre.
        self.binds = [tuple(b.lstrip("-").split(":")[:2])
                      for b in svc.get("BindReadOnlyPaths", "").split()]
        self.runtime_dirs = svc.get("RuntimeDirectory", "").split()
        self.runtime_mode = int(svc.get("RuntimeDirectoryMode", "0755"), 8)
        self.pre = shlex.split(svc["ExecStartPre"].lstrip("-@:+!")) \
            if "ExecStartPre" in svc else None
        self.proc = None

    def ready(self):
        raise NotImplementedError

    def start(self):
        self.offset = len(self.log(whole=True))  # this start's lines only
        for d in self.runtime_dirs:
            path = self.root.host_path("/run/" + d)
            os.makedirs(path, exist_ok=True)
            os.chmod(path, self.runtime_mode)
        if self.pre:
            p = self.root.run(*self.pre, check=False, binds=self.binds, timeout=60)
            assert p.returncode == 0, f"{self.unit}: ExecStartPre failed:\n{p.stdout}{p.stderr}"
        env, sock = {}, None
        if self.notify:
            sock = NotifySocket(self.root.host_path("/run"))
            os.chmod(sock.path, 0o777)  # the unit's user sends to it
            env["NOTIFY_SOCKET"] = "/run/" + os.path.basename(sock.path)
        try:
            self.proc = self.root.start(*self.argv, user=self.user, group=self.group,
                                        cwd=self.cwd, umask=self.umask, env=env,
                                        logpath=self.logpath, binds=self.binds)
            if sock:
                self.wait_ready(sock)
            wait_for(self.ready, 30, f"{self.unit} to be ready", interval=0.1)
        finally:
            if sock:
                sock.close()
                os.unlink(sock.path)

    def wait_ready(self, sock):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.unit} exited:\n{self.log()}"
            if "READY=1" in (sock.recv(0.5) or []):
                assert self.ready(), f"{self.unit}: READY=1 too early:\n{self.log()}"
                return
        raise AssertionError(f"{self.unit}: no READY=1 in 30 s:\n{self.log()}")

    def stop(self):
        """SIGTERM, as systemd stops it: a clean exit."""
        assert stop_proc(self.proc), f"{self.unit} did not stop on SIGTERM"
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}:\n{self.log()}"

    def log(self, whole=False):
        try:
            with open(self.logpath, errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return ""
        return text if whole else text[self.offset:][-4000:]


class InstalledApi(UnitProcess):
    unit = "imperium-api.service"

    def __init__(self, root, port, logpath):
        super().__init__(root, logpath)
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def ready(self):
        return self.answers()

    def answers(self):
        try:
            return requests.get(self.base + "/api/news/", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False


class InstalledNode(UnitProcess):
    """Ready once it has the API's first state and applied it."""
    unit = "imperium-node.service"

    def ready(self):
        return "node state received" in self.log()


class InstalledSshd(UnitProcess):
    """Ready once it accepts connections on its port."""
    unit = "imperium-sshd.service"

    def __init__(self, root, port, logpath):
        super().__init__(root, logpath)
        self.port = port

    def ready(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def api(installed):
    build, root = installed
    port = free_port()
    set_key(root, API_CONF, "port", port)
    a = InstalledApi(root, port, os.path.join(build.work, "api.log"))
    a.start()
    yield a
    if a.proc.poll() is None:
        stop_proc(a.proc)


@pytest.fixture(scope="module")
def node(api, installed):
    """The installed node configured as INSTALL.md says (a server added with
    the CLI, its secret in node.secret, api_url and server_name in
    node.conf) and started as its unit says.  This machine is shared (a CI
    run may run nodes beside it), so the node stays out of the host's
    network (`network = off`: no veth, no nft table), needs no loop device
    (`quota = off`), runs its containers from the root itself (the `host`
    distro: `distro_host_ok`), in a cgroup parent of its own.  At the end:
    the daemon stopped, then `imperium-node stop-all`, as INSTALL.md says."""
    build, root = installed
    root.bind_cgroups()
    name = unique("node")
    out = cli(root, api, "admin", "server", "add", name, "--address", "192.0.2.10",
              "--memory", "1000", "--storage", "1000").stdout
    secret = re.search(r"^node_secret:\s*(\S+)$", out, re.M).group(1)
    root.write(NODE_SECRET, secret + "\n", 0o600)
    for key, value in (("api_url", api.base), ("server_name", name), ("network", "off"),
                       ("quota", "off"), ("distro_host_ok", "true"),
                       ("cgroup_parent", f"imperium-pkgtest-{os.getpid()}")):
        set_key(root, NODE_CONF, key, value)
    n = InstalledNode(root, os.path.join(build.work, "node.log"))
    n.server, n.uid = name, None
    try:
        n.start()
        yield n
    finally:
        if n.proc and n.proc.poll() is None:
            stop_proc(n.proc)
        p = root.run("imperium-node", "stop-all", "-c", NODE_CONF, check=False, timeout=120)
        assert p.returncode == 0, p.stderr
        if n.uid:
            assert not procs_of_uid(n.uid), "the container outlived stop-all"


def bump_container_ids(root, first_id):
    """Container uids are 30000 + id on every API, so this root's first
    container would share its uid with a CI run's first one on this machine
    (uids are the host's): start this API's ids far above (SQLite's
    AUTOINCREMENT sequence, written before any container exists)."""
    db = sqlite3.connect(root.host_path(STATE + "/imperium.db"), timeout=30)
    try:
        with db:
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'containers'")
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('containers', ?)",
                       (first_id - 1,))
    finally:
        db.close()


def cli(root, api, *args, check=True):
    """The installed CLI, as root in the root, against the installed API: the
    admin token from its default file, /etc/imperium/admin.token, the
    package's link to the one the API made (docs/INSTALL.md, 3)."""
    return root.run("imperium", "--api", api.base, *args, check=check, timeout=60)


def package_state(root, pkg):
    return root.run("dpkg-query", "-W", "-f", "${Version} ${Status}", pkg).stdout


# ---- the tests ------------------------------------------------------------------------

def test_packages_build_and_lintian_has_no_errors(stage):
    build, _ = stage
    for version in (VERSION1, VERSION2):
        names = [os.path.basename(d).split("_")[:2] for d in build.debs(version)]
        assert names == [[p, version] for p in PACKAGES]
    p = subprocess.run(["lintian", "--fail-on", "error", build.changes1], capture_output=True,
                       text=True, timeout=600)
    tags = p.stdout.splitlines()
    log("lintian:\n" + ("\n".join(tags) or "(nothing)"))
    assert not [t for t in tags if t.startswith("E:")], p.stdout
    assert p.returncode == 0, p.stdout + p.stderr


def test_install_creates_user_state_and_enables_units(installed):
    _, root = installed
    for pkg in PACKAGES:
        assert package_state(root, pkg) == f"{VERSION1} install ok installed"
    user = root.run("getent", "passwd", "imperium").stdout.split(":")
    assert user[5] == STATE and user[6].strip() in ("/usr/sbin/nologin", "/bin/false")
    st = os.stat(root.host_path(STATE))
    assert (st.st_mode & 0o7777, st.st_uid) == (0o750, int(user[2]))
    st = os.stat(root.host_path("/usr/lib/imperium/imperium-enter"))
    assert (st.st_mode & 0o7777, st.st_uid) == (0o4755, 0)
    # Enabled at install (deb-systemd-helper's links, made without a
    # running systemd); the node's units start only once configured.
    wants = root.host_path("/etc/systemd/system/multi-user.target.wants")
    for unit in UNITS:
        assert os.path.islink(os.path.join(wants, unit)), unit
    for unit in ("imperium-node.service", "imperium-sshd.service"):
        assert "ConditionPathExists=/etc/imperium/node.secret" in \
            root.read("/lib/systemd/system/" + unit)


def test_installed_units_pass_systemd_analyze_verify(installed):
    _, root = installed
    for unit in UNITS:
        p = subprocess.run(["systemd-analyze", "verify", f"--root={root.path}", unit],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and not p.stderr.strip(), (unit, p.stdout, p.stderr)


def test_installed_api_answers_news_and_cli_makes_a_customer(api, installed):
    _, root = installed
    r = requests.get(api.base + "/api/news/", timeout=10)
    assert r.status_code == 200 and isinstance(r.json(), list)
    # The state the API made is where the unit lets it write, owned by its user.
    for f in ("imperium.db", "admin.token"):
        assert os.stat(root.host_path(f"{STATE}/{f}")).st_uid == \
            int(root.run("id", "-u", "imperium").stdout)
    name = unique("first")
    cli(root, api, "admin", "customer", "add", name, "--password", "s3cret-pw")
    r = requests.get(api.base + "/api/me/", auth=(name, "s3cret-pw"), timeout=30)
    assert r.status_code == 200, r.text
    assert name in cli(root, api, "admin", "customer", "list").stdout


def test_installed_node_refuses_its_shipped_config_until_configured(installed):
    """As shipped, node.conf lacks the API's URL and the server's name: a
    start (by hand: the unit waits for node.secret) says what is missing."""
    _, root = installed
    p = root.run("imperium-node", "--help")
    assert "usage" in (p.stdout + p.stderr).lower()
    if os.path.exists(root.host_path(NODE_SECRET)):
        pytest.skip("the node was configured by an earlier test")
    p = root.run("imperium-node", "run", "-c", NODE_CONF, check=False, timeout=30)
    assert p.returncode != 0
    assert re.search(r"api_url|server_name", p.stdout + p.stderr), p.stdout + p.stderr


def test_installed_node_follows_the_installed_api(node, api, installed):
    _, root = installed
    assert "0 containers wanted here" in node.log()
    # The API saw it: the nodes' last contact, in the admin metrics.
    token = root.read(TOKEN).strip()
    r = requests.get(api.base + "/admin/metrics", timeout=30,
                     headers={"Authorization": "Bearer " + token})
    server = re.search(r"^server_name = (\S+)$", root.read(NODE_CONF), re.M).group(1)
    m = re.search(rf'^imperium_api_node_last_seen_seconds{{server="{server}"}} (\S+)$',
                  r.text, re.M)
    assert m and float(m.group(1)) > 0, r.text


def test_installed_node_runs_a_container(node, api, installed):
    _, root = installed
    bump_container_ids(root, 9000 + os.getpid() % 1000)
    owner = unique("owner")
    cli(root, api, "admin", "customer", "add", owner, "--password", "owner-pw1")
    uid = int(cli(root, api, "admin", "container", "add", "--customer", owner, "--server",
                  node.server, "--name", "box", "--memory", "128", "--storage", "100").stdout)
    assert uid >= 39000 and not procs_of_uid(uid)
    distro = re.search(r"^id:\s*(\d+)$", cli(root, api, "admin", "distro", "add", "host",
                                              "--path", "/").stdout, re.M).group(1)
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    key = f"ssh-ed25519 {base64.b64encode(blob).decode()} packages-test"
    for body in ({"distro": int(distro)}, {"ssh_keys": [key]}):
        r = requests.post(f"{api.base}/api/containers/{uid}", json=body,
                          auth=(owner, "owner-pw1"), timeout=30)
        assert r.status_code == 200, r.text
    node.uid, node.owner, node.owner_pw = uid, owner, "owner-pw1"
    node.running = wait_for(lambda: running(uid), 30, f"container {uid}'s Emperor")
    log(f"container {uid} runs: init {node.running[0]}, Emperor {node.running[1]}")


def test_installed_sshd_logs_into_the_container(node, api, installed, tmp_path):
    """imperium-sshd.service as systemd would run it (its RuntimeDirectory,
    ExecStartPre, then ExecStart in a mount namespace of its own with
    nsswitch.conf bound over /etc/nsswitch.conf), on a free port of
    127.0.0.1 set in the installed sshd_config as a supplier would: `ssh
    <uid>@127.0.0.1` with the container's key lands in the container, with
    the package's host key; a wrong key is refused; the root's own
    nsswitch.conf is never changed."""
    build, root = installed
    uid = node.uid
    if not uid:
        pytest.skip("no container (test_installed_node_runs_a_container failed)")
    conf = "/etc/imperium/sshd_config"
    port = free_port()
    text = root.read(conf)
    text, n = re.subn(r"^Port 22$", f"Port {port}\nListenAddress 127.0.0.1", text, flags=re.M)
    assert n == 1, text
    root.write(conf, text, 0o644)
    keys = {}
    for name in ("good", "wrong"):
        keys[name] = str(tmp_path / name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pkgtest-{name}",
                        "-f", keys[name]], check=True, timeout=30)
    with open(keys["good"] + ".pub") as f:
        pub = f.read().strip()
    # The quickstart's call, as the container's customer.
    r = requests.post(f"{api.base}/api/containers/{uid}", json={"ssh_keys": [pub]},
                      auth=(node.owner, node.owner_pw), timeout=30)
    assert r.status_code == 200, r.text
    containers = re.search(r"^containers_dir\s*=\s*(\S+)", root.read(NODE_CONF), re.M).group(1)
    home = f"{containers}/{uid}"
    authorized = root.host_path(f"{home}/.ssh/uwsgi_authorized_keys")

    def key_written():
        try:
            with open(authorized) as f:
                return pub.split()[1] in f.read()
        except FileNotFoundError:
            return False
    wait_for(key_written, 30, "the node to write the key")
    with open(root.host_path(f"{home}/etc/hostname")) as f:
        hostname = f.read().strip()
    nsswitch = root.read("/etc/nsswitch.conf")
    assert "imperium" not in nsswitch
    sshd = InstalledSshd(root, port, os.path.join(build.work, "sshd.log"))
    assert sshd.binds == [("/etc/imperium/nsswitch.conf", "/etc/nsswitch.conf")]
    assert sshd.argv == ["/usr/sbin/sshd", "-D", "-e", "-f", conf]
    try:
        sshd.start()  # Type=notify: READY=1 from sshd
        pid = sshd.proc.pid
        # The bind is the unit's: read-only in sshd's namespace, and
        # neither the host nor the root's other processes see it.
        with open(f"/proc/{pid}/root/etc/nsswitch.conf") as f:
            assert f.read() == root.read("/etc/imperium/nsswitch.conf")
        with open(f"/proc/{pid}/mountinfo") as f:
            # (mount points as seen from its root: the chroot's)
            line = [ln for ln in f if ln.split()[4] == "/etc/nsswitch.conf"]
        assert line and "ro" in line[-1].split()[5].split(","), line
        assert root.read("/etc/nsswitch.conf") == nsswitch
        assert not chrootutil.mounts_under(root.host_path("/etc/nsswitch.conf"))
        assert root.run("getent", "passwd", str(uid), check=False).returncode != 0
        opts = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
                "-p", str(port)]
        p = subprocess.run(["ssh", *opts, "-i", keys["good"], f"{uid}@127.0.0.1",
                            "id -u; hostname"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, (p.stdout, p.stderr, sshd.log())
        assert p.stdout.split("\n")[:2] == [str(uid), hostname], (p.stdout, hostname)
        log(f"ssh {uid}@127.0.0.1 -p {port} (installed sshd): {p.stdout.split()}")
        # The package's host key (the postinst's), not the host's sshd's.
        p = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(port),
                            "127.0.0.1"], capture_output=True, text=True, timeout=60)
        scanned = [ln.split()[1:3] for ln in p.stdout.splitlines() if not ln.startswith("#")]
        shipped = root.read("/etc/imperium/ssh_host_ed25519_key.pub").split()[:2]
        assert scanned == [shipped], (p.stdout, p.stderr, shipped)
        p = subprocess.run(["ssh", *opts, "-i", keys["wrong"], f"{uid}@127.0.0.1", "id -u"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert p.returncode == 255 and "Permission denied (publickey)" in p.stderr, \
            (p.returncode, p.stdout, p.stderr)
        assert str(uid) not in p.stdout
    finally:
        if sshd.proc and sshd.proc.poll() is None:
            sshd.stop()  # SIGTERM: exit 0
    assert not chrootutil.mounts_under(root.host_path("/etc/nsswitch.conf"))
    assert root.read("/etc/nsswitch.conf") == nsswitch

    def exe(pid):
        try:
            return os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return ""
    assert not [pid for pid in chrootutil.procs_in(root.path) if exe(pid).endswith("/sshd")]


def test_upgrade_keeps_config_and_data_and_answers_again(node, api, installed):
    build, root = installed
    name = unique("kept")
    cli(root, api, "admin", "customer", "add", name, "--password", "kept-pw1")
    api_conf, node_conf = root.read(API_CONF), root.read(NODE_CONF)
    assert f"port = {api.port}" in api_conf and f"api_url = {api.base}" in node_conf
    debs = copy_debs(root, build.debs(VERSION2), "/tmp/debs2")
    # As on a server: the old daemons keep running while apt replaces them;
    # the postinsts ask systemd for the restarts, which this root has not
    # got, so the test restarts them below the way systemd would.
    t0 = time.monotonic()
    root.run("apt-get", "install", "-y", "--no-install-recommends", *debs, timeout=600)
    log(f"apt-get install of version 2 took {time.monotonic() - t0:.0f} s")
    for pkg in PACKAGES:
        assert package_state(root, pkg) == f"{VERSION2} install ok installed"
    assert root.run("dpkg", "--audit").stdout == ""
    # The changed conffiles were kept, without a question.
    assert root.read(API_CONF) == api_conf and root.read(NODE_CONF) == node_conf
    assert not glob.glob(root.host_path("/etc/imperium/*.dpkg-*"))
    assert os.path.exists(root.host_path(NODE_SECRET))
    assert api.answers()  # untouched during the upgrade
    api.stop()
    api.start()
    assert requests.get(api.base + "/api/me/", auth=(name, "kept-pw1"),
                        timeout=30).status_code == 200
    cli(root, api, "admin", "customer", "show", name)
    node.stop()  # SIGTERM, KillMode=process: the daemon alone, exit 0
    node.start()  # READY=1 once it has the API's state again
    assert "running containers adopted" in node.log()
    if node.uid:  # the container kept running, the same init and Emperor
        assert running(node.uid) == node.running, node.log()
        assert "1 running containers adopted" in node.log(), node.log()
        log(f"after the upgrade, container {node.uid} still runs: init {node.running[0]}, "
            f"Emperor {node.running[1]}; the new daemon: "
            + " | ".join(line for line in node.log().splitlines() if "adopt" in line))


def test_upgrade_restarts_the_daemons_and_never_stops_the_node_first(installed):
    """What systemd would do at an upgrade, read from the installed
    maintainer scripts (this root runs no systemd): the prerm stops a unit
    only on remove, the postinst restarts it after an upgrade, and the
    node's restart kills the daemon alone (KillMode=process), so its
    containers keep running and the new daemon adopts them."""
    _, root = installed
    info = "/var/lib/dpkg/info/"
    for pkg, unit in (("imperium-api", "imperium-api.service"),
                      ("imperium-node", "imperium-node.service")):
        prerm = root.read(f"{info}{pkg}.prerm") if \
            os.path.exists(root.host_path(f"{info}{pkg}.prerm")) else ""
        guard = None
        for line in prerm.splitlines():
            if line.lstrip().startswith("if "):
                guard = line
            if "deb-systemd-invoke stop" in line and unit in line:
                assert '"$1" = remove' in (guard or ""), (pkg, prerm)
        postinst = root.read(f"{info}{pkg}.postinst")
        assert re.search(r"_dh_action=(try-)?restart", postinst), (pkg, postinst)
        assert unit in postinst
    assert unit_service(root, "/lib/systemd/system/imperium-node.service")["KillMode"] == "process"


def test_remove_keeps_the_data_and_purge_removes_it(api, installed):
    _, root = installed
    if api.proc and api.proc.poll() is None:
        api.stop()
    root.run("apt-get", "remove", "-y", "imperium-api", timeout=300)
    assert os.path.exists(root.host_path(STATE + "/imperium.db"))
    assert os.path.exists(root.host_path(API_CONF))  # a conffile stays until purge
    root.run("apt-get", "purge", "-y", "imperium-api", timeout=300)
    assert not os.path.exists(root.host_path(STATE))
    assert not os.path.exists(root.host_path(API_CONF))
