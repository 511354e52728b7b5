"""Port mappings (API.md, Port mappings): only on servers the customer owns;
ports, protos, reserved ports, duplicates, and the node's generation."""

import pytest


def portmap_generation(api, address):
    """What the node follows: read straight from the API's database."""
    return api.sql("SELECT portmap_generation FROM servers WHERE address = ?",
                   (address,))[0][0]


@pytest.fixture
def owner(api):
    """A customer owning a server with two containers on it, plus one
    container of its own on a server it does not own."""
    auth, _ = api.new_customer()
    server = api.new_server(owner=auth[0])
    addr = server["address"]
    c1 = api.post("/containers/", auth=auth, json={"server": addr, "name": "a",
                                                   "memory": 100, "storage": 100}).json()["uid"]
    c2 = api.post("/containers/", auth=auth, json={"server": addr, "name": "b",
                                                   "memory": 100, "storage": 100}).json()["uid"]
    elsewhere = api.new_container(auth[0], api.new_server()["name"])
    return {"auth": auth, "addr": addr, "c1": c1, "c2": c2, "elsewhere": elsewhere}


def pm(uid, public=9000, private=8000, proto="tcp"):
    return {"container": uid, "proto": proto, "public_port": public, "private_port": private}


def ip_of(uid):
    n = uid - 30000 + 2
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def test_full_flow(api, owner):
    a, addr, c1, c2 = owner["auth"], owner["addr"], owner["c1"], owner["c2"]
    path = f"/portmappings/{addr}"
    assert api.get(path, auth=a).json() == []
    gen = portmap_generation(api, addr)
    r = api.post(path, auth=a, json=pm(c1, 9000, 8000))
    assert r.status_code == 201, r.text
    assert r.json()["message"] == "Created" and isinstance(r.json()["id"], int)
    id1 = r.json()["id"]
    assert portmap_generation(api, addr) == gen + 1
    id2 = api.post(path + "/", auth=a, json=pm(c2, 9001, 1024, "udp")).json()["id"]
    assert portmap_generation(api, addr) == gen + 2
    assert api.get(path + "/", auth=a).json() == [
        {"id": id1, "proto": "tcp", "public_port": 9000, "container": c1,
         "container_ip": ip_of(c1), "private_port": 8000},
        {"id": id2, "proto": "udp", "public_port": 9001, "container": c2,
         "container_ip": ip_of(c2), "private_port": 1024},
    ]
    r = api.delete(path, auth=a, json={"id": id1})
    assert r.status_code == 200 and r.json() == {"message": "Ok"}
    assert portmap_generation(api, addr) == gen + 3
    assert [m["id"] for m in api.get(path, auth=a).json()] == [id2]
    # Deleting it again, or an id of nothing: 404, and no generation bump.
    for bad in (id1, 999999):
        r = api.delete(path, auth=a, json={"id": bad})
        assert r.status_code == 404 and r.json() == {"error": "Not found"}
    assert portmap_generation(api, addr) == gen + 3


def test_duplicates(api, owner):
    a, addr, c1, c2 = owner["auth"], owner["addr"], owner["c1"], owner["c2"]
    path = f"/portmappings/{addr}"
    assert api.post(path, auth=a, json=pm(c1, 9100, 8000)).status_code == 201
    gen = portmap_generation(api, addr)
    for body in (pm(c1, 9100, 8001), pm(c2, 9100, 8000)):
        r = api.post(path, auth=a, json=body)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "Conflict" and "9100" in r.json()["reason"]
    assert portmap_generation(api, addr) == gen
    # The same public port on the other proto is another mapping.
    assert api.post(path, auth=a, json=pm(c2, 9100, 8000, "udp")).status_code == 201
    assert api.post(path, auth=a, json=pm(c2, 9100, 8000, "udp")).status_code == 409
    # Two public ports may reach one private port.
    assert api.post(path, auth=a, json=pm(c1, 9101, 8000)).status_code == 201
    got = sorted((m["proto"], m["public_port"]) for m in api.get(path, auth=a).json())
    assert got == [("tcp", 9100), ("tcp", 9101), ("udp", 9100)]


@pytest.mark.parametrize("body,word", [
    ({"proto": "icmp"}, "proto"),
    ({"proto": "TCP"}, "proto"),
    ({"proto": ""}, "proto"),
    ({"public_port": 1024}, "public_port"),
    ({"public_port": 80}, "public_port"),
    ({"public_port": 0}, "public_port"),
    ({"public_port": -9000}, "public_port"),
    ({"public_port": 65536}, "public_port"),
    ({"private_port": 1023}, "private_port"),
    ({"private_port": 0}, "private_port"),
    ({"private_port": 65536}, "private_port"),
    # Ports the platform itself listens on.
    ({"public_port": 2222}, "platform"),
    ({"public_port": 8000}, "platform"),
    ({"public_port": 8080}, "platform"),
    ({"public_port": 8443}, "platform"),
    # Wrong types and missing keys.
    ({"public_port": "9000x"}, "public_port"),  # "9000" is 9000 (issue 14)
    ({"private_port": 80.5}, "private_port"),
    ({"proto": 6}, "proto"),
    ({"container": "30001.0"}, "container"),
    ({"container": None}, "container"),
    ({"proto": None}, "proto"),
])
def test_bad_values_are_400(api, owner, body, word):
    a, addr, c1 = owner["auth"], owner["addr"], owner["c1"]
    gen = portmap_generation(api, addr)
    full = {**pm(c1, 9200, 8000), **body}
    r = api.post(f"/portmappings/{addr}", auth=a, json=full)
    assert r.status_code == 400, (full, r.text)
    assert word in r.json()["reason"]
    assert api.get(f"/portmappings/{addr}", auth=a).json() == []
    assert portmap_generation(api, addr) == gen


