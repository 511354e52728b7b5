#!/usr/bin/python3
"""bench/bench.py - the `make bench` harness (docs/PERFORMANCE.md).

Starts everything itself (imperium-api on a temporary SQLite file, nginx,
imperium-node daemons with the host distro and the HTTP router, plain uWSGI
baselines) under <bin>/bench-run/ (not /tmp: inside a container /tmp is the
home's) on free loopback ports, measures, prints every figure next to its
baseline measured in the same run, and cleans up (daemons, containers,
cgroups, directories) even on failure or Ctrl-C.

    /usr/bin/python3 bench/bench.py --bin build [--only api,converge,...] [--quick]

Sections: api (read throughput, write latency), auth (a write during a
wrong-password flood), converge, start, vassal, router, https (the router's
TLS against nginx with the same certificate), netpolicy (the nft
table), network (link live, throughput between linked containers), sampling
(the node agent's CPU and RSS with 200 containers, metrics sampled every 60 s
and every 5 s, against no sampling), failover (10 kills of a Legion's Lord:
the time to the first answer on the floating address), db (reads and writes
on PostgreSQL beside SQLite, raw commits of both, two API instances on one
PostgreSQL database against one).  Needs root for everything but `api`,
`auth` and `db`."""

import argparse
import base64
import concurrent.futures
import ctypes
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The end-to-end tests' plain helpers (no pytest): ports, polling, /proc.
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import helpers  # noqa: E402
from helpers import free_port, proc_status, reap_orphans, stop_proc  # noqa: E402
from pgutil import pgtmp  # noqa: E402  (the one caller of scripts/pgtmp.sh)

WRK_LUA = os.path.join(ROOT, "bench", "wrk.lua")
SHORTCUTS = os.path.join(ROOT, "etc", "uwsgi", "shortcuts.ini")
NETTOOL = os.path.join(ROOT, "tests", "e2e", "nettool.py")  # TCP echo and prober
SECTIONS = ("api", "auth", "converge", "start", "vassal", "router", "https", "netpolicy",
            "network", "sampling", "failover", "db")
NO_ROOT = ("api", "auth", "db")  # sections that start no container
MARKER = ".imperium-bench"
EMPEROR_READY = b"*** starting uWSGI Emperor ***"

APP = '''def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "20")])
    return [b"Hello from the bench"]
'''


class BenchError(Exception):
    pass


def say(*a):
    print(*a, flush=True)


def pct(values, p):
    """The p-th percentile (nearest rank) of a list of numbers."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def wait_for(fn, timeout, what, interval=0.01):
    return helpers.wait_for(fn, timeout, what, interval, error=BenchError)


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


# ---- results ------------------------------------------------------------------

class Results:
    """Every figure with its baseline; printed as it comes and at the end."""

    def __init__(self):
        self.rows = []

    def add(self, section, name, ours, baseline, unit, base_what, target=None, ok=None,
            digits=1):
        ratio = ours / baseline if baseline else float("nan")
        row = dict(section=section, name=name, ours=ours, baseline=baseline, unit=unit,
                   base_what=base_what, ratio=ratio, target=target, ok=ok, digits=digits)
        self.rows.append(row)
        say("  " + self.line(row))

    @staticmethod
    def fmt(v, digits):
        if v != v:  # nan
            return "-"
        return f"{v:,.{digits}f}"

    def line(self, r):
        t = ""
        if r["target"]:
            t = f"  [target {r['target']}: {'met' if r['ok'] else 'NOT met'}]"
        return (f"{r['name']:<44} {self.fmt(r['ours'], r['digits']):>12} {r['unit']:<6}"
                f" baseline {self.fmt(r['baseline'], r['digits']):>12} ({r['base_what']})"
                f"  ratio {self.fmt(r['ratio'], 3)}x{t}")

    def summary(self):
        say("")
        say("=" * 30 + " summary: ours vs baseline (ratio = ours / baseline) " + "=" * 30)
        sec = None
        for r in self.rows:
            if r["section"] != sec:
                sec = r["section"]
                say(f"[{sec}]")
            say("  " + self.line(r))


# ---- processes and cleanup ------------------------------------------------------

class Cleanup:
    """A stack of undo actions, run in reverse order, each one guarded."""

    def __init__(self):
        self.actions = []

    def push(self, what, fn):
        self.actions.append((what, fn))

    def run(self):
        while self.actions:
            what, fn = self.actions.pop()
            try:
                fn()
            except BaseException as e:  # keep cleaning up whatever happens
                say(f"bench: cleanup: {what}: {e!r}")


def cpu_ns(pid):
    """CPU time of every thread of pid so far (schedstat: nanoseconds, not ticks)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def rss_kib(pid):
    return int(proc_status(pid)["VmRSS"].split()[0])


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s_stat(pid):
    """utime + stime of every thread of pid so far (/proc/<pid>/stat), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def prometheus(port):
    """{'name{labels}': value} of an imperium-node's metrics_listen."""
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    r.raise_for_status()
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


# ---- wrk ------------------------------------------------------------------------

def wrk(url, threads, conns, seconds, headers=(), method="GET", body=None, vary=False,
        wrap=()):
    """wrap: a command prefix wrk runs under (e.g. a mount namespace with its own
    /etc/hosts, so an https URL's name is the TLS server name)."""
    env = dict(os.environ, BENCH_METHOD=method, BENCH_BODY=body or "",
               BENCH_CTYPE="application/json" if body and body.startswith("{") else "")
    lua = WRK_LUA
    if vary:  # a different body per request: the row really changes each time
        # A file per call: the db section runs two wrk at once.
        fd, lua = tempfile.mkstemp(prefix=f"imperium-bench-{os.getpid()}-", suffix="-vary.lua")
        with open(WRK_LUA) as f, os.fdopen(fd, "w") as out:
            out.write(f.read())
            out.write('\nlocal n = 0\nrequest = function()\n  n = n + 1\n'
                      '  return wrk.format(nil, nil, nil, string.gsub(wrk.body, "#", n))\n'
                      'end\n')
    cmd = [*wrap, "wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s",
           "-s", lua]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    finally:
        if vary:
            os.unlink(lua)
    for line in p.stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            d = json.loads(line[len("BENCH-JSON "):])
            d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
            d["errors"] = sum(d[k] for k in ("connect_errors", "read_errors", "write_errors",
                                             "status_errors", "timeouts"))
            return d
    raise BenchError(f"wrk gave no figures ({' '.join(cmd)}):\n{p.stdout}\n{p.stderr}")


def wrk_line(what, d, closes=False):
    """closes: the server closes the connection after each answer (uWSGI without
    keep-alive), which wrk counts as a read error; only the others count."""
    n = d["errors"] - (d["read_errors"] if closes else 0)
    errs = f", {n} errors/non-2xx" if n else ""
    if closes:
        errs += f", {d['read_errors']} connections closed by the server"
    say(f"    {what}: {d['rps']:,.0f} req/s, p50 {d['p50_us'] / 1000:.2f} ms, "
        f"p99 {d['p99_us'] / 1000:.2f} ms, max {d['max_us'] / 1000:.1f} ms "
        f"({d['requests']} requests{errs})")


# ---- the API --------------------------------------------------------------------

