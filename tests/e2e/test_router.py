"""The node's HTTP router (docs/ROUTER.md) end to end: the real API, the real
imperium-node daemon with `router_http` on a free local port, containers on
the host distro, vassals dropped into vassals/ using the `domain` shortcut,
and plain HTTP requests through the router.  Root only."""

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import requests

from conftest import unique
from helpers import proc_status, wait_for
from nodeutil import (NEEDS_CONTAINERS, PY_APP, RouterNode, add_domain, launch, new_base,
                      router_node)

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]

PL_APP = '''my $app = sub {
    my ($env) = @_;
    return [200, ['Content-Type' => 'text/plain'], ["Hello i am perl"]];
};
'''
RB_APP = '''class MyApp
  def call(env)
    [200, {'Content-Type' => 'text/plain'}, ["Hello i am ruby"]]
  end
end

run MyApp.new
'''


@pytest.fixture
def rnode(api):
    with router_node(api, "router-", show_logs=True) as n:
        yield n




def test_python_app_served_and_unknown_host_404(rnode, host_distro, ssh_keys):
    dom = unique("py") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    uid = launch(rnode, host_distro, ssh_keys)
    rnode.py_vassal(uid, "pythonapp", dom)
    rnode.wait_answer(dom, "Hello i am python")
    r = rnode.get("nobody-" + dom)
    assert r.status_code == 404 and len(r.text) < 200


def test_three_languages_round_robin(rnode, host_distro, ssh_keys):
    for p in ("/usr/lib/uwsgi/plugins/psgi_plugin.so", "/usr/lib/uwsgi/plugins/rack_plugin.so"):
        if not os.path.exists(p):
            pytest.skip(f"needs {p}")
    dom = unique("rr") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    uid = launch(rnode, host_distro, ssh_keys)
    rnode.vassal(uid, "perlapp.ini", f"[uwsgi]\nplugin = 0:psgi\npsgi = $(HOME)/myapp.pl\n"
                 f"domain = {dom}\n", files=[("myapp.pl", PL_APP)])
    rnode.py_vassal(uid, "pythonapp", dom)
    rnode.vassal(uid, "rubyapp.ini", f"[uwsgi]\nplugin = 0:rack\nrack = $(HOME)/myapp.ru\n"
                 f"domain = {dom}\n", files=[("myapp.ru", RB_APP)])
    wait_for(lambda: len(rnode.subscriptions().get(dom, [])) == 3, 30, "three subscribers")
    got = rnode.answers(dom, 30)
    assert all(code == 200 for code, _ in got), got
    texts = [t for _, t in got]
    for lang in ("python", "perl", "ruby"):
        assert sum(f"Hello i am {lang}" in t for t in texts) >= 9, texts


def test_two_containers_of_one_customer_are_balanced(rnode, host_distro, ssh_keys):
    dom = unique("two") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    a = launch(rnode, host_distro, ssh_keys, i=0)
    b = launch(rnode, host_distro, ssh_keys, i=1)
    rnode.py_vassal(a, "app", dom, tag="A")
    rnode.py_vassal(b, "app", dom, tag="B")
    wait_for(lambda: len(rnode.subscriptions().get(dom, [])) == 2, 30, "two subscribers")
    texts = [t for _, t in rnode.answers(dom, 10)]
    assert any("python A" in t for t in texts) and any("python B" in t for t in texts), texts


def test_another_customer_cannot_hijack_a_domain(rnode, host_distro, ssh_keys):
    dom = unique("hj") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    a = launch(rnode, host_distro, ssh_keys)
    rnode.py_vassal(a, "app", dom, tag="owner")
    rnode.wait_answer(dom, "python owner")
    other, _ = rnode.api.new_customer()
    b = launch(rnode, host_distro, ssh_keys, auth=other, i=1)
    rnode.py_vassal(b, "evil", dom, tag="evil")
    # The evil vassal runs and keeps trying (subscribe-freq 2 s)...
    # (the shortcut names sockets <domain>_<vassal file>.socket)
    wait_for(lambda: os.path.exists(os.path.join(rnode.sockets(b), dom + "_evil.ini.socket")),
             30, "the evil vassal's socket")
    time.sleep(5)
    # ...but the router never took it.
    subs = rnode.subscriptions().get(dom, [])
    assert len(subs) == 1 and f"/{a}/" in subs[0], subs
    texts = [t for _, t in rnode.answers(dom, 10)]
    assert all("python owner" in t for t in texts), texts


