"""Issue 21: the Debian packages, built from a clean copy of the tree with
Debian's tools (lintian: no error), installed with apt on a throw-away
bookworm server: a debootstrapped root (chrootutil.Chroot) booted with
systemd as its PID 1 (systemd-nspawn, chrootutil.Machine: a network
namespace of its own, nothing else reachable).  Everything then happens as
on a real server, with apt, systemctl and the installed CLI: the postinst
starts the API (Type=notify, in the sandbox its unit asks, as systemd
applies it) and not the unconfigured node; the node configured as
docs/INSTALL.md says (the host's sshd moved to 2222), a container run and
an ssh login into it; systemd restarts a killed API and a killed node (the
containers adopted); an upgrade to a newer build restarts both, keeping the
changed configs, the data and the running container; the node removed as
INSTALL.md says; the API removed, then purged; the server powered off.

Slow (a debootstrap, two package builds, apt from Debian's mirror before
the boot: about 3 minutes on 2 cores, less with the cached root) and it
needs root and deb.debian.org, so `make e2e` skips it: `make e2e-packages`
runs it (IMPERIUM_TEST_PACKAGES=1).  The first build is made while
debootstrap runs; the second (0.21.0-2, the same tree with a changelog entry
added) reuses the first's objects (`dpkg-buildpackage -nc`: no clean, so
make rebuilds nothing)."""

import base64
import glob
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from types import SimpleNamespace

import pytest
import requests

from helpers import ROOT, in_netns, proc_status, procs_of_uid, unique, wait_for
from nodeutil import running

pytestmark = pytest.mark.skipif(
    os.environ.get("IMPERIUM_TEST_PACKAGES") != "1",
    reason="slow, needs root and Debian's mirror: make e2e-packages (IMPERIUM_TEST_PACKAGES=1)")

import chrootutil  # noqa: E402  (after the skip: nothing of it runs when skipped)

VERSION1, VERSION2 = "0.21.0-1", "0.21.0-2"
PACKAGES = ("imperium-api", "imperium-cli", "imperium-node")
DEBS1, DEBS2 = "/var/tmp/debs1", "/var/tmp/debs2"  # not /tmp: a tmpfs once booted
UNITS = ("imperium-api.service", "imperium-node.service", "imperium-sshd.service")
API_CONF = "/etc/imperium/api.conf"
NODE_CONF = "/etc/imperium/node.conf"
NODE_SECRET = "/etc/imperium/node.secret"
STATE = "/var/lib/imperium"
TOKEN = STATE + "/admin.token"
NODE_HOME = "/var/lib/imperium-node"
DISTRO = "/srv/imperium/distros/bookworm"  # INSTALL.md 5, on a machine that is also the API's
ROUTER = "127.0.0.1:80"  # the node's HTTP router, in the machine's network namespace
APP = """def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b"hello from the container's app"]
"""
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


def copy_debs(root, debs, where):
    assert [os.path.basename(d).split("_")[0] for d in debs] == list(PACKAGES), debs
    os.makedirs(root.host_path(where))
    for d in debs:
        shutil.copy(d, root.host_path(where))
    return [os.path.join(where, os.path.basename(d)) for d in debs]


@pytest.fixture(scope="module")
def machine(stage):
    """The root made a server and booted: systemd and D-Bus installed from
    the mirror, and every package both versions need downloaded into apt's
    cache while the root still shares the host's network (the booted
    machine has none: apt installs from the cache there)."""
    build, root = stage
    t0 = time.monotonic()
    root.run("apt-get", "update", timeout=300)
    # systemd-sysv: /sbin/init, without which invoke-rc.d (PostgreSQL's
    # maintainer scripts) believes no init system runs.
    root.run("apt-get", "install", "-y", "--no-install-recommends", "systemd", "systemd-sysv",
             "dbus", timeout=900)
    for version, where in ((VERSION1, DEBS1), (VERSION2, DEBS2)):
        debs = copy_debs(root, build.debs(version), where)
        # Without the Recommends (uacme, openssh-server's xauth, ...): the
        # packages must work without them.
        root.run("apt-get", "install", "-y", "--no-install-recommends", "--download-only",
                 *debs, timeout=900)
    # PostgreSQL and nginx (INSTALL.md 2), installed once booted.
    root.run("apt-get", "install", "-y", "--no-install-recommends", "--download-only",
             "postgresql", "nginx", "ca-certificates", timeout=900)
    log(f"systemd installed and the dependencies downloaded in {time.monotonic() - t0:.0f} s")
    # INSTALL.md 5, "on each node, as root": the distro built with debootstrap
    # from the mirror, which only the root before its boot can reach, so the
    # CLI (no service in it) is installed first, here.
    t0 = time.monotonic()
    cli_deb = [d for d in build.debs(VERSION1) if os.path.basename(d).startswith("imperium-cli_")]
    root.run("apt-get", "install", "-y", "--no-install-recommends", "debootstrap",
             f"{DEBS1}/{os.path.basename(cli_deb[0])}", timeout=600)
    root.run("imperium", "admin", "distro", "build", "bookworm", "--no-register", "--dir", DISTRO,
             timeout=900)
    log(f"imperium admin distro build bookworm took {time.monotonic() - t0:.0f} s")
    m = chrootutil.Machine(root, os.path.join(build.work, "console.log"), log=log)
    try:
        yield m
    finally:
        m.close()


