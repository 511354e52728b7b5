"""Custom distros (API.md, Custom distros): storage containers, who may
boot from them, updates and deletes restarting the containers using them,
isolation."""

import pytest


@pytest.fixture
def setup(api):
    """A storage container `st` and a sibling `sib` on one server, a third
    container `far` on another server."""
    auth, _ = api.new_customer()
    s1, s2 = api.new_server(), api.new_server()
    st = api.new_container(auth[0], s1["name"], name="storage")
    sib = api.new_container(auth[0], s1["name"], name="sibling")
    far = api.new_container(auth[0], s2["name"], name="far")
    r = api.post(f"/containers/{st}", auth=auth, json={"custom_distros_storage": True})
    assert r.status_code == 200 and r.json()["custom_distros_storage"] is True
    return {"auth": auth, "s1": s1, "st": st, "sib": sib, "far": far}


def generation(api, uid):
    return api.admin("GET", f"/containers/{uid}", expect=200).json()["generation"]


def create(api, auth, uid, name="jessie", path="jessie", note="debian 8"):
    return api.post(f"/custom_distros/{uid}", auth=auth,
                    json={"name": name, "path": path, "note": note})


def test_full_flow(api, setup):
    a, st, sib, far = setup["auth"], setup["st"], setup["sib"], setup["far"]
    r = create(api, a, st)
    assert r.status_code == 201, r.text
    assert r.json()["message"] == "Created" and isinstance(r.json()["id"], int)
    did = r.json()["id"]
    assert api.get("/custom_distros/", auth=a).json() == [
        {"id": did, "name": "jessie", "container": st}]
    assert api.get("/custom_distros", auth=a).json() == [
        {"id": did, "name": "jessie", "container": st}]
    # Usable by the sibling only: not by itself, not across servers.
    assert api.get(f"/custom_distros/{sib}", auth=a).json() == [{"id": did, "name": "jessie"}]
    assert api.get(f"/custom_distros/{st}", auth=a).json() == []
    assert api.get(f"/custom_distros/{far}", auth=a).json() == []
    obj = api.get(f"/custom_distro/{did}", auth=a).json()
    assert obj == {"id": did, "container": st, "name": "jessie", "path": "jessie",
                   "note": "debian 8", "uuid": obj["uuid"]}
    assert len(obj["uuid"]) == 36

    # Booting from it.
    g = generation(api, sib)
    r = api.post(f"/containers/{sib}", auth=a, json={"custom_distro": did})
    assert r.status_code == 200, r.text
    assert r.json()["custom_distro"] == did and r.json()["custom_distro_name"] == "jessie"
    assert generation(api, sib) == g + 1
    for uid in (far, st):
        r = api.post(f"/containers/{uid}", auth=a, json={"custom_distro": did})
        assert r.status_code == 400 and "custom_distro" in r.json()["reason"], uid
        assert r.json()["error"] == "Bad Request"
        assert api.get(f"/containers/{uid}", auth=a).json()["custom_distro"] is None

    # Renaming or a new note changes nothing that runs; a new path restarts.
    g = generation(api, sib)
    r = api.post(f"/custom_distro/{did}", auth=a, json={"name": "Jessie 8", "note": "n"})
    assert r.status_code == 200
    assert r.json() == {**obj, "name": "Jessie 8", "note": "n"}
    assert generation(api, sib) == g
    assert api.get(f"/containers/{sib}", auth=a).json()["custom_distro_name"] == "Jessie 8"
    r = api.post(f"/custom_distro/{did}", auth=a, json={"path": "jessie-v2"})
    assert r.status_code == 200 and r.json()["path"] == "jessie-v2"
    assert generation(api, sib) == g + 1
    api.post(f"/custom_distro/{did}", auth=a, json={"path": "jessie-v2"})  # the same path
    assert generation(api, sib) == g + 1
    gst = generation(api, st)

    # Deleting it: the sibling loses it and restarts; the storage does not.
    assert api.delete(f"/custom_distro/{did}", auth=a).json() == {"message": "Ok"}
    assert generation(api, sib) == g + 2
    assert generation(api, st) == gst
    c = api.get(f"/containers/{sib}", auth=a).json()
    assert c["custom_distro"] is None and c["custom_distro_name"] is None
    assert api.get(f"/custom_distro/{did}", auth=a).status_code == 403
    assert api.get("/custom_distros/", auth=a).json() == []
    assert api.get(f"/custom_distros/{sib}", auth=a).json() == []


def test_only_storage_containers(api, setup):
    a, st, sib = setup["auth"], setup["st"], setup["sib"]
    r = create(api, a, sib)
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    assert "custom_distros_storage" in r.json()["reason"]
    assert api.get("/custom_distros/", auth=a).json() == []
    # A storage container that stops being one no longer offers its distros.
    did = create(api, a, st).json()["id"]
    assert [d["id"] for d in api.get(f"/custom_distros/{sib}", auth=a).json()] == [did]
    api.post(f"/containers/{st}", auth=a, json={"custom_distros_storage": False})
    assert api.get(f"/custom_distros/{sib}", auth=a).json() == []
    assert create(api, a, st, "other", "other").status_code == 403
    r = api.post(f"/containers/{sib}", auth=a, json={"custom_distro": did})
    assert r.status_code == 400


