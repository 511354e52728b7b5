"""What nodes report over their channel (issue 16, docs/NODE-CHANNEL.md): metrics
read back through the customer's /metrics/ and domain endpoints, system alarms
in /alarms/ as level 0, the alarms raised with the API sent down to the node (a
raise wakes its long poll), the 409 on shrinking storage below the reported
usage, and the API's own Prometheus metrics.  API only: the test posts as a
node with the server's secret."""

import re
import threading
import time

import requests

from conftest import unique

MB = 1024 * 1024


def node(api, server, method, route, **kw):
    return requests.request(method, f"{api.base}/node/{route}", timeout=60,
                            auth=(server["name"], server["node_secret"]), **kw)


def post_metrics(api, server, containers=(), domains=()):
    r = node(api, server, "POST", "metrics",
             json={"containers": list(containers), "domains": list(domains)})
    assert r.status_code == 200, r.text
    return r.json()


def post_alarms(api, server, alarms):
    r = node(api, server, "POST", "alarms", json={"alarms": alarms})
    assert r.status_code == 200, r.text
    return r.json()


def world(api, **server_kw):
    """A customer with two containers and a domain on a server, and a
    container of the same customer on another server."""
    auth, _ = api.new_customer()
    server = api.new_server(**server_kw)
    elsewhere = api.new_server()
    uids = [api.new_container(auth[0], server["name"], name=f"c{i}") for i in range(2)]
    far = api.new_container(auth[0], elsewhere["name"])
    dom = api.admin("POST", "/domains", {"name": unique("reports") + ".test",
                                         "customer": auth[0]}, expect=201).json()
    return {"auth": auth, "server": server, "elsewhere": elsewhere, "uids": uids, "far": far,
            "domain": dom}


def test_metrics_read_back_by_the_customer(api):
    w = world(api)
    a, (u1, u2), dom = w["auth"], w["uids"], w["domain"]
    now = int(time.time())
    containers = [{"uid": u1, "unix": now, "m": {"cpu": 1200000, "mem": 5 * MB, "quota": MB}},
                  {"uid": w["far"], "unix": now, "m": {"cpu": 1}}]   # another server's
    domains = [{"name": dom["name"], "uid": u1, "unix": now, "m": {"hits": 7, "net.tx": 7315}},
               {"name": dom["name"], "uid": u2, "unix": now, "m": {"hits": 3}}]
    for _ in range(2):  # a resend replaces, never doubles
        assert post_metrics(api, w["server"], containers, domains) == {"stored": 6, "skipped": 1}
    r = api.get(f"/metrics/container.cpu/{u1}", auth=a)
    assert r.status_code == 200 and r.json() == [[now, 1200000]]
    assert api.get(f"/metrics/container.mem/{u1}", auth=a).json() == [[now, 5 * MB]]
    assert api.get(f"/metrics/container.cpu/{w['far']}", auth=a).json() == []
    hits = api.get(f"/metrics/domain.hits/{dom['id']}", auth=a).json()
    assert hits == [{"container": u1, "metrics": [[now, 7]]},
                    {"container": u2, "metrics": [[now, 3]]}]
    assert sum(v for e in hits for _, v in e["metrics"]) == 10
    served = api.get(f"/domains/{dom['id']}/containers", auth=a).json()
    assert sorted(c["uid"] for c in served) == [u1, u2]
    assert [d["id"] for d in api.get(f"/containers/{u1}/domains", auth=a).json()] == [dom["id"]]


def test_a_bad_batch_stores_nothing(api):
    w = world(api)
    u1 = w["uids"][0]
    now = int(time.time())
    r = node(api, w["server"], "POST", "metrics", json={"containers": [
        {"uid": u1, "unix": now, "m": {"cpu": 5}},
        {"uid": u1, "unix": now, "m": {"cpu": "lots"}}]})
    assert r.status_code == 400
    assert "containers[1].m.cpu must be a non-negative integer" in r.json()["reason"]
    # Values past 2^53 and dates more than a day ahead of the API's clock.
    for entry, words in (({"uid": u1, "unix": now, "m": {"quota": 2 ** 63 - 1}},
                          "containers[0].m.quota must be a non-negative integer of at most 2^53"),
                         ({"uid": u1, "unix": now + 2 * 86400, "m": {"quota": 1}},
                          "containers[0].unix is more than 86400 seconds ahead")):
        r = node(api, w["server"], "POST", "metrics", json={"containers": [entry]})
        assert r.status_code == 400 and words in r.json()["reason"], r.text
    r = node(api, w["server"], "POST", "alarms", json={"alarms": [
        {"ref": "late", "uid": u1, "unix": 4102444800, "msg": "from 2100"}]})
    assert r.status_code == 400
    assert "alarms[0].unix is more than 86400 seconds ahead" in r.json()["reason"]
    assert alarms_of(api, w["auth"], u1) == []
    assert api.get(f"/metrics/container.cpu/{u1}", auth=w["auth"]).json() == []
    assert api.get(f"/metrics/container.quota/{u1}", auth=w["auth"]).json() == []
    # Customers and the admin token are not nodes.
    r = requests.post(f"{api.base}/node/metrics", auth=w["auth"], json={}, timeout=10)
    assert r.status_code == 401


