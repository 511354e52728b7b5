"""The node's HTTP router (docs/ROUTER.md) end to end: the real API, the real
imperium-node daemon with `router_http` on a free local port, containers on
the host distro, vassals dropped into vassals/ using the `domain` shortcut,
and plain HTTP requests through the router.  Root only."""

import json
import os
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
    # (the shortcut names sockets <domain>_<start time in µs>.socket)
    run_b = os.path.join(rnode.home(b), "run")
    wait_for(lambda: any(f.startswith(dom + "_") and f.endswith(".socket")
                         for f in os.listdir(run_b)),
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


@pytest.mark.skip(reason="issue 5, open: a request in flight when the Emperor stops the old "
                         "instance is reset (seen 1 in 3 runs on a loaded machine); the vassal "
                         "must unsubscribe and drain before it dies")
def test_replacing_a_vassal_under_load_fails_no_request(rnode, host_distro, ssh_keys):
    dom = unique("rl") + ".org"
    add_domain(rnode.api, rnode.auth, dom)
    uid = launch(rnode, host_distro, ssh_keys)
    rnode.py_vassal(uid, "one", dom, tag="one")
    wait_for(lambda: len(rnode.subscriptions().get(dom, [])) == 1, 30, "one subscriber")
    # Replace "one" by a new file under a load of sequential requests: the
    # new instance subscribes, then the old file goes: no failed request.
    # (A touch reload of a domain's only vassal re-execs uWSGI, which names
    # its socket anew: see docs/ROUTER.md.)
    failures, seen = [], set()
    deadline = time.monotonic() + 10
    replaced = removed = False
    while time.monotonic() < deadline:
        if not replaced:
            rnode.py_vassal(uid, "one-v2", dom, tag="v2")
            replaced = True
        if not removed and len(rnode.subscriptions().get(dom, [])) == 2:
            os.remove(os.path.join(rnode.home(uid), "vassals", "one.ini"))
            removed = True
        try:
            r = rnode.get(dom)
            if r.status_code != 200:
                failures.append(r.status_code)
            seen.add(r.text)
        except requests.RequestException as e:
            failures.append(str(e))
    assert removed, "the new vassal never subscribed"
    assert not failures, failures
    assert rnode.get(dom).text.endswith("v2") and any(t.endswith("one") for t in seen)


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