def apt_install(m, where, what):
    t0 = time.monotonic()
    debs = sorted(glob.glob(m.root.host_path(where) + "/*.deb"))
    m.run("apt-get", "install", "-y", "--no-install-recommends",
          *[os.path.join(where, os.path.basename(d)) for d in debs], timeout=600)
    log(f"apt-get install of {what} took {time.monotonic() - t0:.0f} s")


@pytest.fixture(scope="module")
def installed(machine):
    """Version 1 installed with apt on the running server."""
    apt_install(machine, DEBS1, VERSION1)
    return machine


class Api:
    """The installed API where its shipped config puts it, reached from
    inside the machine's network namespace."""

    def __init__(self, m):
        conf = m.root.read(API_CONF)
        listen = re.search(r"^listen\s*=\s*(\S+)", conf, re.M).group(1)
        port = re.search(r"^port\s*=\s*(\d+)", conf, re.M).group(1)
        self.m, self.base = m, f"http://{listen}:{port}"

    def request(self, method, path, **kw):
        kw.setdefault("timeout", 30)
        return in_netns(self.m.netns(), requests.request, method, self.base + path, **kw)

    def answers(self):
        try:
            return self.request("GET", "/api/news/", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False


@pytest.fixture(scope="module")
def api(installed):
    return Api(installed)


def cli(m, api, *args, check=True):
    """The installed CLI, as root on the server, against the installed API:
    the admin token from its default file, /etc/imperium/admin.token, the
    package's link to the one the API made (docs/INSTALL.md, 3)."""
    return m.run("imperium", "--api", api.base, *args, check=check, timeout=60)


def set_key(root, path, key, value):
    """Set `key = value` in a config file as a supplier would: the key's
    line (uncommented if it was a comment), or a line added."""
    text = root.read(path)
    new, n = re.subn(rf"^[#;]?\s*{key}\s*=.*$", f"{key} = {value}", text, count=1, flags=re.M)
    if n == 0:
        new = text.rstrip("\n") + f"\n{key} = {value}\n"
    root.write(path, new, os.stat(root.host_path(path)).st_mode & 0o7777)


def package_state(m, pkg):
    return m.run("dpkg-query", "-W", "-f", "${Version} ${Status}", pkg, check=False).stdout


def main_pid(m, unit):
    return int(m.show(unit, "MainPID")["MainPID"])


def restarted(m, unit, before, old_pid):
    """The unit active again under a new main process, restarted once more
    than `before` times by systemd (Restart=on-failure)."""
    s = m.show(unit, "ActiveState", "SubState", "MainPID", "NRestarts")
    return (s["ActiveState"] == "active" and s["SubState"] == "running" and
            int(s["MainPID"]) not in (0, old_pid) and int(s["NRestarts"]) == before + 1)


def mountinfo(pid):
    """{mount point: (root within its filesystem, mount options, super options)}
    of the process's mount namespace (the last mount at a point wins)."""
    out = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            a, b = line.split(" - ")
            fields = a.split()
            out[chrootutil._unescape(fields[4])] = (chrootutil._unescape(fields[3]),
                                                    fields[5].split(","), b.split()[2].split(","))
    return out


def ssh(m, key, uid, command, stdin=""):
    """The host's ssh client, inside the machine's network namespace."""
    opts = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10"]
    return subprocess.run(["nsenter", f"--net={m.netns()}", "ssh", *opts, "-p", "22",
                           "-i", key, f"{uid}@127.0.0.1", command], capture_output=True,
                          text=True, timeout=60, input=stdin)


def bump_container_ids(root, first_id):
    """Container uids are 30000 + id on every API, and the machine's uids
    are the host's: start this API's ids far above a CI run's on this
    machine (SQLite's AUTOINCREMENT sequence, written before any container
    exists)."""
    db = sqlite3.connect(root.host_path(STATE + "/imperium.db"), timeout=30)
    try:
        with db:
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'containers'")
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('containers', ?)",
                       (first_id - 1,))
    finally:
        db.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The customer's ssh key pair ("good") and a stranger's ("wrong")."""
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("good", "wrong"):
        out[name] = str(d / name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pkgtest-{name}",
                        "-f", out[name]], check=True, timeout=30)
    return out


FRONT = "api.example.net"  # the TLS proxy's name (INSTALL.md), in the machine's /etc/hosts


def operating_nginx_block():
    """The nginx configuration OPERATING.md gives ("A load balancer in
    front"): the test runs what the supplier copies."""
    with open(os.path.join(ROOT, "docs", "OPERATING.md")) as f:
        found = re.findall(r"```nginx\n(.*?)```", f.read(), re.S)
    assert len(found) == 1, "OPERATING.md: one nginx block expected"
    return found[0]


@pytest.fixture(scope="module")
def front(api, installed, tmp_path_factory):
    """TLS in front, as INSTALL.md 2 says: nginx with OPERATING.md's block,
    its upstream this machine's API (`server 127.0.0.1:8080;`), a
    certificate for api.example.net at the block's paths, the supplier's
    own CA trusted by the server (update-ca-certificates: what the nodes'
    libcurl checks), the name in /etc/hosts.  The machine will also be a
    node: nginx's default site goes (its port 80 is the router's).
    Returns the host path of the CA certificate."""
    m = installed
    m.run("apt-get", "install", "-y", "--no-install-recommends", "nginx", "ca-certificates",
          timeout=600)
    conf, n = re.subn(r"(upstream imperium_api \{\n)(?:\s*server [^\n]*\n)+",
                      r"\1    server 127.0.0.1:8080;\n", operating_nginx_block())
    assert n == 1, conf
    d = tmp_path_factory.mktemp("tls")
    crt, key = str(d / "front.crt"), str(d / "front.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", f"/CN={FRONT}",
                    "-addext", f"subjectAltName=DNS:{FRONT}", "-keyout", key, "-out", crt],
                   check=True, capture_output=True, timeout=60)
    for src, dst, mode in ((crt, f"/etc/nginx/{FRONT}.crt", 0o644),
                           (key, f"/etc/nginx/{FRONT}.key", 0o600),
                           (crt, "/usr/local/share/ca-certificates/supplier-ca.crt", 0o644)):
        with open(src) as f:
            m.root.write(dst, f.read(), mode)
    m.run("update-ca-certificates")
    hosts = m.root.read("/etc/hosts") if os.path.exists(m.root.host_path("/etc/hosts")) \
        else "127.0.0.1 localhost\n"  # (debootstrap's minbase writes none)
    m.root.write("/etc/hosts", hosts + f"127.0.0.1 {FRONT}\n")
    m.root.write("/etc/nginx/sites-available/imperium", conf)
    os.symlink("../sites-available/imperium",
               m.root.host_path("/etc/nginx/sites-enabled/imperium"))
    os.unlink(m.root.host_path("/etc/nginx/sites-enabled/default"))
    m.run("nginx", "-t")
    m.run("systemctl", "reload", "nginx")
    return crt


