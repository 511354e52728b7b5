"""/domains/ with its DNS ownership check against a real DNS server (dnsmasq),
/domains/<id>/containers and /containers/<uid>/domains."""

import os
import random
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import BIN, curl, start_api, stop_api, unique

DNSMASQ = "/usr/sbin/dnsmasq"


def free_udp_tcp_port(host="127.0.0.1"):
    """A port free for both UDP and TCP (dnsmasq listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def wire_name(name):
    """A domain name in DNS wire format, hex: the data of an NS record."""
    out = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    return (out + b"\0").hex()


class Dnsmasq:
    """A dnsmasq answering only from its own records: TXT records, NS records
    (as raw RRs) and host addresses.  Records are kept in a config file;
    every change restarts it (dnsmasq reads txt-record only at start)."""

    def __init__(self, workdir, address="127.0.0.1", port=None, name="dns"):
        self.address = address
        self.port = port or free_udp_tcp_port(address)
        self.conf = os.path.join(workdir, f"{name}.conf")
        self.logpath = os.path.join(workdir, f"{name}.log")
        # Names under these answer NXDOMAIN when unknown, instead of REFUSED
        # (dnsmasq has no upstream here): the answer of a real zone.
        self.lines = ["local=/test/", "local=/org/"]
        self.proc = None

    def txt(self, name, text):
        self.lines.append(f'txt-record={name},"{text}"')
        self.restart()

    def ns(self, zone, host, address):
        self.lines.append(f"dns-rr={zone},2,{wire_name(host)}")
        self.lines.append(f"host-record={host},{address}")
        self.restart()

    def restart(self):
        self.stop()
        with open(self.conf, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        with open(self.logpath, "a") as log:
            self.proc = subprocess.Popen(
                [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--log-queries",
                 f"--port={self.port}", f"--listen-address={self.address}",
                 "--bind-interfaces", f"--conf-file={self.conf}", "--pid-file="],
                stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self):
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited:\n" + open(self.logpath).read())
            try:
                with socket.create_connection((self.address, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("dnsmasq did not start:\n" + open(self.logpath).read())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def env():
    """An API whose DNS check asks a dnsmasq of its own."""
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-dns-") as d:
        dns = Dnsmasq(d)
        a = None
        try:
            dns.restart()
            a = start_api(d, ["--dns-resolver", f"127.0.0.1:{dns.port}"])
            yield a, dns
        finally:
            try:
                if a:
                    stop_api(a)
            finally:
                dns.stop()


def customer(api):
    auth, info = api.new_customer()
    return auth, info["uuid"]


def names_of(api, auth, query=""):
    r = api.get("/domains/" + query, auth=auth)
    assert r.status_code == 200, r.text
    return [d["name"] for d in r.json()]


def add(api, auth, name):
    return api.post("/domains/", auth=auth, json={"name": name})


# ---- the DNS check ----

def test_name_with_its_txt_record_is_created(env):
    api, dns = env
    auth, uuid = customer(api)
    name = unique("ok") + ".test"
    dns.txt(name, f"uwsgi:{uuid}")
    r = add(api, auth, name)
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["message"] == "Created" and d["name"] == name
    assert d["tags"] == [] and d["note"] == "" and d["id"] > 0
    assert len(d["uuid"]) == 36 and d["uuid"] != uuid
    assert api.get("/domains/", auth=auth).json() == [
        {"id": d["id"], "name": name, "uuid": d["uuid"], "tags": []}]


def test_names_are_lower_cased(env):
    api, dns = env
    auth, uuid = customer(api)
    name = unique("case") + ".test"
    dns.txt(name, f"uwsgi:{uuid}")
    r = add(api, auth, name.upper() + ".")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == name
    assert names_of(api, auth) == [name]


def test_wrong_txt_record_is_403_naming_the_missing_record(env):
    api, dns = env
    auth, uuid = customer(api)
    other_auth, other_uuid = customer(api)
    name = unique("wrong") + ".test"
    dns.txt(name, f"uwsgi:{other_uuid}")  # someone else's record
    r = add(api, auth, name)
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"] == "Forbidden"
    assert f'"uwsgi:{uuid}"' in body["reason"] and name in body["reason"]
    assert names_of(api, auth) == []
    # Without any TXT record at all: the same answer.
    bare = unique("bare") + ".test"
    r = add(api, auth, bare)
    assert r.status_code == 403 and f'"uwsgi:{uuid}"' in r.json()["reason"]
    assert bare in r.json()["reason"]
    assert names_of(api, auth) == []


def test_subdomain_of_a_verified_parent(env):
    api, dns = env
    auth, uuid = customer(api)
    parent = unique("parent") + ".test"
    dns.txt(parent, f"uwsgi:{uuid}")
    for name in ("www." + parent, "a.b." + parent):
        r = add(api, auth, name)
        assert r.status_code == 201, (name, r.text)
    assert names_of(api, auth) == ["www." + parent, "a.b." + parent]


def test_a_record_on_a_child_does_not_verify_the_parent(env):
    api, dns = env
    auth, uuid = customer(api)
    parent = unique("p") + ".test"
    dns.txt("www." + parent, f"uwsgi:{uuid}")
    r = add(api, auth, parent)
    assert r.status_code == 403
    assert f'no TXT record "uwsgi:{uuid}" found on {parent}' in r.json()["reason"]


def test_txt_record_among_others_and_in_several_strings(env):
    api, dns = env
    auth, uuid = customer(api)
    name = unique("multi") + ".test"
    dns.txt(name, "v=spf1 -all")
    dns.txt(name, f"uwsgi:{uuid}")
    assert add(api, auth, name).status_code == 201
    # dnsmasq's "a","b" syntax: one record made of two character-strings.
    split = unique("split") + ".test"
    dns.lines.append(f'txt-record={split},"uwsgi:","{uuid}"')
    dns.restart()
    assert add(api, auth, split).status_code == 201


def test_wildcard_is_checked_on_the_name_without_the_dot(env):
    api, dns = env
    auth, uuid = customer(api)
    dns.txt("example.org", f"uwsgi:{uuid}")
    r = add(api, auth, ".example.org")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == ".example.org"
    # The wildcard and the plain name are two objects.
    assert add(api, auth, "example.org").status_code == 201
    assert sorted(names_of(api, auth)) == [".example.org", "example.org"]
    # A record below the wildcard's name proves nothing about it.
    zone = unique("wild") + ".test"
    dns.txt("www." + zone, f"uwsgi:{uuid}")
    r = add(api, auth, "." + zone)
    assert r.status_code == 403
    assert f"found on {zone} or its parents" in r.json()["reason"]


def test_a_name_held_by_anyone_is_409(env):
    api, dns = env
    a, uuid_a = customer(api)
    b, uuid_b = customer(api)
    name = unique("taken") + ".test"
    dns.txt(name, f"uwsgi:{uuid_a}")
    dns.txt(name, f"uwsgi:{uuid_b}")  # b controls the zone too: still taken
    assert add(api, a, name).status_code == 201
    r = add(api, b, name)
    assert r.status_code == 409 and r.json()["error"] == "Conflict" and r.json()["reason"]
    assert add(api, a, name).status_code == 409
    assert add(api, a, name.upper()).status_code == 409
    assert names_of(api, b) == []
    assert names_of(api, a) == [name]


def test_quickstart_curl_delete_by_name(env):
    api, dns = env
    (user, pw), uuid = customer(api)
    name = unique("mynewdomain") + ".org"
    dns.txt(name, f"uwsgi:{uuid}")
    base = f"http://{user}:{pw}@127.0.0.1:{api.port}/api/domains/"
    # curl -X POST -d '{"name":"mynewdomain.org"}' https://kratos:deimos17@foobar.com/api/domains/
    status, body = curl("-X", "POST", "-d", '{"name":"%s"}' % name, base)
    assert status == 201 and body.endswith("\n")
    assert names_of(api, (user, pw)) == [name]
    # curl -X DELETE -d '{"name":"mynewdomain.org"}' https://kratos:deimos17@foobar.com/api/domains/
    status, body = curl("-X", "DELETE", "-d", '{"name":"%s"}' % name, base)
    assert status == 200 and body == '{"message":"Ok"}\n'
    assert names_of(api, (user, pw)) == []
    status, body = curl("-X", "DELETE", "-d", '{"name":"%s"}' % name, base)
    assert status == 404 and body.endswith("\n")


@pytest.mark.parametrize("name", [
    "", "nodot", "-lead.test", "trail-.test", "a..b.test", "x" * 64 + ".test",
    "under_score.test", "sp ace.test", ".", "..test", "ünï.test", "a/b.test",
    ("a" * 60 + ".") * 5 + "test",
])
def test_invalid_names_are_400(env, name):
    api, _ = env
    auth, _ = customer(api)
    r = add(api, auth, name)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "Bad Request" and r.json()["reason"]
    assert api.delete("/domains/", auth=auth, json={"name": name}).status_code == 400
    assert names_of(api, auth) == []


@pytest.mark.parametrize("body", [None, {}, {"name": None}, {"name": 3}, {"name": ["a.test"]},
                                  {"nome": "a.test"}, "not json", "[1, 2]"])
def test_malformed_bodies_are_400_and_change_nothing(env, body):
    api, dns = env
    auth, uuid = customer(api)
    name = unique("keep") + ".test"
    dns.txt(name, f"uwsgi:{uuid}")
    assert add(api, auth, name).status_code == 201
    before = api.get("/domains/", auth=auth).json()
    kw = {"data": body} if isinstance(body, str) or body is None else {"json": body}
    for method in ("post", "delete"):
        r = getattr(api, method)("/domains/", auth=auth, **kw)
        assert r.status_code == 400, (method, body, r.text)
        assert r.json()["reason"]
    assert api.get("/domains/", auth=auth).json() == before


def test_anonymous_is_401(env):
    api, _ = env
    assert api.get("/domains/").status_code == 401
    assert api.post("/domains/", json={"name": "x.test"}).status_code == 401
    assert api.delete("/domains/", json={"name": "x.test"}).status_code == 401
    assert api.get("/domains/1").status_code == 401


# ---- by id: note, tags ----

def test_get_post_delete_by_id(env):
    api, dns = env
    auth, uuid = customer(api)
    for t in ("web", "prod"):
        assert api.post("/tags/", auth=auth, json={"name": t}).status_code == 201
    names = [unique("byid") + ".test" for _ in range(2)]
    for n in names:
        dns.txt(n, f"uwsgi:{uuid}")
    d1, d2 = (add(api, auth, n).json() for n in names)
    full = {"id": d1["id"], "name": names[0], "uuid": d1["uuid"], "tags": [], "note": ""}
    assert api.get(f"/domains/{d1['id']}", auth=auth).json() == full
    assert api.get(f"/domains/{d1['id']}/", auth=auth).json() == full

    r = api.post(f"/domains/{d1['id']}", auth=auth,
                 json={"note": "main site", "tags": ["web", "unknown"]})
    assert r.status_code == 200
    full.update(note="main site", tags=["web"])
    assert r.json() == full
    assert api.get(f"/domains/{d1['id']}", auth=auth).json() == full
    r = api.post(f"/domains/{d2['id']}", auth=auth, json={"tags": ["prod", "web"]})
    assert r.json()["tags"] == ["prod", "web"] and r.json()["note"] == ""

    # ?tags= keeps domains carrying any of the named tags.
    assert names_of(api, auth, "?tags=web") == names
    assert names_of(api, auth, "?tags=prod") == [names[1]]
    assert names_of(api, auth, "?tags=nope,prod") == [names[1]]
    assert names_of(api, auth, "?tags=nope") == []
    assert api.get("/domains/?tags=web", auth=auth).json()[0]["tags"] == ["web"]

    # Only the given fields change; wrong types change nothing.
    r = api.post(f"/domains/{d1['id']}", auth=auth, json={"note": "only note"})
    assert r.json()["tags"] == ["web"] and r.json()["note"] == "only note"
    full["note"] = "only note"
    for bad in ({"note": 3}, {"tags": "web"}, {"tags": [1]}, {"note": "x", "tags": [None]}):
        r = api.post(f"/domains/{d1['id']}", auth=auth, json=bad)
        assert r.status_code == 400 and r.json()["reason"], bad
    r = api.post(f"/domains/{d1['id']}", auth=auth, data="{broken")
    assert r.status_code == 400
    assert api.get(f"/domains/{d1['id']}", auth=auth).json() == full
    r = api.post(f"/domains/{d1['id']}", auth=auth, json={"tags": []})
    assert r.json()["tags"] == []

    # Deleting a tag takes it off the domain.
    tags = {t["name"]: t["id"] for t in api.get("/tags/", auth=auth).json()}
    api.delete(f"/tags/{tags['prod']}", auth=auth)
    assert api.get(f"/domains/{d2['id']}", auth=auth).json()["tags"] == ["web"]

    r = api.delete(f"/domains/{d1['id']}", auth=auth)
    assert r.status_code == 200 and r.json() == {"message": "Ok"}
    assert api.get(f"/domains/{d1['id']}", auth=auth).status_code == 404
    assert api.delete(f"/domains/{d1['id']}", auth=auth).status_code == 404
    assert names_of(api, auth) == [names[1]]
    for bad_id in ("0", "-1", "abc", "999999"):
        assert api.get(f"/domains/{bad_id}", auth=auth).status_code == 404


def test_domains_of_another_customer_are_invisible(env):
    api, dns = env
    a, uuid_a = customer(api)
    b, _ = customer(api)
    name = unique("mine") + ".test"
    dns.txt(name, f"uwsgi:{uuid_a}")
    d = add(api, a, name).json()
    before = api.get(f"/domains/{d['id']}", auth=a).json()
    missing = api.get("/domains/999999", auth=b)
    for r in (api.get(f"/domains/{d['id']}", auth=b),
              api.post(f"/domains/{d['id']}", auth=b, json={"note": "hijack"}),
              api.delete(f"/domains/{d['id']}", auth=b),
              api.get(f"/domains/{d['id']}/containers", auth=b),
              api.get(f"/metrics/domain.hits/{d['id']}", auth=b),
              api.delete("/domains/", auth=b, json={"name": name})):
        assert r.status_code == 404
        assert r.json() == missing.json()  # no hint that it exists
    assert names_of(api, b) == []
    assert api.get(f"/domains/{d['id']}", auth=a).json() == before


# ---- failures of the DNS itself ----

@pytest.fixture
def silent_dns_api():
    """An API whose resolver swallows every query."""
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-dns-") as d, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        a = start_api(d, ["--dns-resolver", f"127.0.0.1:{sink.getsockname()[1]}",
                          "--dns-timeout-ms", "1000"])
        try:
            yield a
        finally:
            stop_api(a)


def test_dns_timeout_is_503_and_creates_nothing(silent_dns_api):
    api = silent_dns_api
    auth, uuid = customer(api)
    t = time.time()
    r = add(api, auth, "slow.example.test")
    assert time.time() - t < 4
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "Service Unavailable"
    reason = r.json()["reason"]
    assert "failed" in reason and "slow.example.test" in reason and "try again" in reason
    assert names_of(api, auth) == []


def test_pending_dns_checks_do_not_hold_up_reads():
    """Checks wait on worker threads: the HTTP threads keep answering reads
    while more checks are pending than there are HTTP threads."""
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-dns-") as d, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        api = start_api(d, ["--dns-resolver", f"127.0.0.1:{sink.getsockname()[1]}",
                            "--dns-timeout-ms", "4000", "--threads", "2", "--workers", "8"])
        try:
            auth, _ = customer(api)
            assert api.get("/me/", auth=auth).status_code == 200  # password verified
            results = []
            posts = [threading.Thread(target=lambda i=i: results.append(
                add(api, auth, f"slow{i}.example.test").status_code)) for i in range(6)]
            for t in posts:
                t.start()
            time.sleep(0.5)  # the checks are under way
            for path in ("/me/", "/domains/", "/tags/"):
                assert api.get(path, auth=auth).status_code == 200
                assert results == [], "a read waited for a DNS check"
            for t in posts:
                t.join()
            assert results == [503] * 6
        finally:
            stop_api(api)


def test_bad_resolver_setting_is_refused_at_start():
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-dns-") as d:
        for bad in ("resolver.example", "1.2.3.4:0", "1.2.3.4:99999", "1.2.3:53", "[::1]"):
            p = subprocess.run([os.path.join(BIN, "imperium-api"), "--dns-resolver", bad,
                                "--database", "sqlite:" + os.path.join(d, "x.db"),
                                "--admin-token-file", os.path.join(d, "tok")],
                               capture_output=True, text=True, timeout=30)
            assert p.returncode == 2, (bad, p.stderr)
            assert "dns_resolver" in p.stderr
        p = subprocess.run([os.path.join(BIN, "imperium-api"), "--dns-timeout-ms", "abc"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "dns_timeout_ms" in p.stderr


# ---- authoritative servers first ----

def test_unreachable_authoritative_servers_fall_back_to_the_resolver(env):
    api, dns = env
    auth, uuid = customer(api)
    zone = unique("deadns") + ".test"
    # The zone's NS resolves to an address where no DNS server listens.
    dns.ns(zone, "ns1." + zone, loopback_address())
    dns.txt(zone, f"uwsgi:{uuid}")
    r = add(api, auth, "www." + zone)
    assert r.status_code == 201, r.text


def loopback_address():
    """Some address of 127.0.0.0/8 (all of it is loopback on Linux), picked
    at random so that concurrent test runs do not meet."""
    return f"127.83.{random.randint(0, 255)}.{random.randint(1, 254)}"


def bindable(address, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, port))
            return True
        except OSError:
            return False


@pytest.fixture
def authoritative(env):
    """A second dnsmasq on port 53 of another loopback address, standing for
    a zone's authoritative server (c-ares asks name servers on port 53)."""
    address = loopback_address()
    if not bindable(address, 53):
        pytest.skip(f"port 53 of {address} is not available (needs root)")
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-auth-") as d:
        auth_dns = Dnsmasq(d, address=address, port=53, name="auth")
        try:
            yield auth_dns
        finally:
            auth_dns.stop()


