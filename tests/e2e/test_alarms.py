"""Alarms (API.md, Alarms): raise/trigger with credentials or a key, ranges,
filters, with_total, the per-container ring, isolation."""

import time

import pytest
import requests

RANGE_416 = {"error": "Requested Range Not Satisfiable"}


def raise_(api, uid, msg="boom", auth=None, path="raise", **params):
    return api.post(f"/alarms/{path}/{uid}", auth=auth, data=msg, params=params)


@pytest.fixture
def cust(api):
    auth, _ = api.new_customer()
    server = api.new_server()
    c1 = api.new_container(auth[0], server["name"], name="one")
    c2 = api.new_container(auth[0], server["name"], name="two")
    return auth, c1, c2


@pytest.fixture
def ten(api, cust):
    """Ten alarms m0..m9 in container c1, raised oldest first."""
    a, c1, _ = cust
    for i in range(10):
        assert raise_(api, c1, f"m{i}", auth=a).status_code == 201
    return a, c1


def msgs(r):
    assert r.status_code == 200, r.text
    return [x["msg"] for x in r.json()]


def test_raise_and_read(api, cust):
    a, c1, _ = cust
    before = int(time.time())
    r = raise_(api, c1, "disk on fire", auth=a, color="ff0000", **{"class": "Disk"},
               vassal="app.ini", line="42", func="main", filename="app.py", level="2")
    assert r.status_code == 201 and r.json() == {"message": "Created"}
    [al] = api.get("/alarms/", auth=a).json()
    assert before <= al["unix"] <= int(time.time()) + 1
    want = {"id": al["id"], "container": c1, "level": 2, "color": "#ff0000", "class": "Disk",
            "vassal": "app.ini", "line": 42, "filename": "app.py", "func": "main",
            "unix": al["unix"], "msg": "disk on fire"}
    assert al == want
    assert api.get(f"/alarms/{al['id']}", auth=a).json() == want
    # Defaults: level 1, white, unset fields null; trigger is an alias; unix given.
    r = raise_(api, c1, "second", auth=a, path="trigger", unix="1000", color="#00ff00")
    assert r.status_code == 201
    al2 = api.get("/alarms/?range=1-2", auth=a).json()[0]  # unix 1000 is the oldest
    assert al2["msg"] == "second" and al2["unix"] == 1000 and al2["color"] == "#00ff00"
    assert al2["level"] == 1 and al2["line"] is None and al2["class"] is None
    assert al2["vassal"] is None and al2["func"] is None and al2["filename"] is None
    r = raise_(api, c1, "", auth=a)
    assert r.status_code == 201
    assert api.get("/alarms/?range=1", auth=a).json()[0]["color"] == "#ffffff"
    # Any UTF-8 text, stored as sent.
    text = "línea 1\n\ttraceback ✓ \"quoted\" {json?}"
    assert raise_(api, c1, text.encode(), auth=a).status_code == 201
    assert api.get("/alarms/?range=1", auth=a).json()[0]["msg"] == text
    # The delete.
    assert api.delete(f"/alarms/{al['id']}", auth=a).json() == {"message": "Ok"}
    assert api.get(f"/alarms/{al['id']}", auth=a).status_code == 403
    assert al["id"] not in [x["id"] for x in api.get("/alarms/", auth=a).json()]


@pytest.mark.parametrize("params,status,word", [
    ({"color": "red"}, 400, "color"),
    ({"color": "#12345"}, 400, "color"),
    ({"color": "1234567"}, 400, "color"),
    ({"color": "#gg0000"}, 400, "color"),
    ({"color": ""}, 400, "color"),
    ({"level": "0"}, 403, None),
    ({"level": "-1"}, 403, None),
    ({"level": "x"}, 400, "level"),
    ({"level": "5"}, 400, "level"),
    ({"line": "x"}, 400, "line"),
    ({"line": "-3"}, 400, "line"),
    ({"unix": "yesterday"}, 400, "unix"),
    ({"class": "c" * 256}, 400, "class"),
    ({"vassal": b"\xff"}, 400, "vassal"),  # %FF: not UTF-8
])
def test_raise_rejects(api, cust, params, status, word):
    a, c1, _ = cust
    r = raise_(api, c1, "x", auth=a, **params)
    assert r.status_code == status, (params, r.text)
    if word:
        assert word in r.json()["reason"]
    assert api.get("/alarms/", auth=a).json() == []