def alarms_of(api, auth, uid):
    r = api.get("/alarms/", auth=auth, params={"container": uid})
    assert r.status_code == 200, r.text
    return r.json()


def test_node_alarms_are_level_0_and_stored_once(api):
    w = world(api)
    a, u1 = w["auth"], w["uids"][0]
    now = int(time.time())
    batch = [{"ref": "boot-1", "uid": u1, "unix": now, "class": "oom", "msg": "OOM kill"},
             {"ref": "boot-2", "uid": w["far"], "unix": now, "class": "oom", "msg": "x"}]
    assert post_alarms(api, w["server"], batch) == {"stored": 1, "skipped": 1}
    assert post_alarms(api, w["server"], batch) == {"stored": 0, "skipped": 2}
    got = alarms_of(api, a, u1)
    assert len(got) == 1
    first = got[0]
    assert first["level"] == 0 and first["class"] == "oom" and first["msg"] == "OOM kill"
    assert first["vassal"] is None and first["color"] == "#ffffff" and first["unix"] == now
    assert alarms_of(api, a, w["far"]) == []
    # Ids only grow: the newest deleted, the next alarm gets a new id.
    assert api.delete(f"/alarms/{first['id']}", auth=a).status_code == 200
    post_alarms(api, w["server"], [{"ref": "boot-3", "uid": u1, "unix": now, "class": "quota",
                                    "msg": "90%"}])
    assert alarms_of(api, a, u1)[0]["id"] > first["id"]
    # Customers still cannot raise level 0.
    assert api.post(f"/alarms/raise/{u1}", auth=a, data="x",
                    params={"level": 0}).status_code == 403


def test_node_reads_the_api_alarms_of_its_server(api):
    w = world(api)
    a, (u1, u2) = w["auth"], w["uids"]
    post_alarms(api, w["server"], [{"ref": "r1", "uid": u1, "unix": 5, "msg": "system"}])
    r = node(api, w["server"], "GET", "alarms")
    assert r.status_code == 200 and r.json() == {"alarms": [], "alarm_seq": 0}
    for uid, msg in ((u1, "one"), (w["far"], "far"), (u2, "two")):
        assert api.post(f"/alarms/raise/{uid}", auth=a, data=msg,
                        params={"level": 2, "vassal": "app.ini"}).status_code == 201
    got = node(api, w["server"], "GET", "alarms").json()
    assert [x["msg"] for x in got["alarms"]] == ["one", "two"]
    one, two = got["alarms"]
    assert one["uid"] == u1 and one["level"] == 2 and one["vassal"] == "app.ini"
    assert one["color"] == "#ffffff" and got["alarm_seq"] == two["id"] > one["id"]
    after = node(api, w["server"], "GET", "alarms", params={"after": one["id"]}).json()
    assert [x["msg"] for x in after["alarms"]] == ["two"]
    assert node(api, w["server"], "GET", "alarms", params={"after": "x"}).status_code == 400
    st = node(api, w["server"], "GET", "state").json()
    assert st["server"]["alarm_seq"] == two["id"]


def test_a_raise_wakes_the_nodes_long_poll(api, ssh_keys):
    w = world(api)
    a, u1 = w["auth"], w["uids"][0]
    distro = api.new_distro()
    assert api.post(f"/containers/{u1}", auth=a,
                    json={"distro": distro["id"], "ssh_keys": [ssh_keys[0]]}).status_code == 200
    st = node(api, w["server"], "GET", "state").json()
    result = {}

    def poll():
        t0 = time.monotonic()
        result["state"] = node(api, w["server"], "GET", "state",
                               params={"version": st["version"], "wait": 30}).json()
        result["took"] = time.monotonic() - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(1)  # the poll is waiting
    assert api.post(f"/alarms/raise/{u1}", auth=a, data="wake up").status_code == 201
    t.join(40)
    assert not t.is_alive()
    assert result["took"] < 10, result
    assert result["state"]["version"] != st["version"]
    assert result["state"]["server"]["alarm_seq"] > st["server"]["alarm_seq"]