def test_the_authoritative_answer_wins_over_the_resolver(env, authoritative):
    api, dns = env
    auth, uuid = customer(api)
    fresh, stale = unique("fresh") + ".test", unique("stale") + ".test"
    for zone in (fresh, stale):
        dns.ns(zone, "ns1." + zone, authoritative.address)
    # The resolver still caches the state before the change...
    dns.txt(fresh, "uwsgi:not-yet")
    dns.txt(stale, f"uwsgi:{uuid}")
    # ...the zone's own server has the truth.
    authoritative.txt(fresh, f"uwsgi:{uuid}")
    authoritative.txt(stale, "uwsgi:removed")
    r = add(api, auth, fresh)
    assert r.status_code == 201, r.text
    r = add(api, auth, "www." + fresh)  # www: NXDOMAIN there, the parent verifies
    assert r.status_code == 201, r.text
    r = add(api, auth, stale)
    assert r.status_code == 403, r.text
    assert names_of(api, auth) == [fresh, "www." + fresh]
    log = open(authoritative.logpath).read()
    assert f"query[TXT] {fresh}" in log and f"query[TXT] {stale}" in log


# ---- who served what today ----

def insert_hits(api, rows):
    api.sql_many("INSERT INTO domain_metrics (domain_id, container_id, metric, unix, "
                 "value) VALUES (?, ?, ?, ?, ?)", rows)