class Api:
    def __init__(self, bench, name="api", extra=(), database=None):
        """database: a URL (default a new SQLite file in the API's directory)."""
        self.dir = os.path.join(bench.run_dir, name)
        os.makedirs(self.dir)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logpath = os.path.join(self.dir, "api.log")
        token_file = os.path.join(self.dir, "admin.token")
        with open(self.logpath, "w") as log:
            self.proc = subprocess.Popen(
                [os.path.join(bench.bin, "imperium-api"), "--port", str(self.port),
                 "--database", database or "sqlite:" + os.path.join(self.dir, "imperium.db"),
                 "--admin-token-file", token_file, *bench.api_args, *extra],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        bench.cleanup.push("stop imperium-api", lambda: stop_proc(self.proc))

        def up():
            if self.proc.poll() is not None:
                raise BenchError("imperium-api exited at start:\n" + self.log()[-3000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        wait_for(up, 20, "imperium-api to listen", 0.05)
        with open(token_file) as f:
            self.token = f.read().strip()
        self.s = requests.Session()

    def log(self):
        return read_bytes(self.logpath).decode(errors="replace")

    def admin(self, method, path, body=None, expect=(200, 201)):
        r = self.s.request(method, self.base + "/admin" + path, json=body, timeout=60,
                           headers={"Authorization": "Bearer " + self.token})
        if r.status_code not in expect:
            raise BenchError(f"{method} /admin{path}: {r.status_code} {r.text}")
        return r.json() if r.text else None

    def call(self, method, path, auth, body=None, expect=(200, 201)):
        r = self.s.request(method, self.base + "/api" + path, json=body, auth=auth, timeout=60)
        if r.status_code not in expect:
            raise BenchError(f"{method} /api{path}: {r.status_code} {r.text}")
        return r.json()

    def customer(self, name, password="bench-secret"):
        self.admin("POST", "/customers", {"username": name, "password": password,
                                          "company": "Bench S.r.l."})
        return (name, password)

    def server(self, name, address, owner=None):
        body = {"name": name, "address": address, "memory": 1000000, "storage": 10000000}
        if owner:
            body["owner"] = owner
        return self.admin("POST", "/servers", body)

    def host_distro(self):
        """A distro that is the host's root (as the e2e tests use); its id."""
        return self.admin("POST", "/distros", {"name": "host (bench)", "path": "/"})["id"]

    def reader(self, distro):
        """A customer with one container to read, on a server of its own."""
        auth = self.customer(f"reader{os.getpid()}")
        srv = self.server("bench-api", "198.51.100.200")
        uid = self.container(auth[0], srv["name"], "reader")
        self.call("POST", f"/containers/{uid}", auth, {"distro": distro,
                                                       "note": "a container to read"})
        return auth, uid

    def container(self, customer, server, name, memory=64):
        return self.admin("POST", "/containers", {"customer": customer, "server": server,
                                                  "name": name, "memory": memory,
                                                  "storage": 1000})["uid"]


# ---- a node ---------------------------------------------------------------------

class Node:
    """An imperium-node daemon for a server of its own, in a directory of its
    own under the run dir, with the host distro and (optionally) a router."""

    def __init__(self, bench, api, name, router=False, netns=False):
        """netns: the daemon runs in a network namespace of its own with
        networking on (each container gets its veth); otherwise it runs in
        the host's namespace with `network = off` (only lo)."""
        self.bench, self.api, self.name = bench, api, name
        self.ns = self.relay = None
        self.wrap = []
        if netns:
            self.ns = helpers.Netns()
            self.relay = helpers.Relay(self.ns, api.port)
            self.wrap = self.ns.nsenter()
        self.base = os.path.join(bench.run_dir, name)
        os.makedirs(self.base)
        os.chmod(self.base, 0o755)
        self.state = os.path.join(self.base, "state")
        self.containers = os.path.join(self.base, "containers")
        self.conf = os.path.join(self.base, "node.conf")
        self.logpath = os.path.join(self.base, "node.log")
        self.proc = None
        self.uids = []
        self.cgroup_parent = f"imperium-bench-{os.getpid()}-{name}"
        self.auth = api.customer(f"bench{os.getpid()}{name}")
        n = len(bench.nodes) + 1
        self.server = api.server(f"bench-{name}", f"198.51.100.{n}", owner=self.auth[0])
        self.router_port = free_port() if router else None
        with open(self.conf, "w") as f:
            f.write(f"# imperium-node for the bench ({name})\n"
                    f"api_url = {api.base}\n"
                    f"server_name = {self.server['name']}\n"
                    f"secret = {self.server['node_secret']}\n"
                    f"state_dir = {self.state}\n"
                    f"containers_dir = {self.containers}\n"
                    f"shortcuts = {SHORTCUTS}\n"
                    f"cgroup_parent = {self.cgroup_parent}\n"
                    f"distro_host_ok = true\n"
                    f"stop_timeout = 5\n"
                    f"log_level = info\n"
                    f"network = {'on' if netns else 'off'}\n")
            if router:
                f.write(f"router_http = 127.0.0.1:{self.router_port}\n")
        bench.nodes.append(self)
        bench.cleanup.push(f"node {name}", self.teardown)

    def log(self):
        return read_bytes(self.logpath).decode(errors="replace")

    def configure(self, extra):
        """The node's config as written at creation, plus `extra` lines
        (for the daemon's next start)."""
        if not hasattr(self, "conf_base"):
            with open(self.conf) as f:
                self.conf_base = f.read()
        with open(self.conf, "w") as f:
            f.write(self.conf_base + extra)

    def start(self):
        offset = len(read_bytes(self.logpath))
        t0 = time.monotonic()
        with open(self.logpath, "a") as log:
            self.proc = subprocess.Popen([*self.wrap, os.path.join(self.bench.bin,
                                                                   "imperium-node"),
                                          "run", "--config", self.conf], stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for(lambda: "node state received" in self.log()[offset:] or self.proc.poll()
                 is not None, 30, "the node's first state")
        if self.proc.poll() is not None:
            raise BenchError(f"imperium-node ({self.name}) exited:\n{self.log()[-3000:]}")
        return t0

    def stop(self):
        if self.proc:
            stop_proc(self.proc)
            self.proc = None

    def teardown(self):
        try:
            self.stop()
        finally:
            subprocess.run([*self.wrap, os.path.join(self.bench.bin, "imperium-node"),
                            "stop-all", "--config", self.conf], capture_output=True,
                           timeout=120)
            kill_leftovers(self.uids, self.cgroup_parent)
            reap_orphans()
            if self.ns:
                self.relay.close()
                self.ns.close()

    def new_container(self, distro, memory=64):
        uid = self.api.container(self.auth[0], self.server["name"],
                                 f"b{len(self.uids)}", memory=memory)
        self.uids.append(uid)
        self.api.call("POST", f"/containers/{uid}", self.auth, {"distro": distro})
        return uid

    def home(self, uid):
        return os.path.join(self.containers, str(uid))

    def run_containers(self, n):
        """n new containers made startable (the bench key), once all run."""
        uids = [self.new_container(self.bench.host_distro) for _ in range(n)]
        for uid in uids:
            self.api.call("POST", f"/containers/{uid}", self.auth,
                          {"ssh_keys": [self.bench.ssh_key()]})
        for uid in uids:
            wait_for(lambda: self.emperor_ready(uid), 30, f"container {uid}")
        return uids

    def reboot(self, uid):
        """ms from a `reboot` call to the node having applied it: a new
        generation in state.json and a new live init."""
        before = self.state_of(uid)
        self.api.call("POST", f"/containers/{uid}", self.auth, {"reboot": True})
        t0 = time.monotonic()

        def applied():
            st = self.state_of(uid)
            return (st and st.get("generation", 0) > before["generation"] and
                    st.get("pid") != before["pid"] and os.path.exists(f"/proc/{st['pid']}"))
        wait_for(applied, 30, f"container {uid} restarted", 0.001)
        return (time.monotonic() - t0) * 1000

    def ip_of(self, uid):
        return self.api.call("GET", f"/containers/{uid}", self.auth)["ip"]

    def in_container(self, uid):
        """The command prefix that runs a program (as root, with the host's
        files) in the container's network namespace."""
        return ["nsenter", f"--net=/proc/{self.state_of(uid)['pid']}/ns/net"]

    def emperor_ready(self, uid):
        return EMPEROR_READY in read_bytes(os.path.join(self.home(uid), "logs", "emperor.log"))

    def state_of(self, uid):
        try:
            with open(os.path.join(self.state, str(uid), "state.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def vassal(self, uid, name, text, files=()):
        home = self.home(uid)
        for fname, content in files:
            p = os.path.join(home, fname)
            with open(p, "w") as f:
                f.write(content)
            os.chown(p, uid, uid)
        tmp = os.path.join(home, "vassals", f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.chown(tmp, uid, uid)
        os.rename(tmp, os.path.join(home, "vassals", name))
        return time.monotonic()

    def router_get(self, host, timeout=2):
        c = http.client.HTTPConnection("127.0.0.1", self.router_port, timeout=timeout)
        try:
            c.request("GET", "/", headers={"Host": host})
            r = c.getresponse()
            r.read()
            return r.status
        except OSError:
            return 0
        finally:
            c.close()


def kill_leftovers(uids, cgroup_parent):
    """Belt and braces after stop-all: no process of ours, no cgroup."""
    wanted = {str(u) for u in uids}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if proc_status(p)["Uid"].split()[0] in wanted:
                os.kill(int(p), signal.SIGKILL)
        except (OSError, KeyError):
            pass
    for root in (f"/sys/fs/cgroup/memory/{cgroup_parent}", f"/sys/fs/cgroup/{cgroup_parent}"):
        if not os.path.isdir(root):
            continue
        for d in sorted((os.path.join(root, x) for x in os.listdir(root)
                         if os.path.isdir(os.path.join(root, x))), reverse=True) + [root]:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


# ---- the bench ------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.quick = args.quick
        self.api_args = args.api_args.split()
        self.dur = args.seconds or (3 if args.quick else 10)
        self.results = Results()
        self.cleanup = Cleanup()
        self.nodes = []
        self._api = None
        self._node = None
        self.keys = None
        self.base_dir = os.path.join(self.bin, "bench-run")
        os.makedirs(self.base_dir, exist_ok=True)
        self.forget_old_runs()
        self.run_dir = tempfile.mkdtemp(prefix="run-", dir=self.base_dir)
        os.chmod(self.run_dir, 0o755)
        open(os.path.join(self.run_dir, MARKER), "w").close()
        self.cleanup.push("remove the run directory", self.remove_run_dir)

    def forget_old_runs(self):
        """A run killed with SIGKILL cleaned nothing: stop its containers
        (and delete the network namespaces of dead runs)."""
        helpers.sweep_stale_netns()
        for d in os.listdir(self.base_dir):
            path = os.path.join(self.base_dir, d)
            if not os.path.exists(os.path.join(path, MARKER)):
                continue
            for sub in os.listdir(path):
                conf = os.path.join(path, sub, "node.conf")
                if os.path.exists(conf):
                    subprocess.run([os.path.join(self.bin, "imperium-node"), "stop-all",
                                    "--config", conf], capture_output=True, timeout=120)
            shutil.rmtree(path, ignore_errors=True)

    def remove_run_dir(self):
        if self.args.keep:
            say(f"bench: kept {self.run_dir}")
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def api(self):
        if not self._api:
            # No raise limit: the write figures (2) raise one container's
            # alarms as fast as 16 clients can, to time the write path.
            self._api = Api(self, extra=["--alarm-raises", "0"])
            self.host_distro = self._api.host_distro()
        return self._api

    def ssh_key(self):
        """The bench's public key (made once): what makes a container startable."""
        if not self.keys:
            self.keys = ssh_key(self.run_dir)
        return self.keys

    def node(self):
        """The shared node (router on) with a few running containers."""
        if not self._node:
            api = self.api()
            self._node = Node(self, api, "node", router=True)
            self._node.start()
            self.running = self._node.run_containers(4)
        return self._node

    # ---- 1 + 2: the API ---------------------------------------------------------
    def read_rounds(self, targets, basic):
        """wrk -t2 -c64 GET on each (what, url) of `targets` in turn, `rounds`
        times, after a 1 s warm-up of each (password cache, statements); the
        medians {rps, p50, p99 (ms)} per target, in order.  Interleaved and
        medians: the VM's neighbours move single runs by +-20 %, on all sides."""
        rounds = 1 if self.quick else 3
        for _, url in targets:
            wrk(url, 2, 64, 1, [basic])
        runs = [[] for _ in targets]
        for _ in range(rounds):
            for (what, url), mine in zip(targets, runs):
                mine.append(wrk(url, 2, 64, self.dur, [basic]))
                wrk_line(what, mine[-1])
                if mine[-1]["errors"]:
                    raise BenchError(f"errors under load on {url}: {mine[-1]}")

        def med(mine, key, scale=1):
            return statistics.median(r[key] for r in mine) / scale
        return [dict(rps=med(m, "rps"), p50=med(m, "p50_us", 1000), p99=med(m, "p99_us", 1000),
                     n=f" (median of {rounds})" if rounds > 1 else "") for m in runs]

    def read_vs_nginx(self, label, url, nginx, file, basic):
        ours, base = self.read_rounds(
            [(f"imperium-api {label}", url),
             (f"nginx        GET /{file} ({len(nginx.files[file])} bytes)", nginx.url(file))],
            basic)
        n = ours["n"]
        self.results.add("api read", f"{label} req/s{n}", ours["rps"], base["rps"], "req/s",
                         "nginx, static file", ">= 0.5x", ours["rps"] >= 0.5 * base["rps"],
                         digits=0)
        self.results.add("api read", f"{label} p50{n}", ours["p50"], base["p50"], "ms",
                         "nginx p50", digits=2)
        self.results.add("api read", f"{label} p99{n}", ours["p99"], base["p99"], "ms",
                         "nginx p99", "< 5 ms", ours["p99"] < 5, digits=2)

    def write_load(self, what, url, basic, body, threads=2, conns=16):
        """wrk POSTing `body` (a different one each request: `#` numbered) to
        url with `conns` clients for the window, after a 1 s warm-up; fails on
        any error or non-2xx."""
        wrk(url, threads, conns, 1, [basic], "POST", body, vary=True)
        d = wrk(url, threads, conns, self.dur, [basic], "POST", body, vary=True)
        wrk_line(what, d)
        if d["errors"]:
            raise BenchError(f"errors under load on {url}: {d}")
        return d

    def bench_api(self):
        say("== 1. API read throughput: wrk -t2 -c64, imperium-api vs nginx serving the "
            "same JSON body as a static file")
        api = self.api()
        auth, uid = api.reader(self.host_distro)
        basic = basic_auth(auth)
        paths = {"container": f"/api/containers/{uid}", "me": "/api/me/"}
        nginx = Nginx(self)
        for name, path in paths.items():
            r = api.s.get(api.base + path, auth=auth, timeout=30)
            if r.status_code != 200:
                raise BenchError(f"GET {path}: {r.status_code} {r.text}")
            nginx.put(name + ".json", r.content)
        nginx.start()
        for name, path in paths.items():
            self.read_vs_nginx(f"GET {path.replace(str(uid), '<uid>')}", api.base + path,
                               nginx, name + ".json", basic)
        # The same GET on an API whose response cache is off: what the first
        # read after a write costs (the database, authentication, JSON).
        cold = Api(self, "api-nocache", ["--response-cache-mb", "0"])
        _, cuid = cold.reader(cold.host_distro())
        self.read_vs_nginx("GET /api/containers/<uid>, cache off",
                           f"{cold.base}/api/containers/{cuid}", nginx, "container.json", basic)
        nginx.stop()

        say("== 2. API write latency: 16 concurrent clients (wrk -t2 -c16), SQLite durable "
            "(WAL, synchronous=FULL), vs raw SQLite durable commits by 16 threads")
        sq = sqlite_commits(os.path.join(api.dir, "raw.db"), 16, self.dur)
        say(f"    raw SQLite commits: {sq['rate']:,.0f}/s, p50 {sq['p50']:.2f} ms, "
            f"p99 {sq['p99']:.2f} ms ({sq['n']} commits)")
        writes = {
            "POST /api/containers/<uid> note": (f"/api/containers/{uid}",
                                                '{"note": "bench note #"}'),
            "POST /api/alarms/raise/<uid>": (f"/api/alarms/raise/{uid}",
                                             "bench alarm number #"),
        }
        for name, (path, body) in writes.items():
            d = self.write_load(name, api.base + path, basic, body)
            self.results.add("api write", f"{name} p50", d["p50_us"] / 1000, sq["p50"], "ms",
                             "raw SQLite commit p50", digits=2)
            self.results.add("api write", f"{name} p99", d["p99_us"] / 1000, sq["p99"], "ms",
                             "raw SQLite commit p99", digits=2)
            self.results.add("api write", f"{name} writes/s", d["rps"], sq["rate"], "/s",
                             "raw SQLite commits/s", digits=0)

    # ---- D: PostgreSQL beside SQLite -----------------------------------------------
    def bench_db(self):
        say("== D. PostgreSQL beside SQLite, same run: the PostgreSQL cluster is "
            "scripts/pgtmp.sh's (fsync, synchronous_commit, full_page_writes off: not "
            "durable), SQLite is durable (WAL, synchronous=FULL)")
        say(f"    load average at the start: {os.getloadavg()[0]:.2f}")
        pg = PgCluster(self)
        apis = {}  # (backend, cache) -> (api, the reader's container uid, database URL)
        for backend in ("SQLite", "PostgreSQL"):
            for cache in ("on", "off"):
                db = pg.database(f"bench_cache_{cache}") if backend == "PostgreSQL" else None
                api = Api(self, f"db-{backend.lower()}-cache-{cache}",
                          [] if cache == "on" else ["--response-cache-mb", "0"], db)
                auth, uid = api.reader(api.host_distro())
                apis[backend, cache] = (api, uid, db)
        basic = basic_auth(auth)  # every reader has the same name and password
        self.db_reads(apis, basic)
        one = self.db_writes(apis, basic, pg)
        self.db_two_instances(apis, basic, one)
        say(f"    load average at the end: {os.getloadavg()[0]:.2f}")

    def db_reads(self, apis, basic):
        say("  reads: wrk -t2 -c64 GET /api/containers/<uid>, SQLite and PostgreSQL in turns")
        for cache in ("on", "off"):
            sq, pg = self.read_rounds(
                [(f"SQLite     cache {cache}",
                  f"{apis['SQLite', cache][0].base}/api/containers/{apis['SQLite', cache][1]}"),
                 (f"PostgreSQL cache {cache}",
                  f"{apis['PostgreSQL', cache][0].base}/api/containers/"
                  f"{apis['PostgreSQL', cache][1]}")], basic)
            what = f"PostgreSQL GET <uid>, cache {cache}"
            self.results.add("db read", f"{what} req/s{pg['n']}", pg["rps"], sq["rps"], "req/s",
                             "SQLite, same GET", digits=0)
            self.results.add("db read", f"{what} p50{pg['n']}", pg["p50"], sq["p50"], "ms",
                             "SQLite p50", digits=2)
            self.results.add("db read", f"{what} p99{pg['n']}", pg["p99"], sq["p99"], "ms",
                             "SQLite p99", digits=2)

    def db_writes(self, apis, basic, pg):
        """The note write on each backend (16 clients) and the raw commits of
        each (16 connections); the PostgreSQL write's wrk figures."""
        say("  writes: POST /api/containers/<uid> note, wrk -t2 -c16; raw one-row UPDATE "
            "commits by 16 connections")
        w = {}
        for backend in ("SQLite", "PostgreSQL"):
            api, uid, _ = apis[backend, "on"]
            w[backend] = self.write_load(f"{backend:<10} note", f"{api.base}/api/containers/{uid}",
                                         basic, '{"note": "bench note #"}')
        raw = {"SQLite": sqlite_commits(os.path.join(self.run_dir, "raw.db"), 16, self.dur),
               "PostgreSQL": pg_commits(self.run_dir, pg.database("bench_raw"), 16, self.dur)}
        for backend, r in raw.items():
            say(f"    raw {backend} commits: {r['rate']:,.0f}/s, p50 {r['p50']:.2f} ms, "
                f"p99 {r['p99']:.2f} ms ({r['n']} commits)")
        add = self.results.add
        pgw, sqw = w["PostgreSQL"], w["SQLite"]
        add("db write", "PostgreSQL note p50", pgw["p50_us"] / 1000, sqw["p50_us"] / 1000, "ms",
            "SQLite note p50", digits=2)
        add("db write", "PostgreSQL note p99", pgw["p99_us"] / 1000, sqw["p99_us"] / 1000, "ms",
            "SQLite note p99", digits=2)
        add("db write", "PostgreSQL note writes/s", pgw["rps"], sqw["rps"], "/s",
            "SQLite note writes/s", digits=0)
        for backend in ("PostgreSQL", "SQLite"):
            add("db write", f"{backend} note writes/s", w[backend]["rps"], raw[backend]["rate"],
                "/s", f"raw {backend} commits/s", digits=0)
        for key, unit, digits in (("p50", "ms", 2), ("p99", "ms", 2), ("rate", "/s", 0)):
            add("db write", f"raw PostgreSQL commit {key}", raw["PostgreSQL"][key],
                raw["SQLite"][key], unit, f"raw SQLite commit {key}", digits=digits)
        return pgw

    def db_two_instances(self, apis, basic, one):
        """Two APIs on one PostgreSQL database, 8 writing clients on each at
        once, against one API with 16 (`one`, measured just before)."""
        say("  two instances on one PostgreSQL database: wrk -t1 -c8 on each at once")
        a, uid, db = apis["PostgreSQL", "on"]
        b = Api(self, "db-postgresql-second", (), db)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(self.write_load, f"instance {n}",
                                f"{api.base}/api/containers/{uid}", basic,
                                f'{{"note": "bench note {n} #"}}', 1, 8)
                    for n, api in (("A", a), ("B", b))]
            two = [r.result() for r in runs]
        rate, p99 = sum(d["rps"] for d in two), max(d["p99_us"] for d in two) / 1000
        say(f"    together: {rate:,.0f} writes/s, p99 {p99:.2f} ms (the higher of the two)")
        self.results.add("db two instances", "2 instances x 8 clients: writes/s", rate,
                         one["rps"], "/s", "1 instance x 16 clients", digits=0)
        self.results.add("db two instances", "2 instances x 8 clients: p99 (higher)", p99,
                         one["p99_us"] / 1000, "ms", "1 instance x 16 clients", digits=2)

    # ---- 2b: password guessing ----------------------------------------------------
    def timed_writes(self, api, auth, until):
        """POST /api/me/ one after another (from 127.0.0.2, one keep-alive
        connection) until `until()`; the latencies in ms."""
        basic = basic_auth(auth).split(": ", 1)[1]
        c = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30,
                                       source_address=("127.0.0.2", 0))
        lat, n = [], 0
        try:
            while not until() or n < 20:
                n += 1
                body = json.dumps({"company": f"bench {n}"})
                t0 = time.monotonic()
                c.request("POST", "/api/me/", body=body,
                          headers={"Authorization": basic, "Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                lat.append((time.monotonic() - t0) * 1000)
                if r.status != 200:
                    raise BenchError(f"POST /api/me/ during the flood: {r.status}")
                time.sleep(0.01)
        finally:
            c.close()
        return lat

    def bench_auth(self):
        say("== 2b. A legitimate write during a 64-way wrong-password flood (wrk -t2 -c64 "
            "GET /api/me/ with a wrong password for an existing customer); the throttle "
            "is off, as if the flood came from many addresses: only the argon2 slots "
            "bound it")
        conf = os.path.join(self.run_dir, "auth-bench.conf")
        with open(conf, "w") as f:
            f.write("auth_user_failures = 0\nauth_address_failures = 0\n")
        api = Api(self, "api-auth", ["-c", conf])
        victim = api.customer(f"victim{os.getpid()}")
        writer = api.customer(f"writer{os.getpid()}")
        api.call("GET", "/me/", writer)  # its password is cached, like a client's
        base = self.timed_writes(api, writer, lambda: True)
        n_base = 200 if self.quick else 1000
        while len(base) < n_base:
            base += self.timed_writes(api, writer, lambda: True)
        wrong = "Authorization: Basic " + base64.b64encode(
            f"{victim[0]}:wrong".encode()).decode()
        flood = {}
        t = threading.Thread(target=lambda: flood.update(
            wrk(api.base + "/api/me/", 2, 64, self.dur, [wrong])))
        t.start()
        time.sleep(0.5)  # under way
        during = self.timed_writes(api, writer, lambda: not t.is_alive())
        t.join()
        wrk_line("wrong-password flood (all 401/429)", flood)
        say(f"    POST /api/me/: no flood p50 {pct(base, 50):.2f} ms p99 {pct(base, 99):.2f} ms; "
            f"during the flood p50 {pct(during, 50):.2f} ms p99 {pct(during, 99):.2f} ms, "
            f"max {max(during):.1f} ms ({len(during)} writes)")
        p99 = pct(during, 99)
        self.results.add("api auth", "POST /api/me/ p99, 64-way wrong-password flood", p99,
                         pct(base, 99), "ms", "the same write, no flood", "< 100 ms",
                         p99 < 100, digits=2)
        self.results.add("api auth", "POST /api/me/ p50, 64-way wrong-password flood",
                         pct(during, 50), pct(base, 50), "ms", "the same write, no flood",
                         digits=2)
        self.results.add("api auth", "wrong-password flood answered (401/429)", flood["rps"],
                         0, "req/s", "-", digits=0)

    # ---- 3: convergence ---------------------------------------------------------
    def bench_converge(self):
        n = 40 if self.quick else 200
        say(f"== 3. Convergence: {n} API changes (half reboot = restart, half ssh_keys = "
            "re-key), from the API's 200 to the node having applied it")
        node = self.node()
        api = self.api()
        restart, rekey = [], []
        for i in range(n):
            uid = self.running[i % len(self.running)]
            if i % 2 == 0:
                restart.append(node.reboot(uid))
            else:
                key = f"{self.ssh_key()} bench-change-{i}"
                api.call("POST", f"/containers/{uid}", node.auth, {"ssh_keys": [key]})
                t0 = time.monotonic()
                kpath = os.path.join(node.home(uid), ".ssh", "uwsgi_authorized_keys")
                wait_for(lambda: f"bench-change-{i}".encode() in read_bytes(kpath), 30,
                         f"container {uid} re-keyed", 0.001)
                rekey.append((time.monotonic() - t0) * 1000)
        both = restart + rekey
        for name, v in (("all changes", both), ("restart (reboot)", restart),
                        ("re-key (ssh_keys)", rekey)):
            say(f"    {name}: n={len(v)} p50 {pct(v, 50):.1f} ms, p99 {pct(v, 99):.1f} ms, "
                f"max {max(v):.1f} ms, mean {statistics.mean(v):.1f} ms")
        for name, v in (("all changes", both), ("restart", restart), ("re-key", rekey)):
            self.results.add("convergence", f"{name} p50", pct(v, 50), 15000, "ms",
                             "30 s poll: p50 15 s", "< 100 ms" if name == "all changes" else None,
                             pct(v, 50) < 100)
            self.results.add("convergence", f"{name} p99", pct(v, 99), 29700, "ms",
                             "30 s poll: p99 29.7 s",
                             "< 500 ms" if name == "all changes" else None, pct(v, 99) < 500)
            self.results.add("convergence", f"{name} max", max(v), 30000, "ms",
                             "30 s poll: max 30 s")

    # ---- netpolicy: the node's nft table -------------------------------------------
    def netpolicy_times(self, ns, n_containers, n_links, rounds):
        """ms to render and apply the node's table when one more link comes
        and goes, as the daemon does it (`imperium-node net-table --apply`,
        one process, timed inside), in namespace ns: the state alternates
        between n_links mutual links and n_links + 1."""
        def ip(i):
            k = i + 3  # uid 30001 + i has id i + 1; ips start at 10.0.0.3
            return f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"
        pairs, d = [], 1
        while len(pairs) < n_links + 1:
            pairs += [(i, (i + d) % n_containers) for i in range(n_containers)
                      if i < (i + d) % n_containers][:n_links + 1 - len(pairs)]
            d += 1
        paths = []
        for extra in (0, 1):
            cs = [{"uid": 30001 + i, "ip": ip(i), "links": []} for i in range(n_containers)]
            for a, b in pairs[:n_links + extra]:
                cs[a]["links"].append(30001 + b)
                cs[b]["links"].append(30001 + a)
            path = os.path.join(self.run_dir, f"netpolicy-{n_links}-{extra}.json")
            with open(path, "w") as f:
                json.dump({"version": str(extra), "containers": cs,
                           "server": {"name": "bench", "address": "203.0.113.2"}}, f)
            paths.append(path)
        conf = os.path.join(self.run_dir, "netpolicy.conf")
        with open(conf, "w") as f:
            f.write(f"api_url = http://127.0.0.1:1\nserver_name = bench\nsecret = x\n"
                    f"state_dir = {self.run_dir}/np-state\n"
                    f"containers_dir = {self.run_dir}/np-homes\nnft_table = impbench\n")
        node = os.path.join(self.bin, "imperium-node")
        states = [a for r in range(2 * rounds + 1) for a in ("--state", paths[r % 2])]
        p = subprocess.run([*ns.nsenter(), node, "net-table", "--config", conf, "--apply",
                            *states], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise BenchError(f"net-table: {p.stderr.strip()}")
        # The first line created the table; each other one is one more (or one less) link.
        return [float(line.split(" in ")[1].split()[0]) for line in p.stdout.splitlines()[1:]]

    def bench_netpolicy(self):
        rounds = 10 if self.quick else 30
        say("== N. One more link applied to the node's nft table as the daemon does it "
            "(render, then the elements' difference in one transaction), with 1,000 "
            "containers and 1,000 links, against 10 links; in a throw-away network namespace")
        with helpers.Netns() as ns:
            small = self.netpolicy_times(ns, 20, 10, rounds)
            big = self.netpolicy_times(ns, 1000, 1000, rounds)
        say(f"    10 links: p50 {pct(small, 50):.1f} ms; 1,000 links: p50 {pct(big, 50):.1f} ms, "
            f"p99 {pct(big, 99):.1f} ms")
        self.results.add("network", "one more link, 1,000 links p50", pct(big, 50),
                         pct(small, 50), "ms", "the same with 10 links p50",
                         # The kernel sees only the difference (2 set elements, ~0.1 ms at
                         # any size: no rule per link); what grows is rendering the whole
                         # state in C (sorting, text: ~1.5 us per link).
                         target="< 5 ms", ok=pct(big, 50) < 5)
        self.results.add("network", "one more link, 1,000 links p99", pct(big, 99),
                         pct(small, 99), "ms", "the same with 10 links p99")

    # ---- network: links and throughput between containers -----------------------
    def bench_network(self):
        rounds = 30
        secs, runs = (5, 1) if self.quick else (10, 3)
        say(f"== N2. Link live ({rounds} rounds): two running containers of one customer on "
            "a node in a network namespace of its own; from the second side's `link` call "
            "to the first TCP echo from A to B (a prober in A polls every 1 ms), then unlink")
        if not shutil.which("iperf3"):
            raise BenchError("iperf3 is missing: scripts/deps.sh bench/packages.txt installs it")
        node = Node(self, self.api(), "net", netns=True)
        node.start()
        a, b = node.run_containers(2)
        ip_b = node.ip_of(b)
        echo = self.spawn(node.in_container(b) + ["python3", NETTOOL, "srv", ip_b, "7000"])
        if echo.stdout.readline().strip() != "listening":
            raise BenchError("the echo server in container B did not start")
        prober = self.spawn(node.in_container(a) + ["python3", NETTOOL, "watch", ip_b, "7000"],
                            stdin=subprocess.PIPE)

        def tell(what):  # "up" or "down": the prober starts trying at once
            prober.stdin.write(what + "\n")
            prober.stdin.flush()

        def heard(what):  # when it saw it (time.monotonic(), this machine's clock)
            out = prober.stdout.readline().split()
            if len(out) != 2 or out[0] != what:
                raise BenchError(f"the prober in container A, waiting for {what}: {out}")
            return float(out[1])
        api = self.api()
        api.call("POST", f"/containers/{a}", node.auth, {"link": b})  # one side: nothing yet
        live, calls = [], []
        for _ in range(rounds):
            tell("down")
            heard("down")
            tell("up")
            t0 = time.monotonic()
            api.call("POST", f"/containers/{b}", node.auth, {"link": a})
            calls.append((time.monotonic() - t0) * 1000)
            live.append((heard("up") - t0) * 1000)
            api.call("POST", f"/containers/{b}", node.auth, {"unlink": a})
        # The first round is A's first packet to B: its ARP request too.
        say(f"    link live: p50 {pct(live, 50):.1f} ms, p99 {pct(live, 99):.1f} ms, "
            f"max {max(live):.1f} ms; the first round {live[0]:.1f} ms; the link call "
            f"itself (its answer) p50 {pct(calls, 50):.1f} ms")

        say(f"== N3. TCP throughput: iperf3 -t {secs} ({runs} round(s), the median) from "
            "container A to linked container B, vs the two ends of a plain veth pair in two "
            "throw-away network namespaces")
        api.call("POST", f"/containers/{b}", node.auth, {"link": a})
        tell("up")
        heard("up")
        ours = [self.iperf(node.in_container(b), node.in_container(a), ip_b, secs)
                for _ in range(runs)]
        stop_proc(prober, timeout=5)
        stop_proc(echo, timeout=5)
        # The baseline of link live: what the public platform did on a link.
        # Each on a settled container, as in 3 (an Emperor that has just
        # started exits at once on SIGTERM: back to back, restarts look fast).
        restart = []
        for _ in range(3 if self.quick else 5):
            time.sleep(1)
            restart.append(node.reboot(a))
        node.teardown()
        say(f"    a restart on the same node (what the public platform did on a link): "
            f"p50 {pct(restart, 50):.0f} ms")
        self.results.add("network", "link call to first packet p50", pct(live, 50),
                         pct(restart, 50), "ms", "a restart: the public platform rebooted",
                         target="< 100 ms", ok=pct(live, 50) < 100)
        self.results.add("network", "link call to first packet p99", pct(live, 99),
                         pct(restart, 50), "ms", "a restart p50", target="< 100 ms",
                         ok=pct(live, 99) < 100)
        with helpers.Netns() as n1, helpers.Netns() as n2:
            # Made in n1, the peer straight into n2: nothing in this namespace.
            n1.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", n2.name)
            for ns, dev, addr in ((n1, "v0", "192.0.2.1"), (n2, "v1", "192.0.2.2")):
                ns.ip("addr", "add", f"{addr}/24", "dev", dev)
                ns.ip("link", "set", dev, "up")
            base = [self.iperf(n2.nsenter(), n1.nsenter(), "192.0.2.2", secs)
                    for _ in range(runs)]
        o, b_ = statistics.median(ours), statistics.median(base)
        say(f"    linked containers: {o:.2f} Gbit/s; plain veth pair: {b_:.2f} Gbit/s")
        self.results.add("network", "TCP A to linked B", o, b_, "Gbit/s",
                         "plain veth pair, two namespaces", target=">= 0.8x", ok=o >= 0.8 * b_,
                         digits=2)

    def spawn(self, cmd, stdin=None):
        """A helper process of this section (text pipes), stopped at cleanup."""
        p = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, text=True)
        self.cleanup.push(f"stop {cmd[-4:]}", lambda: stop_proc(p, timeout=5))
        return p

    def iperf(self, server_ns, client_ns, host, secs):
        """Gbit/s received by an iperf3 server (one test) on host in
        server_ns from a client in client_ns."""
        srv = self.spawn(server_ns + ["iperf3", "-s", "-1", "--forceflush", "-B", host,
                                      "-p", "5201"])
        try:
            wait_for(lambda: "listening" in srv.stdout.readline(), 10, "iperf3 -s")
            p = subprocess.run(client_ns + ["iperf3", "-c", host, "-p", "5201", "-t", str(secs),
                                            "-J"], capture_output=True, text=True,
                               timeout=secs + 30)
            if p.returncode != 0:
                raise BenchError(f"iperf3 -c {host}: {p.stdout[-500:]} {p.stderr[-500:]}")
            return json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
        finally:
            stop_proc(srv, timeout=5)

    # ---- 4: container start -----------------------------------------------------
    def start_one_at_a_time(self, nodes, n):
        """n containers of each node started one after the other, the nodes
        taking turns (so a slow moment of this shared machine hits both
        figures alike): per node, the ms from each ssh_keys call (it makes
        the container startable) to its Emperor running.  They are stopped
        again at the end (they would only add noise)."""
        uids = [[node.new_container(self.host_distro) for _ in range(n)] for node in nodes]
        times = [[] for _ in nodes]
        for i in range(n):
            for node, mine, took in zip(nodes, uids, times):
                uid = mine[i]
                self.api().call("POST", f"/containers/{uid}", node.auth,
                                {"ssh_keys": [self.ssh_key()]})
                t0 = time.monotonic()
                wait_for(lambda: node.emperor_ready(uid), 30, f"container {uid}", 0.001)
                took.append((time.monotonic() - t0) * 1000)
        for node, mine in zip(nodes, uids):
            for uid in mine:
                self.api().call("POST", f"/containers/{uid}", node.auth, {"ssh_keys": []})
        return times

    def bench_start(self):
        n_seq = 10 if self.quick else 50
        n_all = 50 if self.quick else 200
        say(f"== 4a. Container start, one at a time ({n_seq}): from the ssh_keys call "
            "(it makes the container startable) to its Emperor running, vs a plain "
            "`uwsgi --emperor` started directly")
        node = self.node()
        api = self.api()
        # 4a' is measured in turns with 4a: a node in a network namespace of
        # its own, each container with its veth, uwsgi0 and /32 route.
        netnode = Node(self, api, "netstart", netns=True)
        netnode.start()
        ours, net = self.start_one_at_a_time([node, netnode], n_seq)
        netnode.teardown()
        plain = plain_emperors(self, n_seq, at_once=False)
        say(f"    imperium: p50 {pct(ours, 50):.1f} ms, p99 {pct(ours, 99):.1f} ms, "
            f"max {max(ours):.1f} ms")
        say(f"    plain uwsgi --emperor: p50 {pct(plain, 50):.1f} ms, "
            f"p99 {pct(plain, 99):.1f} ms")
        self.results.add("container start", "one container p50", pct(ours, 50),
                         pct(plain, 50), "ms", "plain uwsgi --emperor p50")
        self.results.add("container start", "one container p99", pct(ours, 99),
                         pct(plain, 99), "ms", "plain uwsgi --emperor p99")
        say(f"== 4a'. The same with networking ({n_seq}, in turns with 4a): a node in a "
            "network namespace of its own, each container with its veth, uwsgi0 and /32 route")
        say(f"    imperium with networking: p50 {pct(net, 50):.1f} ms, "
            f"p99 {pct(net, 99):.1f} ms, max {max(net):.1f} ms")
        self.results.add("container start", "one container with network p50", pct(net, 50),
                         pct(plain, 50), "ms", "plain uwsgi --emperor p50", target="< 4x",
                         ok=pct(net, 50) < 4 * pct(plain, 50))
        self.results.add("container start", "one container with network p99", pct(net, 99),
                         pct(plain, 99), "ms", "plain uwsgi --emperor p99")
        self.results.add("container start", "with network vs without, p50", pct(net, 50),
                         pct(ours, 50), "ms", "4a, the same turns without network")

        say(f"== 4b. {n_all} containers at once: a node daemon started with {n_all} "
            "startable containers, until every Emperor runs; then the daemon idle")
        bulk = Node(self, api, "bulk")
        bulk_uids = [bulk.new_container(self.host_distro, memory=32) for _ in range(n_all)]
        # Idle with nothing to run: the reference for the idle figures.
        bulk.start()
        idle0 = idle_usage(bulk.proc.pid, 3 if self.quick else 10)
        bulk.stop()
        body = {"ssh_keys": [self.ssh_key()]}
        for uid in bulk_uids:
            api.call("POST", f"/containers/{uid}", bulk.auth, body)
        t0 = bulk.start()
        pending = set(bulk_uids)
        times = []
        deadline = t0 + 300
        while pending:
            for uid in list(pending):
                if bulk.emperor_ready(uid):
                    pending.discard(uid)
                    times.append((time.monotonic() - t0) * 1000)
            if time.monotonic() > deadline:
                raise BenchError(f"{len(pending)} containers still not running after 300 s")
            time.sleep(0.01)
        all_ms = max(times)
        plain_all = plain_emperors(self, n_all, at_once=True)
        say(f"    imperium: all {n_all} running after {all_ms:.0f} ms "
            f"(first {min(times):.0f} ms, p50 {pct(times, 50):.0f} ms)")
        say(f"    plain: {n_all} uwsgi --emperor spawned at once, all running after "
            f"{max(plain_all):.0f} ms")
        self.results.add("container start", f"{n_all} at once, all running", all_ms,
                         max(plain_all), "ms", f"{n_all} plain uwsgi --emperor at once")
        time.sleep(2)  # let the start-up reports settle
        idle = idle_usage(bulk.proc.pid, 3 if self.quick else 10)
        say(f"    node agent idle: {idle['cpu']:.2f}% CPU, {idle['rss']:,} KiB RSS with "
            f"{n_all} containers; {idle0['cpu']:.2f}% CPU, {idle0['rss']:,} KiB with none")
        self.results.add("container start", f"node agent idle CPU, {n_all} containers",
                         idle["cpu"], idle0["cpu"], "%CPU", "same daemon, 0 containers",
                         digits=3)
        self.results.add("container start", f"node agent RSS, {n_all} containers",
                         idle["rss"] / 1024, idle0["rss"] / 1024, "MiB",
                         "same daemon, 0 containers")
        say("    stopping the bulk node's containers")
        bulk.teardown()

    # ---- 5: vassal to traffic ---------------------------------------------------
    def bench_vassal(self):
        n = 3 if self.quick else 10
        say(f"== 5. Vassal to traffic ({n} vassals): from the vassal file's rename into "
            "vassals/ to the first 200 on its domain through the router")
        node = self.node()
        api = self.api()
        uid = self.running[0]
        doms = [f"v{i}.bench{os.getpid()}.org" for i in range(n)]
        for d in doms:
            api.admin("POST", "/domains", {"name": d, "customer": node.auth[0]})
        keys = os.path.join(node.state, "router", "keys")
        wait_for(lambda: all(os.path.exists(os.path.join(keys, d + ".pem")) for d in doms), 10,
                 "the router keys of the bench domains")
        ours = []
        for i, d in enumerate(doms):
            t0 = node.vassal(uid, f"v{i}.ini", f"[uwsgi]\nplugin = 0:python\n"
                             f"wsgi-file = $(HOME)/v{i}.py\ndomain = {d}\n",
                             files=[(f"v{i}.py", APP)])
            wait_for(lambda: node.router_get(d) == 200, 30, f"200 on {d}", 0.005)
            ours.append((time.monotonic() - t0) * 1000)
            os.remove(os.path.join(node.home(uid), "vassals", f"v{i}.ini"))
        direct = []
        for i in range(n):
            direct.append(plain_app_start(self, i))
        say(f"    through the router: p50 {pct(ours, 50):.0f} ms, max {max(ours):.0f} ms; "
            f"the same app on a plain uwsgi http-socket: p50 {pct(direct, 50):.0f} ms")
        self.results.add("vassal to traffic", "vassal file to first 200, p50", pct(ours, 50),
                         2000, "ms", "router subscribe-freq 2 s")
        self.results.add("vassal to traffic", "vassal file to first 200, max", max(ours),
                         2000, "ms", "router subscribe-freq 2 s")
        self.results.add("vassal to traffic", "vassal file to first 200, p50 (vs app)",
                         pct(ours, 50), pct(direct, 50), "ms",
                         "plain uwsgi start to first 200")

    # ---- 6: router overhead -----------------------------------------------------
    def bench_router(self):
        say("== 6. Router overhead: wrk -t2 -c64 through the node's router (one hop, our "
            "patched http router) to a vassal (2 processes) vs the same app on its own "
            "http-socket; keep-alive (wrk's default) and Connection: close")
        node = self.node()
        api = self.api()
        uid = self.running[1]
        d = f"rt.bench{os.getpid()}.org"
        api.admin("POST", "/domains", {"name": d, "customer": node.auth[0]})
        wait_for(lambda: os.path.exists(os.path.join(node.state, "router", "keys", d + ".pem")),
                 10, "the router key")
        node.vassal(uid, "rt.ini", f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/rt.py\n"
                    f"master = true\nprocesses = 2\ndomain = {d}\n", files=[("rt.py", APP)])
        wait_for(lambda: node.router_get(d) == 200, 30, f"200 on {d}", 0.05)
        url = f"http://127.0.0.1:{node.router_port}/"
        close = ["Connection: close"]
        wrk(url, 2, 64, 1, [f"Host: {d}"])
        # The router keeps client connections alive (--http-keepalive); the
        # app's own http-socket closes each one whatever the client asks.
        ours = wrk(url, 2, 64, self.dur, [f"Host: {d}"])
        wrk_line("through the router, keep-alive", ours)
        ours_c = wrk(url, 2, 64, self.dur, [f"Host: {d}", *close])
        wrk_line("through the router, Connection: close", ours_c, closes=True)
        port, stop = plain_app(self, "rt-direct", processes=2)
        try:
            durl = f"http://127.0.0.1:{port}/"
            wrk(durl, 2, 64, 1)
            base = wrk(durl, 2, 64, self.dur)
            wrk_line("direct http-socket, keep-alive asked", base, closes=True)
            base_c = wrk(durl, 2, 64, self.dur, close)
            wrk_line("direct http-socket, Connection: close", base_c, closes=True)
        finally:
            stop()
        os.remove(os.path.join(node.home(uid), "vassals", "rt.ini"))
        for d_ in (ours, ours_c, base, base_c):
            if d_["errors"] - d_["read_errors"] or (d_ is ours and d_["read_errors"]):
                raise BenchError(f"errors under load on the router test: {d_}")
        for label, o, b in (("keep-alive", ours, base), ("Connection: close", ours_c, base_c)):
            self.results.add("router", f"req/s through the router ({label})", o["rps"], b["rps"],
                             "req/s", "same app, direct http-socket", digits=0)
            self.results.add("router", f"p50 through the router ({label})", o["p50_us"] / 1000,
                             b["p50_us"] / 1000, "ms", "direct p50", digits=2)
            self.results.add("router", f"p99 through the router ({label})", o["p99_us"] / 1000,
                             b["p99_us"] / 1000, "ms", "direct p99", digits=2)

    # ---- 6b: HTTPS against nginx ------------------------------------------------
    def bench_https(self):
        say("== 6b. HTTPS: new TLS connections/s (wrk -t2 -c64 -H 'Connection: close') and "
            "keep-alive req/s, p50, p99 (wrk -t2 -c64) through the node's router on "
            "router_https to an ssl-domain vassal (2 processes), vs nginx terminating TLS "
            "with the same certificate and key, uwsgi_pass to the same vassal's socket")
        say(f"    load average {os.getloadavg()[0]:.2f} at the start")
        api = self.api()
        node = Node(self, api, "https", router=True)
        https_port = free_port()
        node.configure(f"router_https = 127.0.0.1:{https_port}\n")
        node.start()
        uid = node.run_containers(1)[0]
        d = f"tls.bench{os.getpid()}.org"
        api.admin("POST", "/domains", {"name": d, "customer": node.auth[0]})
        wait_for(lambda: os.path.exists(os.path.join(node.state, "router", "keys", d + ".pem")),
                 10, "the router key")
        home = node.home(uid)
        seed_certificate(home, uid, d)  # the seed's openssl commands, as the customer
        key, crt = os.path.join(home, "foobar.key"), os.path.join(home, "foobar.crt")
        node.vassal(uid, "tls.ini", f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/tls.py\n"
                    f"master = true\nprocesses = 2\n"
                    f"ssl-domain = {d} $(HOME)/foobar.key $(HOME)/foobar.crt\n",
                    files=[("tls.py", APP)])
        try:
            wait_for(lambda: https_status(https_port, d, crt)[0] == 200, 30,
                     f"200 on https://{d} with its own certificate")
        except BenchError:
            raise BenchError(f"the router does not serve {d} over HTTPS; its container's "
                             "logs/router.log:\n" + read_bytes(
                                 os.path.join(home, "logs", "router.log")).decode()[-2000:])
        # nginx in front of the very same vassal: its socket as the router sees it.
        sock = os.path.join(node.state, "router", "homes", str(uid), "run",
                            f"{d}_tls.ini.socket")
        short = tempfile.mkdtemp(prefix="imperium-bench-")  # a unix path fits in 108 bytes
        self.cleanup.push("remove the socket's link", lambda: shutil.rmtree(short))
        os.symlink(sock, os.path.join(short, "vassal.socket"))
        sock = os.path.join(short, "vassal.socket")
        nginx = Nginx(self, "nginx-tls")
        nginx.start(f"""ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {{
            include /etc/nginx/uwsgi_params;
            uwsgi_pass unix:{sock};
        }}""", access_log=False)
        wait_for(lambda: https_status(nginx.port, d, crt)[0] == 200, 10, "200 from nginx")
        for who, port in (("router", https_port), ("nginx ", nginx.port)):
            say(f"    {who}: {https_status(port, d, crt)[1]}")
        # wrk sends the URL's name as SNI: it resolves it from an /etc/hosts of
        # its own (a private mount namespace), the machine's stays untouched.
        hosts = os.path.join(self.run_dir, "https-hosts")
        with open(hosts, "w") as f:
            f.write(f"127.0.0.1 localhost {d}\n")
        wrap = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', hosts]
        sides = {"router": f"https://{d}:{https_port}/", "nginx": f"https://{d}:{nginx.port}/"}
        kinds = {"new": ["Connection: close"], "keepalive": []}
        rounds = 1 if self.quick else 3
        runs = {(s_, k): [] for s_ in sides for k in kinds}
        for url in sides.values():
            wrk(url, 2, 64, 1, wrap=wrap)  # warm-up
        for _ in range(rounds):
            for k, headers in kinds.items():
                for side, url in sides.items():
                    r = wrk(url, 2, 64, self.dur, headers, wrap=wrap)
                    wrk_line(f"{side:<6} {'new connections' if k == 'new' else 'keep-alive'}",
                             r, closes=k == "new")
                    if r["errors"] - (r["read_errors"] if k == "new" else 0):
                        raise BenchError(f"errors under load on {url} ({k}): {r}")
                    runs[(side, k)].append(r)
        say(f"    load average {os.getloadavg()[0]:.2f} at the end")

        def med(side, k, key, scale=1):
            return statistics.median(r[key] for r in runs[(side, k)]) / scale
        n = f" (median of {rounds})" if rounds > 1 else ""
        sec = "https"
        new, bnew = med("router", "new", "rps"), med("nginx", "new", "rps")
        self.results.add(sec, f"new TLS connections/s{n}", new, bnew, "conn/s",
                         "nginx, same cert", ">= 0.7x", new >= 0.7 * bnew, digits=0)
        ka, bka = med("router", "keepalive", "rps"), med("nginx", "keepalive", "rps")
        self.results.add(sec, f"keep-alive req/s{n}", ka, bka, "req/s", "nginx, same cert",
                         ">= 0.7x", ka >= 0.7 * bka, digits=0)
        self.results.add(sec, f"keep-alive p50{n}", med("router", "keepalive", "p50_us", 1000),
                         med("nginx", "keepalive", "p50_us", 1000), "ms", "nginx p50", digits=2)
        self.results.add(sec, f"keep-alive p99{n}", med("router", "keepalive", "p99_us", 1000),
                         med("nginx", "keepalive", "p99_us", 1000), "ms", "nginx p99", digits=2)
        nginx.stop()
        node.teardown()

    # ---- 7: the metrics sampler's cost --------------------------------------------
    def sampling_run(self, node, uids, interval, window, port):
        """The daemon with metrics_interval = interval over the 200 running
        containers: its CPU (utime+stime, % of one core) over `window` s,
        its RSS at the end, the sampling rounds inside the window and the
        time the daemon itself counted in them.  With sampling, the window
        starts half an interval after the first round (which only records
        where the counters stand): whole rounds, each posting its batch,
        fall inside it, none on its edges."""
        node.configure(f"metrics_interval = {interval}\nmetrics_listen = 127.0.0.1:{port}\n")
        node.start()
        pending = set(uids)
        deadline = time.monotonic() + 300
        while pending:  # the first run starts them; later runs adopt them
            pending = {u for u in pending if not node.emperor_ready(u)}
            if time.monotonic() > deadline:
                raise BenchError(f"{len(pending)} containers still not running after 300 s")
            time.sleep(0.05)
        wait_for(lambda: prometheus(port)['imperium_node_containers{state="running"}']
                 == len(uids), 60, f"{len(uids)} running containers on the node's /metrics", 0.2)
        if interval:
            wait_for(lambda: prometheus(port)["imperium_node_sample_rounds_total"] >= 1,
                     interval + 30, "the first sampling round", 0.1)
            time.sleep(interval / 2)
        else:
            time.sleep(5)  # the start's reports settled
        pid = node.proc.pid
        m0, c0, t0 = prometheus(port), cpu_s_stat(pid), time.monotonic()
        time.sleep(window)
        m1, c1, t1 = prometheus(port), cpu_s_stat(pid), time.monotonic()
        rss = rss_kib(pid)
        node.stop()
        rounds = m1["imperium_node_sample_rounds_total"] - m0["imperium_node_sample_rounds_total"]
        took = m1["imperium_node_sample_seconds_total"] - m0["imperium_node_sample_seconds_total"]
        out = {"cpu": (c1 - c0) / (t1 - t0) * 100, "cpu_s": c1 - c0, "rss": rss,
               "rounds": int(rounds), "round_ms": took / rounds * 1000 if rounds else 0.0,
               "window": t1 - t0}
        say(f"    metrics_interval = {interval or '0 (off)'}: {out['cpu']:.3f}% CPU "
            f"({out['cpu_s']:.2f} s over {out['window']:.0f} s), {rss:,} KiB RSS, "
            f"{out['rounds']} sampling rounds in the window"
            + (f", {out['round_ms']:.1f} ms each (the daemon's own count)" if rounds else ""))
        return out

    def bench_sampling(self):
        n = 50 if self.quick else 200
        # Windows (s): no sampling, every 60 s (3 whole rounds; QUICK 1), every 5 s (12; QUICK 4).
        windows = {0: 10, 60: 60, 5: 20} if self.quick else {0: 60, 60: 180, 5: 60}
        say(f"== 7. The metrics sampler's cost: the node agent with {n} running containers, "
            f"sampling off ({windows[0]} s), every 60 s ({windows[60]} s) and every 5 s "
            f"({windows[5]} s); CPU = utime+stime of /proc/<pid>/stat over the window")
        api = self.api()
        node = Node(self, api, "sampling")
        uids = [node.new_container(self.host_distro, memory=32) for _ in range(n)]
        body = {"ssh_keys": [self.ssh_key()]}
        for uid in uids:
            api.call("POST", f"/containers/{uid}", node.auth, body)
        port = free_port()
        off = self.sampling_run(node, uids, 0, windows[0], port)
        every60 = self.sampling_run(node, uids, 60, windows[60], port)
        every5 = self.sampling_run(node, uids, 5, windows[5], port)
        if every5["rounds"]:
            per_round = (every5["cpu_s"] - off["cpu"] / 100 * every5["window"]) / every5["rounds"]
            say(f"    one round over {n} containers costs about {per_round * 1000:.1f} ms of CPU "
                f"(5 s run minus the idle rate): {per_round / 60 * 100:.3f}% of a core at 60 s")
        sec = "sampling"
        self.results.add(sec, f"agent CPU, {n} containers, sampling every 60 s", every60["cpu"],
                         off["cpu"], "%CPU", "same node, no sampling", "< 1 %",
                         every60["cpu"] < 1, digits=3)
        self.results.add(sec, f"agent CPU, {n} containers, sampling every 5 s", every5["cpu"],
                         off["cpu"], "%CPU", "same node, no sampling", digits=3)
        self.results.add(sec, f"agent RSS, {n} containers, sampling every 60 s",
                         every60["rss"] / 1024, off["rss"] / 1024, "MiB",
                         "same node, no sampling")
        self.results.add(sec, f"agent RSS, {n} containers, sampling every 5 s",
                         every5["rss"] / 1024, off["rss"] / 1024, "MiB", "same node, no sampling")
        say("    stopping the sampling node's containers")
        node.teardown()

    # ---- failover: the Legion's floating address (issue 19, docs/CLUSTER.md) --------
    def bench_failover(self):
        """Three nodes in network namespaces of their own plugged into a world
        namespace, one legion (quorum 2), a cluster-domain vassal on each;
        `rounds` times the Lord dies as a machine does (nodeutil.kill_node:
        kill -9 of its member, router and daemon, then its uplink down) and a
        client in the world asks the floating address every 50 ms (0.3 s
        timeout): the time from the kill to the end of the first good answer.
        Then the node comes back (youngest member: no steal-back) and rejoins
        before the next round."""
        rounds = 3 if self.quick else 10
        freq, tolerance = 1, 1
        say(f"== F. Failover ({rounds} Lord kills): from kill -9 of the whole Lord (member, "
            "router, daemon; then its uplink down) to the first good answer on the floating "
            f"address from the world namespace; 3 nodes, quorum 2, legion_freq {freq} s, "
            f"legion_tolerance {tolerance} s")
        # The end-to-end tests' legion helpers (RouterNetNode, make_legion,
        # lord_of, kill_node) and their Api, on this bench's API and binaries:
        # one copy of each.
        import conftest
        import nodeutil
        nodeutil.NODE = os.path.join(self.bin, "imperium-node")
        nodeutil.BASE = self.run_dir  # short: uWSGI's socket paths under it must fit 108 bytes
        api = self.api()
        tapi = conftest.Api(api.dir, api.port, api.proc, api.logpath)
        try:
            took, moved, lords = self.failover_rounds(nodeutil, tapi, rounds, freq, tolerance)
        except AssertionError as e:  # the helpers' own checks
            raise BenchError(str(e)[-3000:]) from None
        say(f"    {', '.join(f'{t:.2f}' for t in took)} s (the Lords killed: nodes "
            f"{', '.join(map(str, lords))}); the address on a live member after "
            f"{', '.join(f'{t:.2f}' for t in moved)} s (p50 {pct(moved, 50):.2f} s)")
        say(f"    p50 {pct(took, 50):.2f} s, max {max(took):.2f} s; configured detection: "
            f"legion_tolerance {tolerance} s + one legion_freq {freq} s to agree")
        detect = tolerance + freq
        self.results.add("failover", "Lord killed to first answer p50", pct(took, 50), detect,
                         "s", "legion_tolerance + legion_freq", target="< 3 s",
                         ok=pct(took, 50) < 3, digits=2)
        self.results.add("failover", "Lord killed to first answer max", max(took), detect,
                         "s", "legion_tolerance + legion_freq", target="< 5 s",
                         ok=max(took) < 5, digits=2)

    def failover_rounds(self, nodeutil, tapi, rounds, freq, tolerance):
        """The seconds from each kill to the first good answer and to the
        address on a live member, and which node (1-3) was the Lord each time."""
        world = nodeutil.World()
        self.cleanup.push("delete the world namespace", world.close)
        # Runs after the nodes' cleanup: a mount a failed stop-all left under the run dir.
        self.cleanup.push("unmount leftovers", lambda: unmount_below(self.run_dir))
        conf = f"legion_freq = {freq}\nlegion_tolerance = {tolerance}\nstop_timeout = 5\n"
        nodes = []
        for _ in range(3):
            n = nodeutil.RouterNetNode(tapi, nodeutil.new_base("lg-"), world, conf=conf)
            self.cleanup.push(f"node {n.server['name']}", n.cleanup)
            nodes.append(n)
            n.start()
        legion = nodeutil.make_legion(tapi, nodes)
        floating, name = legion["address"], "failover.example.org"
        owner = nodes[0].auth
        nodeutil.add_domain(tapi, owner, name)
        for k, n in enumerate(nodes):
            uid = nodeutil.launch(n, {"id": self.host_distro}, [self.ssh_key()], auth=owner)
            n.vassal(uid, "app.ini", "[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/app.py\n"
                     f"cluster-domain = {name}\n",
                     files=[("app.py", f"NAME = 'n{k + 1}'\n" + nodeutil.PY_APP)])

        def good():
            try:
                r = nodes[0].get(name, timeout=0.3, address=floating)
                return r.status_code == 200 and "Hello i am python" in r.text
            except requests.RequestException:
                return False

        def joined(n):
            """Its member hears the two others, all three past their first
            listening as arbiters (valor 0, legion.h), and agrees on a Lord."""
            try:
                st = legion_stats(os.path.join(n.state, "legion", legion["name"], "stats.sock"),
                                  legion["name"])
            except (OSError, ValueError):
                return False
            members = (st or {}).get("members", [])
            return (st and st.get("valor", 0) > 0 and st.get("lord_valor") and len(members) == 2
                    and all(m.get("valor", 0) > 0 for m in members))

        took, moved, lords = [], [], []
        for _ in range(rounds):
            wait_for(lambda: all(joined(n) for n in nodes) and nodeutil.lord_of(nodes)
                     and good(), 60, "three members, a Lord and an answer on " + floating, 0.1)
            lord = nodeutil.lord_of(nodes)
            lords.append(nodes.index(lord) + 1)
            live = [n for n in nodes if n is not lord]
            t0 = time.monotonic()
            nodeutil.kill_node(lord)
            moved_at = None  # when a live member holds the address (the dead one keeps its /32)
            while not good():
                if moved_at is None and nodeutil.lord_of(live):
                    moved_at = time.monotonic()
                if time.monotonic() - t0 > 30:
                    raise BenchError(f"no answer on {floating} 30 s after the Lord's death")
                time.sleep(0.05)
            took.append(time.monotonic() - t0)
            if nodeutil.lord_of(live) is None:
                raise BenchError(f"{floating} answers but no live member holds it")
            moved.append((moved_at or time.monotonic()) - t0)
            # Back as from a reboot: the daemon first (it drops a stale address
            # of its legions before its member starts), then the link.
            lord.start()
            wait_for(lambda: nodeutil.lord_of([lord]) is None, 10,
                     "the restarted node to drop its stale floating address", 0.05)
            lord.ns.ip("link", "set", "world0", "up")
        return took, moved, lords


# ---- baselines and helpers --------------------------------------------------------

class PgCluster:
    """A throwaway PostgreSQL cluster in the run directory on a free port,
    started and destroyed by scripts/pgtmp.sh, so with the tests' settings
    (fsync, synchronous_commit and full_page_writes off)."""

    def __init__(self, bench):
        self.dir = os.path.join(bench.run_dir, "pg")  # pgtmp.sh's alone: it removes it
        self.port = free_port()
        bench.cleanup.push("destroy the PostgreSQL cluster", lambda: pgtmp("destroy", self.dir))
        try:
            self.url = pgtmp("start", self.dir, str(self.port))
        except RuntimeError as e:
            raise BenchError(str(e)) from None

    def database(self, name):
        """A new database (C collation); its URL."""
        try:
            return pgtmp("createdb", self.dir, str(self.port), name)
        except RuntimeError as e:
            raise BenchError(str(e)) from None


class Nginx:
    def __init__(self, bench, name="nginx"):
        self.dir = os.path.join(bench.run_dir, name)
        self.www = os.path.join(self.dir, "www")
        os.makedirs(self.www)
        os.makedirs(os.path.join(self.dir, "tmp"))
        self.port = free_port()
        self.files = {}
        self.proc = None
        bench.cleanup.push("stop nginx", self.stop)

    def put(self, name, body):
        self.files[name] = body
        with open(os.path.join(self.www, name), "wb") as f:
            f.write(body)

    def url(self, name):
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self, server=None, access_log=True):
        """server: the server block's directives (default: the static files);
        access_log False for a baseline whose counterpart logs no request."""
        d = self.dir
        conf = os.path.join(d, "nginx.conf")
        server = server or f"root {self.www};\n        location / {{ }}"
        with open(conf, "w") as f:
            f.write(f"""# nginx for the bench (bench/bench.py writes it)
user root;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {f"{d}/access.log" if access_log else "off"};
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/json;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{self.port}{" ssl" if "ssl_certificate" in server else ""};
        {server}
    }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-p", d, "-c", conf, "-e", f"{d}/error.log",
                                      "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(d, "stderr.log"), "w"))

        def up():
            if self.proc.poll() is not None:
                raise BenchError("nginx exited: " + read_bytes(f"{d}/error.log").decode())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        wait_for(up, 10, "nginx to listen", 0.05)

    def stop(self):
        if self.proc:
            stop_proc(self.proc, signal.SIGQUIT)
            self.proc = None


def seed_certificate(home, uid, name):
    """The seed's self-signed certificate (foobar.key, foobar.crt in the
    home), made as the customer makes it: its openssl commands, with -subj
    for the prompts, run as the container's uid."""
    for cmd in (["openssl", "genrsa", "-out", "foobar.key", "2048"],
                ["openssl", "req", "-new", "-key", "foobar.key", "-out", "foobar.csr",
                 "-subj", f"/CN={name}"],
                ["openssl", "x509", "-req", "-days", "365", "-in", "foobar.csr", "-signkey",
                 "foobar.key", "-out", "foobar.crt"]):
        p = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                            *cmd], cwd=home, capture_output=True, text=True, timeout=60)
        if p.returncode:
            raise BenchError(f"{' '.join(cmd)}: {p.stderr}")


def https_status(port, name, cafile, timeout=2):
    """(status, 'TLS version, cipher') of GET / on 127.0.0.1:port over TLS with
    SNI and Host `name`, the certificate verified against `cafile` (the name
    itself is not checked: the seed's certificate has only a CN); (0, why)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=name) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
                      .encode())
            head = s.recv(64).split()
            return int(head[1]), f"{s.version()}, {s.cipher()[0]}"
    except (OSError, ValueError, IndexError) as e:
        return 0, repr(e)


def unmount_below(path):
    """Unmount whatever is still mounted under path (deepest first): belt and
    braces after stop-all, before the directory is removed."""
    path = os.path.realpath(path) + "/"
    points = {line.split()[4] for line in helpers.mount_lines()}  # mountinfo: 5th field
    points = [m for m in points if m.startswith(path)]
    for m in sorted(points, key=len, reverse=True):
        p = subprocess.run(["umount", m], capture_output=True, text=True, timeout=30)
        say(f"bench: unmounted a leftover {m}" if p.returncode == 0
            else f"bench: cannot unmount {m}: {p.stderr.strip()}")


def legion_stats(path, name):
    """The legion `name`'s entry in a uWSGI legion member's stats socket
    (legion, valor, i_am_the_lord, lord_valor, members, ...), or None."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(1)
    try:
        s.connect(path)
        data = b""
        while (chunk := s.recv(65536)):
            data += chunk
    finally:
        s.close()
    return next((lg for lg in json.loads(data).get("legions", []) if lg.get("legion") == name),
                None)


def ssh_key(run_dir):
    path = os.path.join(run_dir, "bench_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", path],
                   check=True, stdin=subprocess.DEVNULL)
    with open(path + ".pub") as f:
        return " ".join(f.read().split()[:2])


def sqlite_commits(path, threads, seconds):
    """The write baseline: one-row UPDATE transactions, committed durably
    (WAL, synchronous=FULL, as imperium-api opens its database) by `threads`
    connections at once."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT)")
    db.executemany("INSERT INTO t VALUES (?, '')", [(i,) for i in range(threads)])
    db.close()
    lat, lock = [], threading.Lock()
    end = time.monotonic() + seconds

    def worker(i):
        c = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
        c.execute("PRAGMA synchronous=FULL")
        mine, n = [], 0
        while time.monotonic() < end:
            n += 1
            t0 = time.monotonic()
            while True:
                try:
                    c.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError:
                    # SQLITE_BUSY without the busy handler (a WAL checkpoint
                    # or recovery in progress): try again, the wait counts.
                    time.sleep(0.0001)
            c.execute("UPDATE t SET note = ? WHERE id = ?", (f"note {n}", i))
            c.execute("COMMIT")
            mine.append((time.monotonic() - t0) * 1000)
        c.close()
        with lock:
            lat.extend(mine)
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return commit_stats(lat, time.monotonic() - t0)


def commit_stats(lat, took):
    """The raw baselines' figures: commits (latencies in ms) over `took` seconds."""
    return {"n": len(lat), "rate": len(lat) / took, "p50": pct(lat, 50), "p99": pct(lat, 99)}


def pg_tool(name):
    """A client program of the newest installed PostgreSQL, the version
    scripts/pgtmp.sh runs the server of."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        raise BenchError(f"no {name} in /usr/lib/postgresql/*/bin: apt-get install postgresql "
                         "(scripts/packages.txt)")
    return found[-1]


def pg_commits(run_dir, url, clients, seconds):
    """The PostgreSQL write baseline, pgbench-style: one-row UPDATE commits
    (autocommit, prepared) by `clients` connections at once for `seconds`,
    each client on a row of its own as in sqlite_commits; latencies from
    pgbench's per-transaction log."""
    p = subprocess.run([pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c",
                        "CREATE TABLE t (id int PRIMARY KEY, v bigint NOT NULL DEFAULT 0); "
                        f"INSERT INTO t (id) SELECT generate_series(0, {clients - 1})"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode:
        raise BenchError(f"psql: cannot make the pgbench table: {p.stderr}")
    script = os.path.join(run_dir, "pgbench-update.sql")
    with open(script, "w") as f:
        f.write("\\set id :client_id\nUPDATE t SET v = v + 1 WHERE id = :id;\n")
    logs = os.path.join(run_dir, "pgbench-log")
    os.makedirs(logs)
    cmd = [pg_tool("pgbench"), "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
           "-T", str(seconds), "-f", script, "-l", "--log-prefix", os.path.join(logs, "tx"), url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, cwd=logs)
    if p.returncode:
        raise BenchError(f"{' '.join(cmd)}:\n{p.stdout}\n{p.stderr}")
    lat = []
    for log in os.listdir(logs):  # client_id tx_no latency_us script_no epoch epoch_us
        with open(os.path.join(logs, log)) as f:
            lat += [int(line.split()[2]) / 1000 for line in f if line.strip()]
    return commit_stats(lat, seconds)


def basic_auth(auth):
    """The HTTP Basic header (for wrk's -H) of (name, password)."""
    return "Authorization: Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()


def plain_emperors(bench, n, at_once):
    """Start `uwsgi --master --emperor DIR --logto LOG --die-on-term` directly
    n times (one by one, or all at once) and time each until it logs that the
    Emperor started: what a container start is measured against."""
    base = os.path.join(bench.run_dir, f"plain-{'all' if at_once else 'seq'}")
    os.makedirs(base)
    procs, times = [], []

    def spawn(i):
        d = os.path.join(base, str(i))
        os.makedirs(os.path.join(d, "vassals"))
        log = os.path.join(d, "emperor.log")
        p = subprocess.Popen(["uwsgi", "--master", "--emperor", os.path.join(d, "vassals"),
                              "--logto", log, "--die-on-term"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)
        procs.append(p)
        return log

    def stop_all():
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
        procs.clear()
    bench.cleanup.push("plain emperors", stop_all)
    try:
        if at_once:
            t0 = time.monotonic()
            logs = [spawn(i) for i in range(n)]
            pending = set(logs)
            while pending:
                for log in list(pending):
                    if EMPEROR_READY in read_bytes(log):
                        pending.discard(log)
                        times.append((time.monotonic() - t0) * 1000)
                time.sleep(0.01)
        else:
            for i in range(n):
                t0 = time.monotonic()
                log = spawn(i)
                wait_for(lambda: EMPEROR_READY in read_bytes(log), 30, "a plain Emperor", 0.001)
                times.append((time.monotonic() - t0) * 1000)
                stop_all()
    finally:
        stop_all()
    return times


def plain_app(bench, name, processes=1):
    """The bench app on a plain uwsgi http-socket on the host; returns (port, stop)."""
    d = os.path.join(bench.run_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "app.py"), "w") as f:
        f.write(APP)
    port = free_port()
    p = subprocess.Popen(["uwsgi", "--plugin", "python3", "--master", "--processes",
                          str(processes), "--http-socket", f"127.0.0.1:{port}", "--wsgi-file",
                          os.path.join(d, "app.py"), "--die-on-term", "--logto",
                          os.path.join(d, "uwsgi.log")], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)

    def stop():
        stop_proc(p, signal.SIGTERM, 10)
    bench.cleanup.push(f"plain uwsgi {name}", stop)

    def ok():
        if p.poll() is not None:
            raise BenchError(f"plain uwsgi exited: {read_bytes(os.path.join(d, 'uwsgi.log'))}")
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            c.request("GET", "/")
            return c.getresponse().status == 200
        except OSError:
            return False
        finally:
            c.close()
    wait_for(ok, 30, "the plain uwsgi app", 0.005)
    return port, stop


def plain_app_start(bench, i):
    t0 = time.monotonic()
    _, stop = plain_app(bench, f"direct-{i}")
    took = (time.monotonic() - t0) * 1000
    stop()
    return took


def idle_usage(pid, seconds):
    c0, t0 = cpu_ns(pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_ns(pid), time.monotonic()
    return {"cpu": (c1 - c0) / 1e9 / (t1 - t0) * 100, "rss": rss_kib(pid)}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build"),
                    help="directory of the optimized binaries (default build/)")
    ap.add_argument("--only", default="",
                    help=f"comma-separated sections among {', '.join(SECTIONS)} (default all)")
    ap.add_argument("--quick", action="store_true", help="shorter runs, fewer samples")
    ap.add_argument("--seconds", type=int, default=0,
                    help="each wrk window, in seconds (default 10, 3 with --quick)")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    ap.add_argument("--api-args", default="",
                    help="extra imperium-api flags, for A/B runs (e.g. '--threads 2')")
    args = ap.parse_args()
    only = [s for s in args.only.replace(" ", ",").split(",") if s] or list(SECTIONS)
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}; choose among {', '.join(SECTIONS)}")
    for b in ("imperium-api", "imperium-node"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            ap.error(f"{os.path.join(args.bin, b)} is missing: build it first (make all)")
    if any(s not in NO_ROOT for s in only) and os.geteuid() != 0:
        ap.error(f"containers need root: run as root, or --only {','.join(NO_ROOT)}")
    if "db" in only:
        try:
            pg_tool("pgbench")
            pg_tool("psql")
        except BenchError as e:
            ap.error(str(e))
    for tool in ("wrk", "nginx", "uwsgi"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            ap.error(f"{tool} is missing: scripts/deps.sh bench/packages.txt installs it")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: inits left by a stopped daemon
    bench = Bench(args)
    done = threading.Event()

    def reaper():
        while not done.wait(0.2):
            reap_orphans()
    threading.Thread(target=reaper, daemon=True).start()
    say(f"bench: binaries {bench.bin}, run directory {bench.run_dir}, sections {', '.join(only)}"
        f"{' (quick)' if args.quick else ''}")
    say(f"bench: {os.cpu_count()} CPUs, {os.uname().release}")
    code = 0
    t_start = time.monotonic()
    try:
        for s in SECTIONS:
            if s in only:
                getattr(bench, "bench_" + s)()
    except KeyboardInterrupt:
        say("\nbench: interrupted; cleaning up")
        code = 130
    except BenchError as e:
        say(f"bench: FAILED: {e}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if code:
            bench.args.keep = True
        bench.cleanup.run()
        done.set()
        reap_orphans()
    if bench.results.rows:
        bench.results.summary()
    say(f"bench: {time.monotonic() - t_start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
