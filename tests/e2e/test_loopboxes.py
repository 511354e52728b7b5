"""Loopboxes (API.md, Loopboxes): validation, duplicates, immutability,
filters, isolation."""

import pytest


def lb(uid, filename="zeus001", mountpoint="zeus", **kw):
    return {"container": uid, "filename": filename, "mountpoint": mountpoint, **kw}


@pytest.fixture
def two(api):
    """A customer with two containers and the tags 'web' and 'db'."""
    auth, _ = api.new_customer()
    server = api.new_server()
    c1 = api.new_container(auth[0], server["name"], name="one")
    c2 = api.new_container(auth[0], server["name"], name="two")
    for t in ("web", "db"):
        assert api.post("/tags/", auth=auth, json={"name": t}).status_code == 201
    return auth, c1, c2


def test_create_get_list_delete(api, two):
    a, c1, _ = two
    r = api.post("/loopboxes", auth=a, json=lb(c1))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["message"] == "Created" and isinstance(body["id"], int)
    lid = body["id"]
    want = {"id": lid, "container": c1, "filename": "zeus001", "mountpoint": "zeus",
            "ro": False, "tags": []}
    assert api.get(f"/loopboxes/{lid}", auth=a).json() == want
    assert api.get(f"/loopboxes/{lid}/", auth=a).json() == want
    assert api.get("/loopboxes/", auth=a).json() == [want]
    assert api.get("/loopboxes", auth=a).json() == [want]
    r = api.post("/loopboxes/", auth=a, json=lb(c1, "ro.img", "data/ro", ro=True))
    assert r.status_code == 201
    assert api.get(f"/loopboxes/{r.json()['id']}", auth=a).json()["ro"] is True
    assert api.delete(f"/loopboxes/{lid}", auth=a).json() == {"message": "Ok"}
    assert api.get(f"/loopboxes/{lid}", auth=a).status_code == 403
    assert [x["filename"] for x in api.get("/loopboxes/", auth=a).json()] == ["ro.img"]
    # Gone means gone: deleting it again is 403 like any missing loopbox.
    assert api.delete(f"/loopboxes/{lid}", auth=a).status_code == 403


BAD = [
    # (filename, mountpoint, words the reason must contain)
    ("/zeus001", "zeus", ["filename", "/"]),
    ("zeus001/", "zeus", ["filename", "/"]),
    ("zeus001", "/zeus", ["mountpoint", "/"]),
    ("zeus001", "zeus/", ["mountpoint", "/"]),
    ("../zeus001", "zeus", ["filename", ".."]),
    ("a..b", "zeus", ["filename", ".."]),
    ("zeus001", "a/../b", ["mountpoint", ".."]),
    ("./zeus001", "zeus", ["filename", "./"]),
    ("zeus001", "a/./b", ["mountpoint", "./"]),
    ("a/.hidden", "zeus", ["filename", "/."]),
    ("zeus001", "a/.b", ["mountpoint", "/."]),
    ("a//b", "zeus", ["filename", "//"]),
    ("zeus001", "a//b", ["mountpoint", "//"]),
    ("etc", "zeus", ["filename", "etc"]),
    ("zeus001", "etc", ["mountpoint", "etc"]),
    ("zeus001", "logs", ["mountpoint", "logs"]),
    ("zeus001", "run", ["mountpoint", "run"]),
    ("zeus001", "tmp", ["mountpoint", "tmp"]),
    ("zeus001", "vassals", ["mountpoint", "vassals"]),
    ("vassals", "zeus", ["filename", "vassals"]),
    ("etc/x", "zeus", ["filename", "etc"]),
    ("zeus001", "etc/x", ["mountpoint", "etc"]),
    ("zeus001", "vassals/a/b", ["mountpoint", "vassals"]),
    ("logs/z.img", "zeus", ["filename", "logs"]),
    ("zeus001", ".ssh", ["mountpoint", ".ssh"]),
    ("zeus001", ".", ["mountpoint", "home"]),
    ("x" * 65, "zeus", ["filename", "64"]),
    ("", "zeus", ["filename"]),
    ("zeus001", "", ["mountpoint"]),
    ("zeus001", "a\nb", ["mountpoint", "control"]),
]