def test_limits_that_pass(api, owner):
    a, addr, c1 = owner["auth"], owner["addr"], owner["c1"]
    path = f"/portmappings/{addr}"
    for public, private in ((1025, 1024), (65535, 65535), (2223, 80 + 1024)):
        assert api.post(path, auth=a, json=pm(c1, public, private)).status_code == 201
    # Private ports may be the ones the platform uses publicly.
    assert api.post(path, auth=a, json=pm(c1, 3000, 8080)).status_code == 201


def test_missing_keys_and_bad_bodies(api, owner):
    a, addr, c1 = owner["auth"], owner["addr"], owner["c1"]
    path = f"/portmappings/{addr}"
    for key in ("container", "proto", "public_port", "private_port"):
        body = pm(c1)
        del body[key]
        r = api.post(path, auth=a, json=body)
        assert r.status_code == 400 and key in r.json()["reason"]
    for raw in ("{", "[]", "", "9000"):
        assert api.post(path, auth=a, data=raw).status_code == 400
        assert api.delete(path, auth=a, data=raw).status_code == 400
    for body in ({}, {"id": "1x"}, {"id": None}, {"id": [1]}):
        r = api.delete(path, auth=a, json=body)
        assert r.status_code == 400 and "id" in r.json()["reason"]
    assert api.get(path, auth=a).json() == []


def test_container_must_be_mine_on_that_server(api, owner):
    a, addr = owner["auth"], owner["addr"]
    path = f"/portmappings/{addr}"
    other, _ = api.new_customer()
    # Someone else's container placed on my server by the supplier.
    theirs = api.new_container(other[0], addr)
    for uid in (owner["elsewhere"], theirs, 39999, 30000, 5):
        r = api.post(path, auth=a, json=pm(uid))
        assert r.status_code == 403, (uid, r.text)
        assert r.json()["error"] == "Forbidden"
    assert api.get(path, auth=a).json() == []


def test_server_not_owned(api, owner, kratos):
    a, addr, c1 = owner["auth"], owner["addr"], owner["c1"]
    mid = api.post(f"/portmappings/{addr}", auth=a, json=pm(c1, 9300)).json()["id"]
    before = api.get(f"/portmappings/{addr}", auth=a).json()
    gen = portmap_generation(api, addr)
    b = kratos["auth"]  # owns no server
    not_owned = kratos["server"]["address"]  # b has a container there, but does not own it
    for target in (addr, not_owned, "203.0.113.77", "nonsense"):
        path = f"/portmappings/{target}"
        assert api.get(path, auth=b).status_code == 403
        r = api.post(path, auth=b, json=pm(kratos["uid"], 9400))
        assert r.status_code == 403 and r.json()["error"] == "Forbidden"
        assert api.delete(path, auth=b, json={"id": mid}).status_code == 403
    # The owner of a server does not own the others.
    assert api.get(f"/portmappings/{not_owned}", auth=a).status_code == 403
    assert api.get(f"/portmappings/{addr}", auth=a).json() == before
    assert portmap_generation(api, addr) == gen
    assert api.get(f"/portmappings/{addr}", auth=None).status_code == 401


def test_delete_only_on_its_server(api, owner):
    """An id of a mapping on another server of mine is 404 here."""
    a, addr, c1 = owner["auth"], owner["addr"], owner["c1"]
    server2 = api.new_server(owner=a[0])["address"]
    c3 = api.post("/containers/", auth=a, json={"server": server2, "name": "c",
                                                "memory": 1, "storage": 1}).json()["uid"]
    mid = api.post(f"/portmappings/{server2}", auth=a, json=pm(c3, 9500)).json()["id"]
    assert api.delete(f"/portmappings/{addr}", auth=a, json={"id": mid}).status_code == 404
    assert [m["id"] for m in api.get(f"/portmappings/{server2}", auth=a).json()] == [mid]
    # A container of mine on server2 cannot be mapped on addr.
    assert api.post(f"/portmappings/{addr}", auth=a, json=pm(c3, 9501)).status_code == 403
    # Each server has its own port space.
    assert api.post(f"/portmappings/{addr}", auth=a, json=pm(c1, 9500)).status_code == 201