def test_wildcard_and_specific_domain(rnode, host_distro, ssh_keys):
    base = unique("wc") + ".org"
    add_domain(rnode.api, rnode.auth, "." + base)
    add_domain(rnode.api, rnode.auth, "a." + base)
    uid = launch(rnode, host_distro, ssh_keys)
    rnode.py_vassal(uid, "wild", "." + base, tag="wild")
    rnode.wait_answer("b." + base, "python wild")
    rnode.wait_answer("a." + base, "python wild")
    rnode.py_vassal(uid, "spec", "a." + base, tag="spec")
    rnode.wait_answer("a." + base, "python spec")
    assert "python wild" in rnode.get("b." + base).text


def test_removing_and_replacing_vassals(rnode, host_distro, ssh_keys):
    dom = unique("rp") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    uid = launch(rnode, host_distro, ssh_keys)
    rnode.py_vassal(uid, "one", dom, tag="one")
    rnode.py_vassal(uid, "two", dom, tag="two")
    wait_for(lambda: len(rnode.subscriptions().get(dom, [])) == 2, 30, "two subscribers")
    os.remove(os.path.join(rnode.home(uid), "vassals", "two.ini"))
    wait_for(lambda: len(rnode.subscriptions().get(dom, [])) == 1, 10, "one subscriber left")
    assert rnode.get(dom).text.endswith("one")


def sequential_load(rnode, dom, seconds, step, stop=None):
    """GET dom one request after another for `seconds` (or until
    stop(texts seen) is true), calling step(i) before request i; returns
    (failures, texts seen)."""
    failures, seen = [], []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline and not (stop and stop(seen)):
        step(i)
        i += 1
        try:
            r = rnode.get(dom)
            if r.status_code != 200:
                failures.append((r.status_code, r.text[:80]))
            seen.append(r.text)
        except requests.RequestException as e:
            failures.append(str(e))
    return failures, seen


def test_touching_a_vassal_under_load_fails_no_request(rnode, host_distro, ssh_keys):
    """A touch reloads the domain's only vassal gracefully: its socket (named
    after the vassal file) survives uWSGI's re-exec, so requests wait in its
    queue instead of failing."""
    dom = unique("tl") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    uid = launch(rnode, host_distro, ssh_keys)
    rnode.py_vassal(uid, "one", dom, tag="one")
    rnode.wait_answer(dom, "python one")
    ini = os.path.join(rnode.home(uid), "vassals", "one.ini")
    log = os.path.join(rnode.home(uid), "logs", "emperor.log")
    reloads = lambda: open(log, errors="replace").read().count(  # noqa: E731
        "reload the uwsgi instance one.ini")
    before = reloads()

    def touch(i):
        if i in (20, 200):
            now = time.time() + i  # a new mtime even within one second
            os.utime(ini, (now, now))
    failures, seen = sequential_load(rnode, dom, 8, touch)
    assert not failures, failures
    assert len(seen) > 200, len(seen)
    wait_for(lambda: reloads() >= before + 1, 10, "the vassal reloaded")
    # It kept its socket across the re-exec.
    assert re.search(r"found fd \d+ mapped to socket 0 \(/containers/%d/run/%s_one.ini.socket\)"
                     % (uid, re.escape(dom)), open(log, errors="replace").read())


def test_replacing_a_vassal_file_under_load_fails_no_request(rnode, host_distro, ssh_keys):
    """A new version of the file (renamed over the old one, as editors and
    deploy tools do) reloads the vassal: the new code answers, no request
    fails."""
    dom = unique("rl") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    uid = launch(rnode, host_distro, ssh_keys)
    rnode.py_vassal(uid, "one", dom, tag="one")
    rnode.wait_answer(dom, "python one")
    home = rnode.home(uid)
    ini = os.path.join(home, "vassals", "one.ini")
    # The Emperor compares mtimes in whole seconds: a new version written
    # within the second of the old one would go unnoticed.
    due = os.stat(ini).st_mtime + 1.1
    state = {"done": False}

    def replace(i):
        if not state["done"] and i >= 20 and time.time() >= due:
            with open(os.path.join(home, "one2.py"), "w") as f:
                f.write("NAME = 'v2'\n" + PY_APP)
            rnode.vassal(uid, "one.ini", f"[uwsgi]\nplugin = 0:python\n"
                         f"wsgi-file = $(HOME)/one2.py\ndomain = {dom}\n")
            state["done"] = True
    # Load until the new version has answered 50 times (or 30 s).
    failures, seen = sequential_load(rnode, dom, 30, replace,
                                     stop=lambda seen: sum(t.endswith("v2") for t in seen) >= 50)
    assert not failures, failures
    assert seen[0].endswith("one") and seen[-1].endswith("v2"), (seen[0], seen[-1])