def test_containers_and_domains_served_today(env):
    api, dns = env
    auth, info = api.new_customer()
    other, _ = api.new_customer()
    server = api.new_server()
    uids = [api.new_container(auth[0], server["name"], name=f"c{i}") for i in range(3)]
    foreign = api.new_container(other[0], server["name"], name="foreign")
    ids = [u - 30000 for u in uids]
    doms = []
    for i in range(2):
        r = api.admin("POST", "/domains", {"name": unique(f"served{i}") + ".test",
                                           "customer": auth[0]}, expect=201)
        doms.append(r.json())
    now = int(time.time())
    today = now - now % 86400
    insert_hits(api, [
        (doms[0]["id"], ids[0], "hits", today + 5, 10),
        (doms[0]["id"], ids[0], "hits", today + 65, 3),      # twice: listed once
        (doms[0]["id"], ids[1], "hits", today + 10, 1),
        (doms[0]["id"], ids[2], "hits", today - 10, 99),     # yesterday
        (doms[0]["id"], ids[2], "net.rx", today + 10, 99),   # not a hit
        (doms[0]["id"], None, "hits", today + 10, 5),        # no container
        (doms[0]["id"], foreign - 30000, "hits", today + 5, 1),  # not the customer's
        (doms[1]["id"], ids[1], "hits", today + 20, 2),
    ])
    c = {u: api.get(f"/containers/{u}", auth=auth).json() for u in uids}
    r = api.get(f"/domains/{doms[0]['id']}/containers", auth=auth)
    assert r.status_code == 200
    assert r.json() == [{"id": ids[i], "uuid": c[uids[i]]["uuid"], "name": f"c{i}",
                         "uid": uids[i]} for i in (0, 1)]
    assert api.get(f"/domains/{doms[1]['id']}/containers/", auth=auth).json() == [
        {"id": ids[1], "uuid": c[uids[1]]["uuid"], "name": "c1", "uid": uids[1]}]

    def short(d):
        return {"id": d["id"], "uuid": d["uuid"], "name": d["name"]}
    assert api.get(f"/containers/{uids[0]}/domains", auth=auth).json() == [short(doms[0])]
    assert api.get(f"/containers/{uids[1]}/domains/", auth=auth).json() == [
        short(doms[0]), short(doms[1])]
    assert api.get(f"/containers/{uids[2]}/domains", auth=auth).json() == []
    # Someone else's container, or none: 403 as for every container endpoint.
    assert api.get(f"/containers/{foreign}/domains", auth=auth).status_code == 403
    assert api.get(f"/containers/{uids[0]}/domains", auth=other).status_code == 403
    assert api.get("/containers/99999/domains", auth=auth).status_code == 403
    assert api.get(f"/containers/{foreign}/domains", auth=other).json() == []


def test_concurrent_checks(env):
    """Several workers run DNS checks at once, each with its own c-ares state."""
    api, dns = env
    auth, uuid = customer(api)
    parent = unique("conc") + ".test"
    dns.txt(parent, f"uwsgi:{uuid}")
    names = [f"n{i}.{parent}" for i in range(12)] + [f"x{i}.{unique('no')}.test"
                                                     for i in range(4)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda n: add(api, auth, n).status_code, names))
    assert codes == [201] * 12 + [403] * 4
    assert sorted(names_of(api, auth)) == sorted(names[:12])