def test_raise_rejects_bad_bodies(api, cust):
    a, c1, _ = cust
    for body in (b"\xff\xfe", b"caf\xc3", b"a\x00b"):
        r = raise_(api, c1, body, auth=a)
        assert r.status_code == 400 and "UTF-8" in r.json()["reason"]
    r = raise_(api, c1, "x" * (64 * 1024 + 1), auth=a)
    assert r.status_code == 413
    assert api.get("/alarms/", auth=a).json() == []
    # Exactly the limit is fine.
    assert raise_(api, c1, "y" * (64 * 1024), auth=a).status_code == 201


def test_methods_other_than_post(api, cust):
    a, c1, _ = cust
    for path in ("raise", "trigger"):
        for method in ("GET", "DELETE"):
            r = requests.request(method, api.url(f"/alarms/{path}/{c1}"), auth=a, timeout=30)
            assert r.status_code == 405 and r.json() == {"error": "Method not allowed"}
            r = requests.request(method, api.url(f"/alarms/{path}/{c1}/"), timeout=30)
            assert r.status_code == 405


def test_alarm_key(api, cust):
    a, c1, c2 = cust
    # No credentials and no key yet: 401 with the Basic challenge.
    r = raise_(api, c1, "x")
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}
    assert r.headers["WWW-Authenticate"] == 'Basic realm="uwsgi.it api"'
    r = api.get(f"/alarm_key/{c1}", auth=a)
    assert r.status_code == 200
    key = r.json()["alarm_key"]
    assert r.json()["message"] == "Ok" and len(key) == 36
    assert raise_(api, c1, "by key", key=key).status_code == 201
    assert raise_(api, c1, "by key", path="trigger", key=key).status_code == 201
    assert msgs(api.get("/alarms/", auth=a)) == ["by key", "by key"]
    # Wrong keys, the key of another container, no key: 401; nothing stored.
    for bad in (key[:-1] + ("0" if key[-1] != "0" else "1"), key[:-1], key + "0", "",
                key.upper() if key.upper() != key else "x"):
        assert raise_(api, c1, "bad", key=bad).status_code == 401, bad
    assert raise_(api, c2, "bad", key=key).status_code == 401
    assert raise_(api, 39999, "bad", key=key).status_code == 401
    # A fresh key replaces the old one at once.
    key2 = api.get(f"/alarm_key/{c1}", auth=a).json()["alarm_key"]
    assert key2 != key
    assert raise_(api, c1, "old", key=key).status_code == 401
    assert raise_(api, c1, "new", key=key2).status_code == 201
    # The key path still enforces levels and colors.
    assert raise_(api, c1, "sys", key=key2, level="0").status_code == 403
    assert raise_(api, c1, "c", key=key2, color="nope").status_code == 400
    assert msgs(api.get("/alarms/", auth=a)) == ["new", "by key", "by key"]
    # Bad credentials with no key: 401 (a key is not needed with good ones).
    assert raise_(api, c1, "x", auth=(a[0], "wrong")).status_code == 401