def test_swapping_vassals_under_load_fails_no_request(rnode, host_distro, ssh_keys):
    """A new vassal file joins the domain, then the old file goes: the old
    instance unsubscribes, keeps serving for a second while the router reads
    the unsubscribe (platform.ini's emperor-stop hooks), then its workers
    finish what they hold (--emperor-graceful-shutdown)."""
    dom = unique("sw") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    uid = launch(rnode, host_distro, ssh_keys)
    rnode.py_vassal(uid, "one", dom, tag="one")
    wait_for(lambda: len(rnode.subscriptions().get(dom, [])) == 1, 30, "one subscriber")
    state = {"removed": False}

    def swap(i):
        if i == 10:
            rnode.py_vassal(uid, "two", dom, tag="two")
        if i > 10 and not state["removed"] and len(rnode.subscriptions().get(dom, [])) == 2:
            os.remove(os.path.join(rnode.home(uid), "vassals", "one.ini"))
            state["removed"] = True
    failures, seen = sequential_load(rnode, dom, 10, swap)
    assert state["removed"], "the new vassal never subscribed"
    assert not failures, failures
    assert seen[-1].endswith("two") and any(t.endswith("one") for t in seen)
    log = os.path.join(rnode.home(uid), "logs", "emperor.log")
    wait_for(lambda: "graceful shutdown triggered" in open(log).read(), 30, "one's shutdown")
    text = open(log).read()
    assert "unable to call function" not in text, text
    assert text.index('running "callint:sleep 1" (emperor-stop)') < \
        text.index("graceful shutdown triggered"), text


SECRET_APP = '''def application(environ, start_response):
    start_response('200 OK', [('Content-Type','text/plain')])
    return [b"private data of B"]
'''


def test_a_subscription_may_name_only_its_own_sockets(rnode, host_distro, ssh_keys):
    """Customer A signs subscriptions for its own domain, but points them at
    customer B's private socket, at a TCP service of the node, and through a
    symlink in its own run/ at B's socket: the router serves none of them,
    and A's logs/router.log says why."""
    dom = unique("own") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    a = launch(rnode, host_distro, ssh_keys)
    other, _ = rnode.api.new_customer()
    b = launch(rnode, host_distro, ssh_keys, auth=other, i=1)
    # B: an app on a private socket, on no domain.
    rnode.vassal(b, "private.ini", "[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/p.py\n"
                 "socket = $(HOME)/run/private.socket\n", files=[("p.py", SECRET_APP)])
    wait_for(lambda: os.path.exists(os.path.join(rnode.sockets(b), "private.socket")), 30,
             "B's private socket")
    # A: a symlink in its run/ to B's socket (as the router would see it).
    link = os.path.join(rnode.sockets(a), "evil.socket")
    os.symlink(f"/containers/{b}/run/private.socket", link)
    os.lchown(link, a, a)
    sub = "subscribe2 = server=/run/subscribe/http,key={d},addr={addr}," \
          "sign=SHA1:$(HOME)/etc/uwsgi.key\n"
    targets = [f"/containers/{b}/run/private.socket", f"127.0.0.1:{rnode.api.port}",
               f"/containers/{a}/run/../../{b}/run/private.socket",
               f"/containers/{a}/run/evil.socket"]
    rnode.vassal(a, "evil.ini", "[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/p.py\n"
                 "socket = $(HOME)/run/mine.socket\nsubscribe-freq = 1\n"
                 + "".join(sub.format(d=dom, addr=t) for t in targets),
                 files=[("p.py", PY_APP.replace("NAME", "'A'"))])
    router_log = os.path.join(rnode.home(a), "logs", "router.log")
    wait_for(lambda: os.path.exists(router_log) and
             open(router_log).read().count("refused: address") >= 3, 30,
             "A told of the refusals")
    text = open(router_log).read()
    for t in targets[:3]:
        assert f"refused: address {t}: a subscription may only name a unix socket " \
               f"directly in /containers/{a}/run/" in text, text
    assert os.stat(router_log).st_uid == a
    # Only the symlink got through the gate (it is in A's own run/)...
    wait_for(lambda: dom in rnode.subscriptions(), 10, "A's own-run/ subscription")
    assert rnode.subscriptions()[dom] == [f"/containers/{a}/run/evil.socket"]
    # ...and the router, refusing to follow A's symlink, serves nothing of B.
    # (uWSGI closes the connection, or answers through its 404 fallback.)
    for _ in range(5):
        try:
            r = rnode.get(dom)
        except requests.ConnectionError:
            continue
        assert "private data of B" not in r.text
        assert r.status_code != 200, r.text