@pytest.mark.parametrize("body,word", [
    ({"path": "a/b"}, "path"),
    ({"path": "../x"}, "path"),
    ({"path": "."}, "path"),
    ({"path": ".."}, "path"),
    ({"path": "a b"}, "path"),
    ({"path": "é"}, "path"),
    ({"path": ""}, "path"),
    ({"path": "p" * 256}, "path"),
    ({"name": ""}, "name"),
    ({"name": "n" * 256}, "name"),
    ({"name": 5}, "name"),
    ({"path": ["x"]}, "path"),
    ({"note": 1}, "note"),
    ({"name": None}, "name"),
])
def test_bad_values(api, setup, body, word):
    a, st = setup["auth"], setup["st"]
    full = {"name": "n", "path": "p", "note": "", **body}
    r = api.post(f"/custom_distros/{st}", auth=a, json=full)
    assert r.status_code == 400, (full, r.text)
    assert word in r.json()["reason"]
    assert api.get("/custom_distros/", auth=a).json() == []
    # The same rules on update.
    did = create(api, a, st).json()["id"]
    before = api.get(f"/custom_distro/{did}", auth=a).json()
    r = api.post(f"/custom_distro/{did}", auth=a, json=body)
    assert r.status_code == 400 and word in r.json()["reason"]
    assert api.get(f"/custom_distro/{did}", auth=a).json() == before


def test_missing_and_malformed(api, setup):
    a, st = setup["auth"], setup["st"]
    for body in ({"path": "p"}, {"name": "n"}, {}):
        r = api.post(f"/custom_distros/{st}", auth=a, json=body)
        assert r.status_code == 400 and "required" in r.json()["reason"]
    for raw in ("{", "[1]", "", "null"):
        assert api.post(f"/custom_distros/{st}", auth=a, data=raw).status_code == 400
    assert api.get("/custom_distros/", auth=a).json() == []
    # The note is optional.
    r = api.post(f"/custom_distros/{st}", auth=a, json={"name": "n", "path": "p"})
    assert r.status_code == 201
    assert api.get(f"/custom_distro/{r.json()['id']}", auth=a).json()["note"] == ""


def test_duplicates(api, setup):
    a, st = setup["auth"], setup["st"]
    d1 = create(api, a, st, "one", "one").json()["id"]
    d2 = create(api, a, st, "two", "two").json()["id"]
    r = create(api, a, st, "one", "other")
    assert r.status_code == 409 and "name" in r.json()["reason"]
    r = create(api, a, st, "other", "one")
    assert r.status_code == 409 and "path" in r.json()["reason"]
    r = api.post(f"/custom_distro/{d2}", auth=a, json={"path": "one"})
    assert r.status_code == 409
    assert api.get(f"/custom_distro/{d2}", auth=a).json()["path"] == "two"
    # Writing back its own values is fine.
    assert api.post(f"/custom_distro/{d1}", auth=a,
                    json={"name": "one", "path": "one"}).status_code == 200
    # Another storage container may use the same names.
    st2 = api.new_container(a[0], setup["s1"]["name"], name="storage2")
    api.post(f"/containers/{st2}", auth=a, json={"custom_distros_storage": True})
    assert create(api, a, st2, "one", "one").status_code == 201
    assert len(api.get("/custom_distros/", auth=a).json()) == 3


def test_isolation(api, setup):
    a, st, sib, s1 = setup["auth"], setup["st"], setup["sib"], setup["s1"]
    did = create(api, a, st).json()["id"]
    api.post(f"/containers/{sib}", auth=a, json={"custom_distro": did})
    before = api.get(f"/custom_distro/{did}", auth=a).json()

    b, _ = api.new_customer()
    # B's containers on the same server, one of them a storage.
    bst = api.new_container(b[0], s1["name"], name="bst")
    bsib = api.new_container(b[0], s1["name"], name="bsib")
    api.post(f"/containers/{bst}", auth=b, json={"custom_distros_storage": True})
    bdid = create(api, b, bst, "bdistro", "bdistro").json()["id"]

    assert api.get("/custom_distros/", auth=b).json() == [
        {"id": bdid, "name": "bdistro", "container": bst}]
    assert api.get(f"/custom_distros/{bsib}", auth=b).json() == [{"id": bdid, "name": "bdistro"}]
    assert api.get(f"/custom_distros/{sib}", auth=a).json() == [{"id": did, "name": "jessie"}]
    # A's container and A's distro: 403, like missing ones.
    for uid in (st, sib, 39999, "x"):
        assert api.get(f"/custom_distros/{uid}", auth=b).status_code == 403
        r = create(api, b, uid, "x", "x")
        assert r.status_code == 403 and r.json() == {"error": "Forbidden"}
    for path in (f"/custom_distro/{did}", "/custom_distro/999999", "/custom_distro/x"):
        assert api.get(path, auth=b).json() == {"error": "Forbidden"}
        assert api.post(path, auth=b, json={"name": "pwned"}).status_code == 403
        assert api.delete(path, auth=b).status_code == 403
    # Neither customer may boot from the other's distros, even on one server.
    assert api.post(f"/containers/{bsib}", auth=b, json={"custom_distro": did}).status_code == 400
    assert api.post(f"/containers/{sib}", auth=a, json={"custom_distro": bdid}).status_code == 400
    assert api.get(f"/custom_distro/{did}", auth=a).json() == before
    assert api.get(f"/containers/{sib}", auth=a).json()["custom_distro"] == did
    assert api.get("/custom_distros/", auth=None).status_code == 401


def test_names_are_counted_in_characters(api, setup):
    """255 characters of UTF-8 (more than 255 bytes) is a valid name, as for
    containers and tags; 256 characters is not."""
    a, st = setup["auth"], setup["st"]
    name = "é" * 255
    r = api.post(f"/custom_distros/{st}", auth=a, json={"name": name, "path": "p"})
    assert r.status_code == 201, r.text
    assert api.get(f"/custom_distro/{r.json()['id']}", auth=a).json()["name"] == name
    r = api.post(f"/custom_distros/{st}", auth=a, json={"name": name + "é", "path": "q"})
    assert r.status_code == 400 and "255 characters" in r.json()["reason"]