def via_front(m, ca, path, auth=None):
    """(status, body) of GET https://api.example.net<path>, as a customer's
    curl would (the host's curl in the machine's network namespace)."""
    p = subprocess.run(["nsenter", f"--net={m.netns()}", "curl", "-s", "-m", "20", "--cacert", ca,
                        "--resolve", f"{FRONT}:443:127.0.0.1", "-w", "\n%{http_code}",
                        *(["-u", ":".join(auth)] if auth else []), f"https://{FRONT}{path}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (path, p.returncode, p.stderr)
    body, _, code = p.stdout.rpartition("\n")
    return int(code), body


@pytest.fixture(scope="module")
def node(api, installed, front):
    """The node configured as INSTALL.md says (4): the server added with the
    CLI, api_url (the TLS proxy, https://api.example.net) and server_name
    in node.conf, the host's own sshd moved to
    port 2222, the secret written last (the units' condition), then
    `systemctl start imperium-node imperium-sshd`.  Networking as shipped
    (in the machine's own network namespace: veths, routes, the nft table;
    no uplink, so no NAT), its HTTP router on the machine's port 80; no disk
    images (`quota = off`: the machine has no loop devices; the other e2e
    tests cover quotas on the build tree); containers in cgroups of this
    run's (cgroup_parent).  If the removal test did not run: stop-all at the end."""
    m = installed
    name = unique("node")
    out = cli(m, api, "admin", "server", "add", name, "--address", "192.0.2.10",
              "--memory", "1000", "--storage", "1000").stdout
    secret = re.search(r"^node_secret:\s*(\S+)$", out, re.M).group(1)
    for key, value in (("api_url", f"https://{FRONT}"), ("server_name", name),
                       ("quota", "off"),
                       ("cgroup_parent", m.cgroup_parent), ("router_http", ROUTER)):
        set_key(m.root, NODE_CONF, key, value)
    m.root.write("/etc/ssh/sshd_config.d/port.conf", "Port 2222\n")
    m.run("systemctl", "restart", "ssh")
    m.root.write(NODE_SECRET, secret + "\n", 0o600)
    n = SimpleNamespace(server=name, uid=None, running=None, removed=False)
    m.run("systemctl", "start", "imperium-node", "imperium-sshd", timeout=360)
    try:
        yield n
    finally:
        if not n.removed:
            m.run("systemctl", "stop", "imperium-sshd", "imperium-node", check=False)
            p = m.run("imperium-node", "stop-all", "-c", NODE_CONF, check=False, timeout=120)
            assert p.returncode == 0, p.stderr


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


def test_the_server_boots_with_systemd_and_only_its_own_network(machine):
    with open(f"/proc/{machine.leader}/comm") as f:
        assert f.read().strip() == "systemd"
    assert machine.run("systemctl", "is-system-running").stdout.strip() == "running"
    assert in_netns(machine.netns(), socket.if_nameindex) == [(1, "lo")]


def test_install_starts_the_api_and_not_the_unconfigured_node(installed, api):
    m = installed
    for pkg in PACKAGES:
        assert package_state(m, pkg) == f"{VERSION1} install ok installed"
    user = m.run("getent", "passwd", "imperium").stdout.split(":")
    assert user[5] == STATE and user[6].strip() in ("/usr/sbin/nologin", "/bin/false")
    assert m.run("getent", "passwd", "imperium-router").returncode == 0
    st = os.stat(m.root.host_path(STATE))
    assert (st.st_mode & 0o7777, st.st_uid) == (0o750, int(user[2]))
    st = os.stat(m.root.host_path("/usr/lib/imperium/imperium-enter"))
    assert (st.st_mode & 0o7777, st.st_uid) == (0o4755, 0)
    for unit in UNITS:
        assert m.run("systemctl", "is-enabled", unit).stdout.strip() == "enabled", unit
    # The postinst started the API; Type=notify: active means READY=1 came.
    s = m.show("imperium-api.service", "ActiveState", "SubState", "Type", "User", "NRestarts")
    assert s == {"ActiveState": "active", "SubState": "running", "Type": "notify",
                 "User": "imperium", "NRestarts": "0"}, s
    assert api.answers()
    r = api.request("GET", "/api/news/")
    assert r.status_code == 200 and isinstance(r.json(), list)
    # The node's units waited for the supplier's configuration.
    for unit in ("imperium-node.service", "imperium-sshd.service"):
        s = m.show(unit, "ActiveState", "ConditionResult")
        assert s == {"ActiveState": "inactive", "ConditionResult": "no"}, (unit, s)
        assert "ConditionPathExists=/etc/imperium/node.secret" in m.journal(unit)


def test_installed_units_pass_systemd_analyze_verify(installed):
    """On the server itself; --man=no: the server has no man-db (minbase,
    no Recommends) to look sshd(8) up (test_make_install checks the link)."""
    for unit in UNITS:
        p = installed.run("systemd-analyze", "verify", "--man=no", unit, check=False)
        assert p.returncode == 0 and not p.stderr.strip(), (unit, p.stdout, p.stderr)


def test_the_api_runs_in_the_sandbox_its_unit_asks(installed, api):
    """What systemd applied to the running API, read from the host's /proc:
    its user, no privilege and no way to gain one, its system call filter, a
    read-only system with its state directory writable, a /tmp of its own,
    no homes, other processes invisible; and systemd's own score."""
    m = installed
    pid = m.host_pid(main_pid(m, "imperium-api.service"))
    st = proc_status(pid)
    uid = m.run("id", "-u", "imperium").stdout.strip()
    assert st["Uid"].split() == [uid] * 4
    assert (st["NoNewPrivs"], st["Seccomp"]) == ("1", "2"), st
    assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0, st
    mi = mountinfo(pid)
    assert "ro" in mi["/"][1], mi["/"]
    assert "rw" in mi[STATE][1], mi[STATE]
    assert "systemd-private-" in mi["/tmp"][0], mi["/tmp"]
    assert "/home" in mi and "/root" in mi  # ProtectHome: made inaccessible
    assert "hidepid=invisible" in mi["/proc"][2], mi["/proc"]
    p = m.run("systemd-analyze", "security", "--no-pager", "imperium-api.service")
    level = re.search(r"Overall exposure level for imperium-api\.service: ([\d.]+) (\w+)",
                      p.stdout)
    log(f"systemd-analyze security imperium-api.service: {level.group(1)} {level.group(2)}")
    assert level.group(2) == "OK" and float(level.group(1)) < 2.0, p.stdout[-3000:]


def test_the_cli_makes_a_customer(installed, api):
    m = installed
    for f in ("imperium.db", "admin.token"):  # where the unit lets it write, as its user
        assert os.stat(m.root.host_path(f"{STATE}/{f}")).st_uid == \
            int(m.run("id", "-u", "imperium").stdout)
    name = unique("first")
    cli(m, api, "admin", "customer", "add", name, "--password", "s3cret-pw")
    r = api.request("GET", "/api/me/", auth=(name, "s3cret-pw"))
    assert r.status_code == 200, r.text
    assert name in cli(m, api, "admin", "customer", "list").stdout


def test_systemd_restarts_the_api_when_it_dies(installed, api):
    m = installed
    name = unique("survivor")
    cli(m, api, "admin", "customer", "add", name, "--password", "survive-pw1")
    before = int(m.show("imperium-api.service", "NRestarts")["NRestarts"])
    old = main_pid(m, "imperium-api.service")
    m.run("systemctl", "kill", "--signal=SIGKILL", "imperium-api.service")
    wait_for(lambda: restarted(m, "imperium-api.service", before, old), 30,
             "systemd to restart the killed API", interval=0.2)
    wait_for(api.answers, 30, "the restarted API to answer", interval=0.2)
    assert "code=killed, status=9/KILL" in m.journal("imperium-api.service")
    assert api.request("GET", "/api/me/", auth=(name, "survive-pw1")).status_code == 200


def test_installed_node_refuses_its_shipped_config_until_configured(installed):
    """As shipped, node.conf lacks the API's URL and the server's name: a
    start by hand (the unit waits for node.secret) says what is missing."""
    m = installed
    p = m.run("imperium-node", "--help", check=False)
    assert "usage" in (p.stdout + p.stderr).lower()
    if os.path.exists(m.root.host_path(NODE_SECRET)):
        pytest.skip("the node was configured by an earlier test")
    p = m.run("imperium-node", "run", "-c", NODE_CONF, check=False, timeout=30)
    assert p.returncode != 0
    assert re.search(r"api_url|server_name", p.stdout + p.stderr), p.stdout + p.stderr


def test_nginx_in_front_serves_the_api_over_tls(front, api, installed):
    """OPERATING.md's block at work: the customers' API over TLS with the
    supplier's certificate, /admin/ refused outside the supplier's network
    (10.0.0.0/8 there; this client is 127.0.0.1)."""
    m = installed
    code, body = via_front(m, front, "/api/news/")
    assert code == 200 and body.startswith("["), (code, body)
    name = unique("tls")
    cli(m, api, "admin", "customer", "add", name, "--password", "tls-pw-1")
    code, body = via_front(m, front, "/api/me/", auth=(name, "tls-pw-1"))
    assert code == 200 and '"uuid"' in body, (code, body)
    assert via_front(m, front, "/api/me/", auth=(name, "not-the-pw"))[0] == 401
    assert via_front(m, front, "/admin/metrics")[0] == 403


def test_systemctl_start_makes_the_node_and_its_sshd_ready(node, api, installed):
    m = installed
    for unit in ("imperium-node.service", "imperium-sshd.service", "ssh.service"):
        s = m.show(unit, "ActiveState", "SubState")
        assert s == {"ActiveState": "active", "SubState": "running"}, (unit, s)
    journal = m.journal("imperium-node.service")
    assert "0 containers wanted here" in journal, journal[-3000:]
    assert f"following https://{FRONT}/node" in journal, journal[-3000:]  # through nginx
    # The host's sshd on 2222 (INSTALL.md), the node's on 22.
    for port in (22, 2222):
        with in_netns(m.netns(), socket.create_connection, ("127.0.0.1", port), 10) as s:
            assert s.recv(64).startswith(b"SSH-2.0-"), port
    # The API saw the node: its last contact, in the admin metrics.
    token = m.root.read(TOKEN).strip()
    r = api.request("GET", "/admin/metrics", headers={"Authorization": "Bearer " + token})
    found = re.search(rf'^imperium_api_node_last_seen_seconds{{server="{node.server}"}} (\S+)$',
                      r.text, re.M)
    assert found and float(found.group(1)) > 0, r.text


def test_installed_node_runs_a_container(node, api, installed, keys):
    """The distro registered (INSTALL.md 5, built before the boot), then the
    quickstart's calls, as the container's customer: the distro, then the
    ssh key, which makes the container startable."""
    m = installed
    bump_container_ids(m.root, 9000 + os.getpid() % 1000)
    owner = unique("owner")
    cli(m, api, "admin", "customer", "add", owner, "--password", "owner-pw1")
    uid = int(cli(m, api, "admin", "container", "add", "--customer", owner, "--server",
                  node.server, "--name", "box", "--memory", "128", "--storage", "100").stdout)
    assert uid >= 39000 and not procs_of_uid(uid)
    distro = re.search(r"^id:\s*(\d+)$", cli(m, api, "admin", "distro", "add", "bookworm",
                                              "--path", DISTRO).stdout, re.M).group(1)
    with open(keys["good"] + ".pub") as f:
        node.pub = f.read().strip()
    for body in ({"distro": int(distro)}, {"ssh_keys": [node.pub]}):
        r = api.request("POST", f"/api/containers/{uid}", json=body, auth=(owner, "owner-pw1"))
        assert r.status_code == 200, r.text
    node.uid, node.owner = uid, owner
    try:
        node.running = wait_for(lambda: running(uid), 30, f"container {uid}'s Emperor")
    except AssertionError as e:
        raise AssertionError(f"{e}; the node's journal:\n"
                             f"{m.journal('imperium-node.service')[-3000:]}") from None
    log(f"container {uid} runs: init {node.running[0]}, Emperor {node.running[1]}")


def test_installed_sshd_logs_into_the_container(node, installed, keys):
    """imperium-sshd.service as systemd runs it (its own mount namespace with
    nsswitch.conf bound over /etc/nsswitch.conf) on port 22: `ssh
    <uid>@server` with the container's key lands in the container, with the
    package's host key; a wrong key is refused; the server's own
    nsswitch.conf is never changed."""
    m = installed
    uid, pub = node.uid, getattr(node, "pub", "")
    if not uid:
        pytest.skip("no container (test_installed_node_runs_a_container failed)")
    home = m.root.host_path(f"{NODE_HOME}/containers/{uid}")

    def key_written():
        try:
            with open(f"{home}/.ssh/uwsgi_authorized_keys") as f:
                return pub.split()[1] in f.read()
        except FileNotFoundError:
            return False
    wait_for(key_written, 30, "the node to write the key")
    with open(f"{home}/etc/hostname") as f:
        hostname = f.read().strip()
    nsswitch = m.root.read("/etc/nsswitch.conf")
    assert "imperium" not in nsswitch
    # The unit's bind, read-only in sshd's namespace only.
    pid = m.host_pid(main_pid(m, "imperium-sshd.service"))
    with open(f"/proc/{pid}/root/etc/nsswitch.conf") as f:
        assert f.read() == m.root.read("/etc/imperium/nsswitch.conf")
    assert "ro" in mountinfo(pid)["/etc/nsswitch.conf"][1]
    assert "/etc/nsswitch.conf" not in mountinfo(m.leader)
    assert m.run("getent", "passwd", str(uid), check=False).returncode != 0
    p = ssh(m, keys["good"], uid, "id -u; hostname")
    assert p.returncode == 0, (p.stdout, p.stderr, m.journal("imperium-sshd.service")[-3000:])
    assert p.stdout.split("\n")[:2] == [str(uid), hostname], (p.stdout, hostname)
    log(f"ssh {uid}@127.0.0.1 (installed sshd, port 22): {p.stdout.split()}")
    # The package's host key (the postinst's), not the host's sshd's.
    p = subprocess.run(["nsenter", f"--net={m.netns()}", "ssh-keyscan", "-T", "10", "-t",
                        "ed25519", "-p", "22", "127.0.0.1"], capture_output=True, text=True,
                       timeout=60)
    scanned = [ln.split()[1:3] for ln in p.stdout.splitlines() if not ln.startswith("#")]
    assert scanned == [m.root.read("/etc/imperium/ssh_host_ed25519_key.pub").split()[:2]], \
        (p.stdout, p.stderr)
    p = ssh(m, keys["wrong"], uid, "id -u")
    assert p.returncode == 255 and "Permission denied (publickey)" in p.stderr, \
        (p.returncode, p.stdout, p.stderr)
    assert m.root.read("/etc/nsswitch.conf") == nsswitch


def router_get(m, domain):
    """GET / of domain through the node's router, as a visitor would; None
    until something answers."""
    try:
        return in_netns(m.netns(), requests.get, f"http://{ROUTER}/",
                        headers={"Host": domain}, timeout=5)
    except requests.ConnectionError:
        return None


def app_answers(m, domain):
    r = router_get(m, domain)
    return r is not None and r.status_code == 200 and r.text == "hello from the container's app"


def test_the_installed_router_serves_the_containers_app(node, api, installed, keys):
    """The customer's first deploy: a domain mapped to them, a WSGI app and
    its vassal written over ssh (`domain = ...`: the installed shortcuts),
    then the app answers through the node's router (the package's uWSGI
    plugins, run as the imperium-router user)."""
    m = installed
    if not node.uid:
        pytest.skip("no container (test_installed_node_runs_a_container failed)")
    node.domain = f"{unique('app')}.example.com"
    cli(m, api, "admin", "domain", "add", node.domain, "--customer", node.owner)
    p = ssh(m, keys["good"], node.uid, "cat > app.py", stdin=APP)
    assert p.returncode == 0, p.stderr
    ini = f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/app.py\ndomain = {node.domain}\n"
    p = ssh(m, keys["good"], node.uid, "cat > vassals/.app.tmp && mv vassals/.app.tmp "
            "vassals/app.ini", stdin=ini)
    assert p.returncode == 0, p.stderr
    try:
        wait_for(lambda: app_answers(m, node.domain), 60, "the app through the router",
                 interval=0.2)
    except AssertionError as e:
        r = router_get(m, node.domain)
        raise AssertionError(f"{e}: {r and (r.status_code, r.text[:300])}\n"
                             f"{m.journal('imperium-node.service')[-3000:]}") from None
    assert procs_of_uid(int(m.run("id", "-u", "imperium-router").stdout)), \
        "the router does not run as imperium-router"


def test_the_container_serves_on_its_address(node, api, installed, keys):
    """The container's network as the API gives it: its `ip` on its
    interface, and an app of its own (`http-socket`) answering there from
    the server, through the node's veth and nft table."""
    m = installed
    if not getattr(node, "domain", None):
        pytest.skip("no app (test_the_installed_router_serves_the_containers_app failed)")
    r = api.request("GET", f"/api/containers/{node.uid}", auth=(node.owner, "owner-pw1"))
    ip = r.json()["ip"]
    ini = "[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/app.py\nhttp-socket = :9090\n"
    p = ssh(m, keys["good"], node.uid, "cat > vassals/.net.tmp && mv vassals/.net.tmp "
            "vassals/net.ini", stdin=ini)
    assert p.returncode == 0, p.stderr

    def answers():
        try:
            r = in_netns(m.netns(), requests.get, f"http://{ip}:9090/", timeout=5)
            return r.status_code == 200 and r.text == "hello from the container's app"
        except requests.ConnectionError:
            return False
    wait_for(answers, 60, f"the app on {ip}:9090", interval=0.2)
    assert "imperium" in m.run("nft", "list", "tables").stdout


def test_systemd_restarts_the_node_when_it_dies_and_it_adopts_the_containers(node, installed):
    m = installed
    unit = "imperium-node.service"
    before, old = int(m.show(unit, "NRestarts")["NRestarts"]), main_pid(m, unit)
    cursor = m.cursor()
    # The daemon alone, as a crash would (KillMode=process: the unit's
    # other processes are the containers').
    m.run("systemctl", "kill", "--kill-who=main", "--signal=SIGKILL", unit)
    wait_for(lambda: restarted(m, unit, before, old), 60, "systemd to restart the killed node",
             interval=0.2)
    wait_for(lambda: "running containers adopted" in m.journal(unit, since=cursor), 30,
             "the new node's adoption")
    if node.uid:
        assert running(node.uid) == node.running
        assert "1 running containers adopted" in m.journal(unit, since=cursor)
    if getattr(node, "domain", None):
        wait_for(lambda: app_answers(m, node.domain), 30, "the app after the restart")


def test_upgrade_restarts_the_daemons_and_keeps_config_data_and_containers(node, api, installed,
                                                                          keys):
    m = installed
    name = unique("kept")
    cli(m, api, "admin", "customer", "add", name, "--password", "kept-pw1")
    confs = {p: m.root.read(p) for p in (API_CONF, NODE_CONF)}
    assert f"api_url = https://{FRONT}" in confs[NODE_CONF]
    units = ("imperium-api.service", "imperium-node.service", "imperium-sshd.service")
    pids = {u: main_pid(m, u) for u in units}
    cursor = m.cursor()
    apt_install(m, DEBS2, VERSION2)
    for pkg in PACKAGES:
        assert package_state(m, pkg) == f"{VERSION2} install ok installed"
    assert m.run("dpkg", "--audit").stdout == ""
    # The changed conffiles kept, without a question.
    assert {p: m.root.read(p) for p in confs} == confs
    assert not glob.glob(m.root.host_path("/etc/imperium/*.dpkg-*"))
    # The postinsts restarted the daemons (new main processes, ready).
    for u in units:
        s = m.show(u, "ActiveState", "SubState", "MainPID")
        assert (s["ActiveState"], s["SubState"]) == ("active", "running"), (u, s)
        assert int(s["MainPID"]) != pids[u], (u, "not restarted by the upgrade")
    assert api.answers()
    assert api.request("GET", "/api/me/", auth=(name, "kept-pw1")).status_code == 200
    journal = m.journal("imperium-node.service", since=cursor)
    assert "running containers adopted" in journal, journal[-3000:]
    if node.uid:  # the container kept running: the same init and Emperor
        assert running(node.uid) == node.running, journal[-3000:]
        assert "1 running containers adopted" in journal, journal[-3000:]
        p = ssh(m, keys["good"], node.uid, "id -u")
        assert p.stdout.strip() == str(node.uid), (p.stdout, p.stderr)
    if getattr(node, "domain", None):
        wait_for(lambda: app_answers(m, node.domain), 30, "the app after the upgrade")
        log(f"after the upgrade, container {node.uid} still runs: init {node.running[0]}, "
            f"Emperor {node.running[1]}")


def test_removing_the_node_as_install_md_says(node, api, installed):
    """INSTALL.md, "Removing a node cleanly": the container deleted through
    the API (the node stops it and keeps its home aside), the units stopped
    and disabled (a clean exit), stop-all, the server deleted, the package
    purged (the homes kept), the host's sshd back on 22."""
    m = installed
    uid = node.uid
    if uid:
        cli(m, api, "admin", "container", "delete", str(uid))
        wait_for(lambda: not procs_of_uid(uid), 60, f"the node to stop container {uid}")
        wait_for(lambda: glob.glob(m.root.host_path(f"{NODE_HOME}/containers/.deleted/{uid}-*")),
                 30, "the home to be kept aside")
    m.run("systemctl", "disable", "--now", "imperium-sshd", "imperium-node", timeout=120)
    for unit in ("imperium-node.service", "imperium-sshd.service"):
        s = m.show(unit, "ActiveState", "Result", "UnitFileState")
        assert s == {"ActiveState": "inactive", "Result": "success",
                     "UnitFileState": "disabled"}, (unit, s)
    assert "Deactivated successfully" in m.journal("imperium-node.service")
    m.run("imperium-node", "stop-all", "--config", NODE_CONF, timeout=120)
    node.removed = True
    cli(m, api, "admin", "server", "delete", node.server)
    assert node.server not in cli(m, api, "admin", "server", "list").stdout
    m.run("apt-get", "purge", "-y", "imperium-node", timeout=300)
    assert "ok installed" not in package_state(m, "imperium-node")
    assert not glob.glob(m.root.host_path("/etc/imperium/ssh_host_*"))
    assert os.path.isdir(m.root.host_path(f"{NODE_HOME}/containers/.deleted"))
    # Nothing of the containers left in the cgroups.
    for key, d in chrootutil._cgroup_dirs(m.cgroup_parent).items():
        if key in chrootutil.V1_CONTROLLERS and os.path.isdir(d):
            assert not [e for e in os.scandir(d) if e.is_dir()], (key, os.listdir(d))
    os.unlink(m.root.host_path("/etc/ssh/sshd_config.d/port.conf"))
    m.run("systemctl", "restart", "ssh")
    with in_netns(m.netns(), socket.create_connection, ("127.0.0.1", 22), 10) as s:
        assert s.recv(64).startswith(b"SSH-2.0-")


def test_the_api_moves_to_postgresql_under_its_unit(api, installed):
    """INSTALL.md 2 and OPERATING.md: PostgreSQL installed on the server, the
    role and a C-collation database made, the API stopped, its SQLite
    database copied with `imperium admin db copy`, the password in the API
    user's ~/.pgpass, `database` set in api.conf: the API, started by
    systemd in its sandbox, answers from PostgreSQL with every customer."""
    m = installed
    m.run("apt-get", "install", "-y", "--no-install-recommends", "postgresql", timeout=600)
    wait_for(lambda: m.run("pg_isready", "-q", check=False).returncode == 0, 60,
             "PostgreSQL to accept connections", interval=0.2)
    password = "pkg-" + base64.b32encode(os.urandom(10)).decode().lower()
    for sql in (f"CREATE ROLE imperium LOGIN PASSWORD '{password}'",
                "CREATE DATABASE imperium OWNER imperium TEMPLATE template0 "
                "ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"):
        m.run("runuser", "-u", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1", "-c", sql)
    customers = cli(m, api, "admin", "customer", "list").stdout
    assert "first" in customers and "survivor" in customers, customers
    m.run("systemctl", "stop", "imperium-api")
    url = "postgresql://imperium@127.0.0.1:5432/imperium"
    m.run("imperium", "admin", "db", "copy", f"sqlite:{STATE}/imperium.db",
          url.replace("imperium@", f"imperium:{password}@"), timeout=120)
    m.root.write(f"{STATE}/.pgpass", f"127.0.0.1:5432:imperium:imperium:{password}\n", 0o600)
    uid = int(m.run("id", "-u", "imperium").stdout)
    os.chown(m.root.host_path(f"{STATE}/.pgpass"), uid, uid)
    set_key(m.root, API_CONF, "database", url)
    cursor = m.cursor()
    m.run("systemctl", "start", "imperium-api", timeout=120)  # Type=notify: ready
    journal = m.journal("imperium-api.service", since=cursor)
    assert f"database {url}" in journal and password not in journal, journal
    assert m.show("imperium-api.service", "ActiveState")["ActiveState"] == "active"
    assert cli(m, api, "admin", "customer", "list").stdout == customers
    name = re.search(r"\b(first\d+x\d+)\b", customers)
    assert name, customers
    r = api.request("GET", "/api/me/", auth=(name.group(1), "s3cret-pw"))
    assert r.status_code == 200, r.text
    # Written there: PostgreSQL has it.
    cli(m, api, "admin", "customer", "add", unique("onpg"), "--password", "on-pg-pw1")
    out = m.run("runuser", "-u", "postgres", "--", "psql", "-At", "-d", "imperium", "-c",
                "SELECT count(*) FROM customers WHERE username LIKE 'onpg%'").stdout
    assert out.strip() == "1", out


def test_remove_keeps_the_data_and_purge_removes_it(api, installed):
    m = installed
    m.run("apt-get", "remove", "-y", "imperium-api", timeout=300)
    assert m.show("imperium-api.service", "ActiveState")["ActiveState"] == "inactive"
    assert not api.answers()
    assert os.path.exists(m.root.host_path(STATE + "/imperium.db"))
    assert os.path.exists(m.root.host_path(API_CONF))  # a conffile stays until purge
    m.run("apt-get", "purge", "-y", "imperium-api", timeout=300)
    assert not os.path.exists(m.root.host_path(STATE))
    assert not os.path.exists(m.root.host_path(API_CONF))


def test_the_server_powers_off_cleanly(installed):
    m = installed
    m.close()
    assert m.returncode == 0
    for d in m.own.values():
        assert not os.path.exists(d), d