def test_subscriptions_past_max_subscriptions_are_refused(api, host_distro, ssh_keys):
    """A container holds at most max_subscriptions (domain, socket) pairs in
    the router: with 3, a vassal announcing 5 sockets gets 3 through, the
    rest refused round after round and its logs/router.log says why; once
    the vassal is gone (its unsubscriptions) the places are free again."""
    with router_node(api, "subcap-", conf="max_subscriptions = 3\n", show_logs=True) as n:
        dom = unique("cap") + ".org"
        add_domain(n.api, n.auth, dom)
        uid = launch(n, host_distro, ssh_keys)
        sub = "subscribe2 = server=/run/subscribe/http,key={d},addr=/containers/{u}/run/{s}," \
              "sign=SHA1:$(HOME)/etc/uwsgi.key\n"

        def vassal(name, sockets):
            n.vassal(uid, name, "[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/p.py\n"
                     "socket = $(HOME)/run/mine.socket\nsubscribe-freq = 1\n"
                     + "".join(sub.format(d=dom, u=uid, s=s) for s in sockets),
                     files=[("p.py", PY_APP.replace("NAME", "'A'"))])

        five = [f"s{i}.socket" for i in range(5)]
        vassal("many.ini", five)
        router_log = os.path.join(n.home(uid), "logs", "router.log")
        why = "refused: the container already holds 3 subscriptions (domain and socket " \
              "pairs), the node's max_subscriptions"
        wait_for(lambda: os.path.exists(router_log) and why in open(router_log).read(), 30,
                 "the container told of the refusal")
        wait_for(lambda: len(n.subscriptions().get(dom, [])) == 3, 10, "three subscriptions")
        time.sleep(3)  # three more rounds of five announcements each
        held = n.subscriptions()[dom]
        assert len(held) == 3 and set(held) <= {f"/containers/{uid}/run/{s}" for s in five}
        os.unlink(os.path.join(n.home(uid), "vassals", "many.ini"))
        wait_for(lambda: dom not in n.subscriptions(), 30, "the vassal's unsubscriptions")
        vassal("other.ini", ["t0.socket", "t1.socket", "t2.socket"])
        wait_for(lambda: len(n.subscriptions().get(dom, [])) == 3, 30,
                 "three new subscriptions in the freed places")


def test_deleting_the_domain_stops_new_subscriptions(rnode, host_distro, ssh_keys):
    dom = unique("del") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    uid = launch(rnode, host_distro, ssh_keys)
    rnode.py_vassal(uid, "app", dom)
    rnode.wait_answer(dom, "Hello i am python")
    keyfile = os.path.join(rnode.state, "router", "keys", dom + ".pem")
    assert os.path.exists(keyfile)
    r = rnode.api.delete("/domains/", auth=rnode.auth, json={"name": dom})
    assert r.status_code in (200, 204), r.text
    wait_for(lambda: not os.path.exists(keyfile), 1.5, "the key removed within a second")
    rnode.py_vassal(uid, "app2", dom)
    time.sleep(5)
    assert dom not in rnode.subscriptions()
    assert rnode.get(dom).status_code == 404


def test_ssl_and_cluster_shortcuts_serve_the_http_record(rnode, host_distro, ssh_keys):
    """ssl-domain, ssl-ca-domain, cluster-domain and ssl-cluster-domain take
    their arguments and register the plain-HTTP record of the name too (the
    public platform's ssl-domain does); HTTPS is test_router_tls.py's."""
    uid = launch(rnode, host_distro, ssh_keys)
    lines = {"ssl-domain": "{d} $(HOME)/{n}.key $(HOME)/{n}.crt",
             "ssl-ca-domain": "{d} $(HOME)/{n}.key $(HOME)/{n}.crt !$(HOME)/{n}.crt",
             "cluster-domain": "{d}",
             "ssl-cluster-domain": "{d} $(HOME)/{n}.key $(HOME)/{n}.crt"}
    for i, (opt, args) in enumerate(lines.items()):
        dom = unique(f"s{i}") + ".org"
        add_domain(rnode.api, rnode.auth, dom)
        name = f"opt{i}"
        # A key and a certificate for the name, as the seed makes them.
        home = rnode.home(uid)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", f"/CN={dom}",
                        "-addext", f"subjectAltName=DNS:{dom}",
                        "-keyout", os.path.join(home, f"{name}.key"),
                        "-out", os.path.join(home, f"{name}.crt")],
                       check=True, capture_output=True)
        for ext in ("key", "crt"):
            os.chown(os.path.join(home, f"{name}.{ext}"), uid, uid)
        args = args.replace("{n}", name)
        rnode.vassal(uid, f"{name}.ini",
                     f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/{name}.py\n"
                     f"{opt} = {args.format(d=dom)}\n",
                     files=[(f"{name}.py", f"NAME = {opt!r}\n" + PY_APP)])
        rnode.wait_answer(dom, f"python {opt}")


