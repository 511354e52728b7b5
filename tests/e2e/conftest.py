"""End-to-end fixtures: start the real imperium-api (the sanitizer build by
default) on a free loopback port and a database of its own (a temporary SQLite
file, or with IMPERIUM_TEST_DB=postgresql a new database on the session's
throwaway cluster, pgutil.py), and talk to it over HTTP the way customers and
the supplier do."""

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time

import pytest
import requests

import nodeutil
import pgutil
# Re-exported: test modules import them from here, and a test replaces
# conftest.free_port to restart the API on the same port.
from helpers import (BIN, ROOT, free_port, mount_lines, next_number, stop_proc,  # noqa: F401
                     unique)

# The storage backend of this run; tests that only make sense on one use
# `pytest.mark.skipif(PG, reason=...)` (or SQLITE_ONLY / PG_ONLY).
PG = pgutil.PG
SQLITE_ONLY = pytest.mark.skipif(PG, reason="SQLite only (IMPERIUM_TEST_DB=postgresql)")
PG_ONLY = pytest.mark.skipif(not PG, reason="needs PostgreSQL: IMPERIUM_TEST_DB=postgresql")


class Api:
    """A running imperium-api and helpers to drive it."""

    def __init__(self, workdir, port, proc, logpath, database=None):
        self.workdir = workdir
        # Its --database URL (bench/bench.py gives none: its SQLite file).
        self.database = database or "sqlite:" + os.path.join(workdir, "imperium.db")
        self.port = port
        self.proc = proc
        self.logpath = logpath
        self.base = f"http://127.0.0.1:{port}"
        self.token_file = os.path.join(workdir, "admin.token")
        with open(self.token_file) as f:
            self.token = f.read().strip()

    # ---- customer API ----
    def url(self, path):
        return self.base + "/api" + path

    def get(self, path, auth=None, **kw):
        return requests.get(self.url(path), auth=auth, timeout=30, **kw)

    def post(self, path, auth=None, json=None, **kw):
        return requests.post(self.url(path), auth=auth, json=json, timeout=30, **kw)

    def delete(self, path, auth=None, json=None, **kw):
        return requests.delete(self.url(path), auth=auth, json=json, timeout=30, **kw)

    # ---- admin API (what `imperium admin` calls) ----
    def admin(self, method, path, json=None, expect=None):
        r = requests.request(method, self.base + "/admin" + path, json=json, timeout=30,
                             headers={"Authorization": "Bearer " + self.token})
        if expect is not None:
            assert r.status_code == expect, (method, path, r.status_code, r.text)
        return r

    def new_customer(self, username=None, password="secret", **fields):
        username = username or unique("cust")
        body = {"username": username, "password": password, **fields}
        info = self.admin("POST", "/customers", body, expect=201).json()
        return (username, password), info

    def new_server(self, owner=None, memory=10000, storage=100000, **fields):
        n = next_number()
        # Server addresses are unique: derive one from a counter.
        body = {"name": unique("srv"), "address": f"198.51.{n // 250}.{n % 250 + 1}",
                "memory": memory, "storage": storage, **fields}
        if owner:
            body["owner"] = owner
        return self.admin("POST", "/servers", body, expect=201).json()

    def new_distro(self, name=None, path="/"):
        return self.admin("POST", "/distros", {"name": name or unique("distro"),
                                               "path": path}, expect=201).json()

    def new_container(self, customer, server, name="changeme", memory=500, storage=1000):
        body = {"customer": customer, "server": server, "name": name,
                "memory": memory, "storage": storage}
        return self.admin("POST", "/containers", body, expect=201).json()["uid"]

    def log(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    # ---- its database, for tests that read or write it behind the API's back ----
    def sql(self, query, params=()):
        """Run one statement (`?` placeholders) in its own transaction; the rows."""
        return self.sql_many(query, [params])

    def sql_many(self, query, rows):
        """Run one statement once per params tuple in one transaction; the last rows."""
        db = _connect(self.database)
        try:
            cur = db.cursor()
            if PG:  # psycopg2 says %s, and a literal % is %%
                query = query.replace("%", "%%").replace("?", "%s")
            out = []
            for params in rows:
                cur.execute(query, params)
                out = cur.fetchall() if cur.description else []
            db.commit()
            return out
        finally:
            db.close()


def _connect(database):
    if PG:
        import psycopg2  # python3-psycopg2 (scripts/packages.txt)
        return psycopg2.connect(database)
    return sqlite3.connect(database.removeprefix("sqlite:"), timeout=30)


def database_of(workdir):
    """The database of the API(s) started in workdir: its SQLite file, or a new
    PostgreSQL database made on the first start there and kept (a restart in
    the same workdir finds its data again)."""
    if not PG:
        return "sqlite:" + os.path.join(workdir, "imperium.db")
    path = os.path.join(workdir, "database.url")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(pgutil.new_database())
    with open(path) as f:
        return f.read().strip()


def start_api(workdir, extra_args=(), database=None):
    """imperium-api on workdir (its token file, log) and `database`, or the
    `--database URL` of extra_args, or else database_of(workdir)."""
    port = free_port()
    extra_args = list(extra_args)
    if "--database" in extra_args:
        i = extra_args.index("--database")
        database = extra_args[i + 1]
        del extra_args[i:i + 2]
    database = database or database_of(workdir)
    logpath = os.path.join(workdir, "api.log")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    with open(logpath, "w") as log:
        proc = subprocess.Popen(
            [os.path.join(BIN, "imperium-api"), "--port", str(port),
             "--database", database,
             "--admin-token-file", os.path.join(workdir, "admin.token"), *extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("imperium-api exited early:\n" + open(logpath).read())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("imperium-api did not listen:\n" + open(logpath).read())
    return Api(workdir, port, proc, logpath, database)


def stop_api(api):
    """SIGTERM, then insist on a clean exit and a clean sanitizer report."""
    if not stop_proc(api.proc):
        pytest.fail("imperium-api did not stop on SIGTERM")
    log = api.log()
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in log, "sanitizer report in imperium-api log:\n" + log[-6000:]
    assert api.proc.returncode == 0, f"imperium-api exit code {api.proc.returncode}:\n{log[-3000:]}"


@contextlib.contextmanager
def api_in_a_tempdir():
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        a = start_api(d)
        try:
            yield a
        finally:
            stop_api(a)


@pytest.fixture(scope="session", autouse=True)
def pg_cluster():
    """With IMPERIUM_TEST_DB=postgresql: the session's cluster, removed at the
    end even when tests failed (pgutil also removes it at exit)."""
    if not PG:
        yield None
        return
    try:
        yield pgutil.cluster()
    finally:
        pgutil.shutdown()


@pytest.fixture(scope="module")
def api():
    """One API per test module: tests create their own uniquely named objects."""
    with api_in_a_tempdir() as a:
        yield a


@pytest.fixture
def fresh_api():
    """An API of its own for tests that need an empty database."""
    with api_in_a_tempdir() as a:
        yield a


@pytest.fixture
def kratos(api):
    """A customer with one container on a server it does not own, and two
    distros: the quickstart's starting point."""
    auth, info = api.new_customer(company="God of war S.r.l.", vat="01234567890")
    server = api.new_server()
    uid = api.new_container(auth[0], server["name"])
    d1 = api.new_distro("Precise Pangolin - Ubuntu 12.04 LTS (64 bit)")
    d2 = api.new_distro("Saucy Salamander - Ubuntu 13.10 (64 bit)")
    return {"auth": auth, "info": info, "server": server, "uid": uid, "distros": [d1, d2]}


@pytest.fixture(scope="session")
def ssh_keys():
    """Three real OpenSSH public keys (ssh-keygen)."""
    keys = []
    with tempfile.TemporaryDirectory(prefix="imperium-keys-") as d:
        for i, kind in enumerate(("ed25519", "rsa", "ecdsa")):
            path = os.path.join(d, f"k{i}")
            subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"key{i}@test",
                            "-f", path], check=True)
            with open(path + ".pub") as f:
                keys.append(f.read().strip())
    return keys


def curl(*args):
    """Run the real curl, as the quickstart does; returns (status, body)."""
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


# ---- nodes (tests/e2e/nodeutil.py), for the modules that start containers ----------

@pytest.fixture(scope="module")
def subreaper():
    """Like PID 1 on a real node: adopt the inits a stopped daemon leaves
    behind, and reap them when they die.  Modules that start daemons use it
    for all their tests (pytest.mark.usefixtures in their pytestmark)."""
    roots = [f"/sys/fs/cgroup/memory/{nodeutil.CGROUP_PARENT}",
             f"/sys/fs/cgroup/{nodeutil.CGROUP_PARENT}"]
    with nodeutil.subreaping(roots):
        yield


@contextlib.contextmanager
def cleaned_nodes():
    """The list a node fixture appends its nodes to: at the end each is
    cleaned up (a NetNode's namespace deleted), its base removed, and no
    mount of theirs may be left on the host."""
    nodes = []
    before = mount_lines()
    try:
        yield nodes
    finally:
        try:
            for n in nodes:
                n.cleanup()
        finally:
            for n in nodes:
                if hasattr(n, "close_ns"):
                    n.close_ns()
                shutil.rmtree(n.base, ignore_errors=True)
        leaked = nodeutil.leaked_mounts(before, nodeutil.BASE)
        assert not leaked, leaked


@pytest.fixture
def make_node(api):
    """make_node() -> a Node with its daemon running; make_node(api2, start=False);
    make_node(conf="key = value\n...") adds settings to its config first."""
    with cleaned_nodes() as nodes:
        def make(on_api=None, start=True, host_ok=True, conf=""):
            n = nodeutil.Node(on_api or api, nodeutil.new_base("daemon-"), host_ok=host_ok)
            nodes.append(n)
            if conf:
                with open(n.conf, "a") as f:
                    f.write(conf)
            if start:
                n.start()
            return n

        yield make


@pytest.fixture
def node_sshd(make_node):
    """(node, sshd): a started node and the test sshd in front of it
    (sshutil.Sshd); the host's /etc must be unchanged at the end."""
    import sshutil
    node = make_node()
    with sshutil.sshd_in_front(node) as sshd:
        yield node, sshd


@pytest.fixture(scope="session", autouse=True)
def stale_netns_swept():
    """Namespaces `imp-<pid>-<n>` of test runs that died go first."""
    nodeutil.sweep_stale_netns()


@pytest.fixture(scope="module")
def world():
    """The world namespace (nodeutil.World: bridge 203.0.113.1/24) that
    NetNodes are plugged into; deleted at the module's end."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with nodeutil.World() as w:
        yield w


@pytest.fixture
def make_net_node(api, world):
    """make_net_node(conf="", veth_prefix="imp", start=True) -> a NetNode
    (its daemon in a namespace of its own, networking on); every one is
    cleaned up and its namespace deleted at the test's end."""
    with cleaned_nodes() as nodes:
        def make(start=True, **kw):
            n = nodeutil.NetNode(api, nodeutil.new_base("net-"), world, **kw)
            nodes.append(n)
            if start:
                n.start()
            return n

        yield make


@pytest.fixture
def make_router_net_node(api, world):
    """make_router_net_node(conf="", start=True) -> a RouterNetNode (issue 19:
    a NetNode with its HTTP router and `uplink = world0`); all are cleaned up
    (namespaces deleted) at the test's end, their logs printed (pytest shows
    them only for a failed test)."""
    with cleaned_nodes() as nodes:
        def make(start=True, **kw):
            n = nodeutil.RouterNetNode(api, nodeutil.new_base("lg-"), world, **kw)
            nodes.append(n)
            if start:
                n.start()
            return n

        yield make
        for n in nodes:
            print(f"---- node {n.address}:\n" + n.log()[-6000:])
            for root, _, files in os.walk(os.path.join(n.state, "legion")):
                for f in files:
                    if f.endswith(".log"):
                        print(f"{root}/{f}:", open(os.path.join(root, f)).read()[-8000:])


@pytest.fixture(scope="module")
def host_distro(api):
    return api.new_distro(unique("host-distro-"), path="/")


@pytest.fixture(scope="module")
def keypairs():
    """Four ed25519 key pairs: [(private path, public line)]."""
    d = tempfile.mkdtemp(prefix="imperium-ssh-keys-")
    out = []
    for i in range(4):
        path = os.path.join(d, f"k{i}")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"k{i}@test",
                        "-f", path], check=True)
        with open(path + ".pub") as f:
            out.append((path, f.read().strip()))
    yield out
    shutil.rmtree(d, ignore_errors=True)