@pytest.mark.parametrize("filename,mountpoint,words", BAD)
def test_every_rule_is_a_400_with_a_reason(api, two, filename, mountpoint, words):
    a, c1, _ = two
    before = api.get("/loopboxes/", auth=a).json()
    r = api.post("/loopboxes/", auth=a, json=lb(c1, filename, mountpoint))
    assert r.status_code == 400, (filename, mountpoint, r.text)
    body = r.json()
    assert body["error"] == "Bad Request"
    for w in words:
        assert w in body["reason"], (w, body)
    assert api.get("/loopboxes/", auth=a).json() == before


def test_limits_that_pass(api, two):
    a, c1, _ = two
    assert api.post("/loopboxes/", auth=a, json=lb(c1, "x" * 64, "m" * 200)).status_code == 201
    # Names that merely start like a reserved directory are fine.
    assert api.post("/loopboxes/", auth=a, json=lb(c1, "etcx", "tmpdata")).status_code == 201
    assert api.post("/loopboxes/", auth=a, json=lb(c1, "img/a", "x/etc")).status_code == 201


C = "<uid>"  # replaced by the container's uid


@pytest.mark.parametrize("body,field", [
    ({"filename": "a", "mountpoint": "b"}, "container"),
    ({"container": "30001x", "filename": "a", "mountpoint": "b"}, "container"),
    ({"container": None, "filename": "a", "mountpoint": "b"}, "container"),
    ({"container": C, "filename": 1, "mountpoint": "b"}, "filename"),
    ({"container": C, "filename": "a", "mountpoint": ["b"]}, "mountpoint"),
    ({"container": C, "filename": "a", "mountpoint": "b", "ro": "yes"}, "ro"),
    ({"container": C, "filename": "a", "mountpoint": "b", "ro": 2}, "ro"),
    ({"container": C, "mountpoint": "b"}, "filename"),
    ({"container": C, "filename": "a"}, "mountpoint"),
])
def test_wrong_shapes_are_400(api, two, body, field):
    a, c1, _ = two
    body = {k: (c1 if v == C else v) for k, v in body.items()}
    r = api.post("/loopboxes/", auth=a, json=body)
    assert r.status_code == 400, (body, r.text)
    assert field in r.json()["reason"]
    assert api.get("/loopboxes/", auth=a).json() == []


def test_malformed_bodies(api, two):
    a, c1, _ = two
    for raw in ("{", "[]", "null", '"x"', "", '{"container": 1,}'):
        r = api.post("/loopboxes/", auth=a, data=raw)
        assert r.status_code == 400, raw
        assert r.json()["error"] == "Bad Request"
    assert api.get("/loopboxes/", auth=a).json() == []


def test_duplicates_are_409(api, two):
    a, c1, c2 = two
    assert api.post("/loopboxes/", auth=a, json=lb(c1, "f1", "m1")).status_code == 201
    r = api.post("/loopboxes/", auth=a, json=lb(c1, "f1", "m2"))
    assert r.status_code == 409 and "filename" in r.json()["reason"]
    r = api.post("/loopboxes/", auth=a, json=lb(c1, "f2", "m1"))
    assert r.status_code == 409 and "mountpoint" in r.json()["reason"]
    assert r.json()["error"] == "Conflict"
    # The same names in another container are fine.
    assert api.post("/loopboxes/", auth=a, json=lb(c2, "f1", "m1")).status_code == 201
    got = sorted((x["container"], x["filename"]) for x in api.get("/loopboxes/", auth=a).json())
    assert got == [(c1, "f1"), (c2, "f1")]