def raise_until_429(api, uid, most, **kw):
    """Raise alarms for `uid` until one is refused (at most `most`): how
    many were raised, and the refusal."""
    for i in range(most):
        r = requests.post(f"{api.base}/api/alarms/raise/{uid}", data=f"m{i}", timeout=10, **kw)
        if r.status_code == 429:
            return i, r
        assert r.status_code == 201, (i, r.text)
    raise AssertionError(f"{most} alarms raised without a 429")


def test_raising_past_the_limit_is_429(api):
    """alarm_raises (120 by default): a burst of 120 per container, then two
    a second; with credentials or the alarm key alike; others unaffected."""
    w = world(api)
    a, (u1, u2) = w["auth"], w["uids"]
    key = api.get(f"/alarm_key/{u1}", auth=a).json()["alarm_key"]
    # The burst, plus what refilled meanwhile (two a second).
    n, r = raise_until_429(api, u1, 200, params={"key": key})
    assert 120 <= n < 170
    for refused in (r, raise_until_429(api, u1, 5, auth=a)[1]):
        assert int(refused.headers["Retry-After"]) == 1
        assert refused.json()["reason"].startswith(
            "too many alarms raised for this container: retry in ")
    msgs = [x["msg"] for x in alarms_of(api, a, u1)]
    assert f"m{n - 1}" in msgs and f"m{n}" not in msgs  # the refused one: not stored
    assert api.post(f"/alarms/raise/{u2}", auth=a, data="other").status_code == 201
    time.sleep(1)
    assert api.post(f"/alarms/raise/{u1}", auth=a, data="later").status_code == 201


def test_storage_below_the_reported_usage_is_409(api):
    owner, _ = api.new_customer()
    server = api.new_server(owner=owner[0])
    uid = api.new_container(owner[0], server["name"], storage=100)
    r = api.post(f"/containers/{uid}", auth=owner, json={"storage": 30})
    assert r.status_code == 200, r.text  # no sample yet: allowed
    post_metrics(api, server, [{"uid": uid, "unix": int(time.time()) - 60,
                                "m": {"quota": 2 * MB}},
                               {"uid": uid, "unix": int(time.time()), "m": {"quota": 15 * MB}}])
    r = api.post(f"/containers/{uid}", auth=owner, json={"storage": 12})
    assert r.status_code == 409
    assert r.json()["reason"] == "storage 12 MB is below what the container uses (15 MB)"
    r = api.admin("POST", f"/containers/{uid}", {"storage": 14})
    assert r.status_code == 409
    assert r.json()["reason"] == "storage 14 MB is below what the container uses (15 MB)"
    assert api.get(f"/containers/{uid}", auth=owner).json()["storage"] == 30
    assert api.post(f"/containers/{uid}", auth=owner, json={"storage": 15}).status_code == 200
    assert api.admin("POST", f"/containers/{uid}", {"storage": 20}).status_code == 200


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([0-9.eE+-]+|\+Inf|NaN)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse_prometheus(text):
    """{(name, frozenset(labels)): value}; fails on any line that is not
    a comment or a sample of the text format 0.0.4."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = SAMPLE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def test_admin_metrics(api):
    w = world(api)
    key = ("imperium_api_requests_total", frozenset({
        ("api", "customer"), ("group", "containers"), ("method", "GET"), ("status", "2xx")}))

    def scrape():
        r = requests.get(api.base + "/admin/metrics", timeout=10,
                         headers={"Authorization": "Bearer " + api.token})
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert r.text.endswith("\n")
        return parse_prometheus(r.text)

    before = scrape()
    for _ in range(3):
        assert api.get(f"/containers/{w['uids'][0]}", auth=w["auth"]).status_code == 200
    node(api, w["server"], "GET", "state")
    after = scrape()
    assert after[key] >= before.get(key, 0) + 3
    assert ("imperium_api_containers", frozenset({("state", "unknown")})) in after
    seen = after[("imperium_api_node_last_seen_seconds",
                  frozenset({("server", w["server"]["name"])}))]
    assert abs(seen - time.time()) < 60
    assert after[("imperium_api_request_duration_seconds_count",
                  frozenset({("api", "customer")}))] >= 3
    assert requests.get(api.base + "/admin/metrics", timeout=10).status_code in (401, 403)