def test_ranges(api, ten):
    a, c1 = ten
    newest_first = [f"m{i}" for i in range(9, -1, -1)]
    assert msgs(api.get("/alarms/", auth=a)) == newest_first
    assert msgs(api.get("/alarms/?range=6", auth=a)) == newest_first[:6]
    assert msgs(api.get("/alarms/?range=3-6", auth=a)) == newest_first[3:6]
    assert msgs(api.get("/alarms/?range=6-3", auth=a)) == ["m3", "m4", "m5"]
    assert msgs(api.get("/alarms/?range=0-10", auth=a)) == newest_first
    assert msgs(api.get("/alarms/?range=10-0", auth=a)) == [f"m{i}" for i in range(10)]
    assert msgs(api.get("/alarms/?range=9-10", auth=a)) == ["m0"]  # numbers, not strings
    assert msgs(api.get("/alarms/?range=8-50", auth=a)) == ["m1", "m0"]
    assert msgs(api.get("/alarms/?range=4-4", auth=a)) == []
    assert msgs(api.get("/alarms/?range=0", auth=a)) == []
    assert msgs(api.get("/alarms/?range=100", auth=a)) == newest_first
    for bad in ("6-a", "6-", "-a", "a", "", "-3", "3-6-9", "%206", "1-2-", "0x5"):
        r = api.get(f"/alarms/?range={bad}", auth=a)
        assert r.status_code == 416 and r.json() == RANGE_416, bad
    r = api.get("/alarms/?range", auth=a)
    assert r.status_code == 416 and r.json() == RANGE_416


def test_with_total(api, ten):
    a, c1 = ten
    r = api.get("/alarms/?with_total=1&range=2-4", auth=a).json()
    assert r["total"] == 10 and [x["msg"] for x in r["alarms"]] == ["m7", "m6"]
    r = api.get("/alarms/?with_total", auth=a).json()
    assert r["total"] == 10 and len(r["alarms"]) == 10
    r = api.get(f"/alarms/?with_total=1&container={c1}&range=1", auth=a).json()
    assert r["total"] == 10 and len(r["alarms"]) == 1
    r = api.get("/alarms/?with_total=1&vassal=none", auth=a).json()
    assert r == {"total": 0, "alarms": []}


def test_filters(api, cust):
    a, c1, c2 = cust
    specs = [
        (c1, "a", {"vassal": "v1", "class": "K", "color": "#111111", "level": "1",
                   "line": "10", "filename": "f.py", "func": "fa"}),
        (c1, "b", {"vassal": "v2", "class": "K", "color": "#222222", "level": "2",
                   "line": "20", "filename": "g.py", "func": "fb"}),
        (c2, "c", {"vassal": "v1", "class": "L", "color": "#111111", "level": "2",
                   "line": "10", "filename": "f.py", "func": "fb"}),
        (c2, "d", {}),
    ]
    for uid, m, p in specs:
        assert raise_(api, uid, m, auth=a, **p).status_code == 201

    def got(query):
        return sorted(msgs(api.get("/alarms/?" + query, auth=a)))

    assert got("") == ["a", "b", "c", "d"]
    assert got(f"container={c1}") == ["a", "b"]
    assert got(f"container={c2}") == ["c", "d"]
    assert got("vassal=v1") == ["a", "c"]
    assert got("class=K") == ["a", "b"]
    assert got("color=%23111111") == ["a", "c"]
    assert got("color=222222") == ["b"]  # the '#' may be left out, as in raise
    assert got("color=%23ffffff") == ["d"]
    assert got("level=2") == ["b", "c"]
    assert got("level=1") == ["a", "d"]
    assert got("line=10") == ["a", "c"]
    assert got("filename=f.py") == ["a", "c"]
    assert got("func=fb") == ["b", "c"]
    assert got("func=nosuch") == []
    # Combined.
    assert got(f"container={c2}&vassal=v1") == ["c"]
    assert got("level=2&func=fb&line=10") == ["c"]
    assert got(f"class=K&color=%23222222&container={c1}") == ["b"]
    for bad in ("level=x", "line=1.5"):
        r = api.get("/alarms/?" + bad, auth=a)
        assert r.status_code == 400 and bad.split("=")[0] in r.json()["reason"]