# ---- the router runs unprivileged (docs/ROUTER.md "Privileges") ------------------

ROUTER_USER = "imperium-router"   # the default router_user
INSIDE = "/run/imperium-router"   # the router's directory, in its mount namespace


def free_low_port():
    """A free port below 1024 on 127.0.0.1 (binding it needs root)."""
    for port in range(700 + os.getpid() % 200, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


def assert_unprivileged(node, pw):
    pids = node.router_pids()
    # the master and its http processes (one per core)
    assert len(pids) >= 2, pids
    for pid in pids:
        st = proc_status(pid)
        assert st["Uid"].split() == [str(pw.pw_uid)] * 4, (pid, st["Uid"])
        assert st["Gid"].split() == [str(pw.pw_gid)] * 4, (pid, st["Gid"])
        assert st["Groups"].split() == [], (pid, st["Groups"])
        assert st["NoNewPrivs"] == "1", (pid, st["NoNewPrivs"])
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, (pid, st)
    return pids


def mode_of(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, st.st_mode & 0o7777


def test_the_router_runs_unprivileged_on_a_low_port_and_reloads(api, host_distro, ssh_keys):
    """The router listens on a port below 1024, yet none of its processes is
    root: uWSGI binds the port as a shared socket, then drops to the router's
    user, with no_new_privs and no capabilities.  A reload (a domain deleted)
    re-execs it unprivileged, inheriting the port; it still serves."""
    n = RouterNode(api, new_base("router-"), port=free_low_port())
    try:
        n.start()
        pw = pwd.getpwnam(ROUTER_USER)
        dom, gone = unique("up") + ".org", unique("gone") + ".org"
        add_domain(api, n.auth, dom)
        add_domain(api, n.auth, gone)
        uid = launch(n, host_distro, ssh_keys)
        n.py_vassal(uid, "app", dom)
        n.wait_answer(dom, "Hello i am python")
        before = assert_unprivileged(n, pw)
        log = n.router_log()
        assert re.search(r"uwsgi shared socket 0 bound to TCP address 127.0.0.1:%d" % n.port, log)
        assert f"setuid() to {pw.pw_uid}" in log and "WARNING: you are running uWSGI as root" \
            not in log, log[-3000:]
        # What it reads and reaches, by owner and mode.
        rdir = os.path.join(n.state, "router")
        assert mode_of(rdir) == (0, pw.pw_gid, 0o710)
        assert mode_of(os.path.join(rdir, "keys")) == (0, pw.pw_gid, 0o710)
        assert mode_of(os.path.join(rdir, "keys", dom + ".pem")) == (0, pw.pw_gid, 0o640)
        assert mode_of(os.path.join(rdir, "run")) == (0, pw.pw_gid, 0o1733)
        assert mode_of(os.path.join(rdir, "run", "subscription.sock"))[:2] == \
            (pw.pw_uid, pw.pw_gid)
        assert mode_of(os.path.join(rdir, "homes", str(uid))) == (0, pw.pw_gid, 0o710)
        assert mode_of(n.sockets(uid)) == (0, pw.pw_gid, 0o3717)
        assert mode_of(os.path.join(n.sockets(uid), f"{dom}_app.ini.socket")) == \
            (uid, pw.pw_gid, 0o660)
        # A deleted domain reloads the router (SIGHUP: uWSGI re-execs itself).
        offset = len(n.router_log())
        r = api.delete("/domains/", auth=n.auth, json={"name": gone})
        assert r.status_code in (200, 204), r.text
        wait_for(lambda: "inherited TCP address 127.0.0.1:%d" % n.port in n.router_log()[offset:],
                 20, "the reloaded router inheriting its port")
        n.wait_answer(dom, "Hello i am python")
        after = assert_unprivileged(n, pw)
        assert after[0] == before[0] and set(after[1:]) != set(before[1:]), (before, after)
    finally:
        try:
            n.cleanup()
        finally:
            print(n.router_log()[-3000:])
            shutil.rmtree(n.base, ignore_errors=True)


PROBE = r"""
import json, os, socket, sys
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = e.__class__.__name__
def connect(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
    finally:
        s.close()
def create(path):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
for name, (op, path) in json.loads(sys.argv[1]).items():
    attempt(name, {"connect": lambda: connect(path),
                   "read": lambda: open(path, "rb").read(),
                   "write": lambda: open(path, "ab").close(),
                   "create": lambda: create(path),
                   "list": lambda: os.listdir(path)}[op])
print(json.dumps(out))
"""


def as_router(node, probes):
    """Run the probes as the router's processes could: in its mount
    namespace, as its user and group, no supplementary groups."""
    pw = pwd.getpwnam(ROUTER_USER)
    p = subprocess.run(["nsenter", "-t", str(node.router_pid()), "-m", "--",
                        "setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                        "--clear-groups", "--no-new-privs", sys.executable, "-c", PROBE,
                        json.dumps(probes)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_the_router_user_reaches_only_what_it_serves(rnode, host_distro, ssh_keys):
    """A router taken over by an attacker (its own uid, its namespace):
    it connects to a socket a vassal made in run/, reads the domain keys;
    it cannot read a customer's files, reach a socket outside run/, list or
    add to run/, change a key, or read the node's state (customers' private
    keys)."""
    dom = unique("ru") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    uid = launch(rnode, host_distro, ssh_keys)
    home = rnode.home(uid)
    rnode.py_vassal(uid, "app", dom)
    rnode.vassal(uid, "private.ini", "[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/p.py\n"
                 "socket = $(HOME)/private.socket\nchmod-socket = 666\n",
                 files=[("p.py", SECRET_APP)])
    secret = os.path.join(home, "secret.txt")
    with open(secret, "w") as f:
        f.write("the customer's own\n")
    os.chown(secret, uid, uid)
    os.chmod(secret, 0o600)
    rnode.wait_answer(dom, "Hello i am python")
    wait_for(lambda: os.path.exists(os.path.join(home, "private.socket")), 30,
             "the private socket")
    run = f"/containers/{uid}/run"
    got = as_router(rnode, {
        "vassal socket in run/": ["connect", f"{run}/{dom}_app.ini.socket"],
        "domain key": ["read", f"{INSIDE}/keys/{dom}.pem"],
        "socket outside run/": ["connect", os.path.join(home, "private.socket")],
        "home file 0600": ["read", secret],
        "home vassal file": ["read", os.path.join(home, "vassals", "app.ini")],
        "list run/": ["list", run],
        "add to run/": ["create", f"{run}/squat.socket"],
        "list homes": ["list", "/containers"],
        "change a key": ["write", f"{INSIDE}/keys/{dom}.pem"],
        "add a key": ["create", f"{INSIDE}/keys/evil.pem"],
        "router pid file": ["write", f"{INSIDE}/router.pid"],
        "node state": ["read", os.path.join(rnode.state, "desired.json")],
        "container state": ["list", os.path.join(rnode.state, str(uid))],
    })
    assert got == {
        "vassal socket in run/": "ok",
        "domain key": "ok",
        "socket outside run/": "PermissionError",
        "home file 0600": "PermissionError",
        "home vassal file": "PermissionError",
        "list run/": "PermissionError",
        "add to run/": "PermissionError",
        "list homes": "PermissionError",
        "change a key": "PermissionError",
        "add a key": "PermissionError",
        "router pid file": "PermissionError",
        "node state": "PermissionError",
        "container state": "PermissionError",
    }, got


@pytest.mark.parametrize("user,why", [
    ("nosuch-router", "router_user nosuch-router does not exist"),
    ("root", "router_user root is root (uid 0, gid 0)"),
])
def test_a_router_user_that_is_missing_or_root_is_refused(api, user, why):
    n = RouterNode(api, new_base("router-"))
    try:
        with open(n.conf, "a") as f:
            f.write(f"router_user = {user}\n")
        p = n.run("run", "--config", n.conf)
        assert p.returncode == 1, p.stderr
        assert why in p.stderr, p.stderr
        assert not os.path.exists(os.path.join(n.state, "router", "router.pid"))
    finally:
        shutil.rmtree(n.base, ignore_errors=True)