def test_only_tags_change(api, two):
    a, c1, _ = two
    lid = api.post("/loopboxes/", auth=a, json=lb(c1)).json()["id"]
    r = api.post(f"/loopboxes/{lid}", auth=a, json={"tags": ["web", "nosuch"]})
    assert r.status_code == 200
    assert r.json()["tags"] == ["web"]
    before = api.get(f"/loopboxes/{lid}", auth=a).json()
    for field, value in (("filename", "other"), ("mountpoint", "other"), ("ro", True),
                         ("container", c1), ("id", 5), ("foo", 1)):
        r = api.post(f"/loopboxes/{lid}", auth=a, json={field: value, "tags": ["db"]})
        assert r.status_code == 400, field
        reason = r.json()["reason"]
        assert field in reason and "immutable" in reason and "delete" in reason
        assert api.get(f"/loopboxes/{lid}", auth=a).json() == before
    r = api.post(f"/loopboxes/{lid}", auth=a, json={"tags": "web"})
    assert r.status_code == 400 and "tags" in r.json()["reason"]
    r = api.post(f"/loopboxes/{lid}", auth=a, json={"tags": ["db", "web"]})
    assert r.json()["tags"] == ["db", "web"]
    r = api.post(f"/loopboxes/{lid}", auth=a, json={"tags": []})
    assert r.json()["tags"] == []
    # An empty object changes nothing and answers the loopbox.
    assert api.post(f"/loopboxes/{lid}", auth=a, json={}).json() == r.json()


def test_filters(api, two):
    a, c1, c2 = two
    ids = {}
    for uid, name, tags in ((c1, "a", ["web"]), (c1, "b", ["db"]), (c1, "c", []),
                            (c2, "d", ["web"]), (c2, "e", ["web", "db"])):
        ids[name] = api.post("/loopboxes/", auth=a, json=lb(uid, name, "m" + name)).json()["id"]
        api.post(f"/loopboxes/{ids[name]}", auth=a, json={"tags": tags})

    def names(query):
        r = api.get("/loopboxes/" + query, auth=a)
        assert r.status_code == 200, r.text
        return sorted(x["filename"] for x in r.json())

    assert names("") == ["a", "b", "c", "d", "e"]
    assert names(f"?container={c1}") == ["a", "b", "c"]
    assert names(f"?container={c2}") == ["d", "e"]
    assert names("?tags=web") == ["a", "d", "e"]
    assert names("?tags=db") == ["b", "e"]
    assert names("?tags=web,db") == ["a", "b", "d", "e"]
    assert names("?tags=nosuch") == []
    # Both filters apply together.
    assert names(f"?container={c1}&tags=web") == ["a"]
    assert names(f"?container={c2}&tags=db") == ["e"]
    assert names(f"?container={c1}&tags=db,web") == ["a", "b"]


def test_isolation(api, two):
    a, c1, _ = two
    lid = api.post("/loopboxes/", auth=a, json=lb(c1)).json()["id"]
    api.post(f"/loopboxes/{lid}", auth=a, json={"tags": ["web"]})
    before = api.get("/loopboxes/", auth=a).json()

    b, _ = api.new_customer()
    bserver = api.new_server()
    bc = api.new_container(b[0], bserver["name"])
    api.post("/tags/", auth=b, json={"name": "web"})
    assert api.get("/loopboxes/", auth=b).json() == []
    assert api.get("/loopboxes/?tags=web", auth=b).json() == []
    # A's container: 403 in the filter and on create, exactly like a missing one.
    for uid in (c1, 39999, "abc", ""):
        r = api.get(f"/loopboxes/?container={uid}", auth=b)
        assert r.status_code == 403, uid
    for uid in (c1, 39999, 30000, 0, -5):
        r = api.post("/loopboxes/", auth=b, json=lb(uid, "mine", "mine"))
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", uid
    # A's loopbox: 403 for every method, like a missing one.
    for path in (f"/loopboxes/{lid}", "/loopboxes/999999", "/loopboxes/abc"):
        assert api.get(path, auth=b).status_code == 403
        assert api.post(path, auth=b, json={"tags": ["web"]}).status_code == 403
        assert api.delete(path, auth=b).status_code == 403
    # B's own loopbox works, and A never sees it.
    assert api.post("/loopboxes/", auth=b, json=lb(bc)).status_code == 201
    assert api.get("/loopboxes/", auth=a).json() == before
    assert api.get("/loopboxes/", auth=None).status_code == 401
