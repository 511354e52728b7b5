"""The node's HTTP router (docs/ROUTER.md) end to end: the real API, the real
imperium-node daemon with `router_http` on a free local port, containers on
the host distro, vassals dropped into vassals/ using the `domain` shortcut,
and plain HTTP requests through the router.  Root only."""

import json
import os
import re
import socket
import time

import pytest
import requests

import conftest
from conftest import free_port, unique
import test_node_daemon as nd
from test_node_daemon import host_distro, subreaper, wait_for  # noqa: F401  (fixtures)

pytestmark = nd.pytestmark

PY_APP = '''def application(environ, start_response):
    start_response('200 OK', [('Content-Type','text/plain')])
    return [b"Hello i am python %s" % NAME.encode()]
'''
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


class RouterNode(nd.Node):
    def __init__(self, api, base):
        super().__init__(api, base)
        self.port = free_port()
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

    def subscriptions(self):
        """{key: [node addresses]} from the fastrouter's stats socket."""
        s = socket.socket(socket.AF_UNIX)
        s.connect(os.path.join(self.state, "router", "fastrouter-stats.sock"))
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


@pytest.fixture
def rnode(api):
    os.makedirs(nd.BASE, exist_ok=True)
    import tempfile
    import shutil
    base = tempfile.mkdtemp(prefix="router-", dir=nd.BASE)
    os.chmod(base, 0o755)
    n = RouterNode(api, base)
    try:
        n.start()
        yield n
    finally:
        try:
            n.cleanup()
        finally:
            print(n.router_log()[-3000:])
            for uid in n.uids:
                try:
                    print(open(os.path.join(n.home(uid), "logs", "emperor.log"),
                               errors="replace").read()[-3000:])
                except OSError:
                    pass
            shutil.rmtree(base, ignore_errors=True)


def add_domain(api, auth, name):
    # As the supplier (no DNS TXT check), for the customer.
    api.admin("POST", "/domains", {"name": name, "customer": auth[0]}, expect=201)


def launch(node, host_distro, ssh_keys, auth=None, i=0):
    uid = node.new_container() if auth is None else node.api.new_container(
        auth[0], node.server["name"], name=unique("box"))
    if auth is not None:
        node.uids.append(uid)
    a = auth or node.auth
    assert node.api.post(f"/containers/{uid}", auth=a,
                         json={"distro": host_distro["id"]}).status_code == 200
    assert node.api.post(f"/containers/{uid}", auth=a,
                         json={"ssh_keys": [ssh_keys[i]]}).status_code == 200
    wait_for(lambda: nd.running(uid), 5, "the Emperor")
    return uid


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
    instance unsubscribes before its workers finish what they hold
    (--emperor-graceful-shutdown)."""
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
    their arguments and, on this HTTP-only router, register the plain-HTTP
    record of the name (the public platform's ssl-domain does too)."""
    uid = launch(rnode, host_distro, ssh_keys)
    lines = {"ssl-domain": "{d} $(HOME)/k.pem $(HOME)/c.pem",
             "ssl-ca-domain": "{d} $(HOME)/k.pem $(HOME)/c.pem !$(HOME)/ca.pem",
             "cluster-domain": "{d}",
             "ssl-cluster-domain": "{d} $(HOME)/k.pem $(HOME)/c.pem"}
    for i, (opt, args) in enumerate(lines.items()):
        dom = unique(f"s{i}") + ".org"
        add_domain(rnode.api, rnode.auth, dom)
        name = f"opt{i}"
        rnode.vassal(uid, f"{name}.ini",
                     f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/{name}.py\n"
                     f"{opt} = {args.format(d=dom)}\n",
                     files=[(f"{name}.py", f"NAME = {opt!r}\n" + PY_APP)])
        rnode.wait_answer(dom, f"python {opt}")