def test_ring_of_max_alarms(api, cust):
    a, c1, c2 = cust
    for i in range(100):
        assert raise_(api, c1, f"m{i}", auth=a).status_code == 201
    assert raise_(api, c2, "other", auth=a).status_code == 201
    assert api.get(f"/alarms/?with_total=1&container={c1}", auth=a).json()["total"] == 100
    assert raise_(api, c1, "m100", auth=a).status_code == 201
    got = msgs(api.get(f"/alarms/?container={c1}", auth=a))
    assert len(got) == 100 and got[0] == "m100" and got[-1] == "m1"
    # The other container's alarm is untouched.
    assert msgs(api.get(f"/alarms/?container={c2}", auth=a)) == ["other"]
    # The supplier lowers the ring: the next alarm trims it to the new size.
    r = api.admin("POST", f"/containers/{c1}", {"max_alarms": 5}, expect=200)
    assert r.json()["max_alarms"] == 5
    assert raise_(api, c1, "m101", auth=a).status_code == 201
    assert msgs(api.get(f"/alarms/?container={c1}", auth=a)) == [
        "m101", "m100", "m99", "m98", "m97"]
    assert raise_(api, c1, "m102", auth=a).status_code == 201
    assert msgs(api.get(f"/alarms/?container={c1}", auth=a)) == [
        "m102", "m101", "m100", "m99", "m98"]
    # And raises it again: nothing is dropped until the new size is reached.
    api.admin("POST", f"/containers/{c1}", {"max_alarms": 7}, expect=200)
    for i in (103, 104):
        raise_(api, c1, f"m{i}", auth=a)
    assert len(msgs(api.get(f"/alarms/?container={c1}", auth=a))) == 7
    raise_(api, c1, "m105", auth=a)
    assert msgs(api.get(f"/alarms/?container={c1}", auth=a)) == [
        "m105", "m104", "m103", "m102", "m101", "m100", "m99"]
    assert msgs(api.get(f"/alarms/?container={c2}", auth=a)) == ["other"]


def test_isolation(api, cust):
    a, c1, _ = cust
    assert raise_(api, c1, "secret", auth=a).status_code == 201
    aid = api.get("/alarms/", auth=a).json()[0]["id"]
    key = api.get(f"/alarm_key/{c1}", auth=a).json()["alarm_key"]
    b, _ = api.new_customer()
    bc = api.new_container(b[0], api.new_server()["name"])
    assert api.get("/alarms/", auth=b).json() == []
    assert api.get("/alarms/?with_total=1", auth=b).json() == {"total": 0, "alarms": []}
    for uid in (c1, 39999, "x", ""):
        assert api.get(f"/alarms/?container={uid}", auth=b).status_code == 403, uid
    for path in (f"/alarms/{aid}", "/alarms/999999"):
        assert api.get(path, auth=b).status_code == 403
        assert api.delete(path, auth=b).status_code == 403
    # B's credentials on A's container: 403 (even with A's key: credentials win).
    assert raise_(api, c1, "forged", auth=b).status_code == 403
    assert raise_(api, c1, "forged", auth=b, key=key).status_code == 403
    assert raise_(api, 39999, "forged", auth=b).status_code == 403
    assert api.get(f"/alarm_key/{c1}", auth=b).status_code == 403
    assert api.get("/alarm_key/39999", auth=b).status_code == 403
    # A's key works only for A's container.
    assert raise_(api, bc, "x", key=key).status_code == 401
    assert raise_(api, bc, "mine", auth=b).status_code == 201
    assert msgs(api.get("/alarms/", auth=a)) == ["secret"]
    assert msgs(api.get("/alarms/", auth=b)) == ["mine"]
    assert api.get(f"/alarms/{aid}", auth=a).json()["msg"] == "secret"
    # The old key still works (B's 403 on alarm_key changed nothing).
    assert raise_(api, c1, "still", key=key).status_code == 201
    assert api.get("/alarms/", auth=None).status_code == 401
