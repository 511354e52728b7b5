"""Issue 12, the API's side: ids (and so uids) are never handed out twice,
no container keeps a deleted custom distro, memory and storage are bounded,
and the supplier's purge of deleted homes reaches the node's state.  Each
test plays the attack and shows that it now fails."""

import os
import subprocess
import threading
import time

import requests

from conftest import BIN, start_api, stop_api, unique

MEMORY_MAX = 1 << 20    # MB: 1 TiB
STORAGE_MAX = 1 << 30   # MB: 1 PiB
HUGE = 2**63 - 1


def node_get(api, server, **params):
    r = requests.get(api.base + "/node/state", auth=(server["name"], server["node_secret"]),
                     params=params, timeout=90)
    assert r.status_code == 200, r.text
    return r.json()


def node_status(api, server, containers):
    r = requests.post(api.base + "/node/status", auth=(server["name"], server["node_secret"]),
                      json={"containers": containers}, timeout=30)
    assert r.status_code == 200, r.text


# ---- 1. a uid is never reused ----

def test_deleted_containers_uid_is_never_given_again(fresh_api):
    api = fresh_api
    server = api.new_server()
    victim, _ = api.new_customer()
    attacker, _ = api.new_customer()
    old = api.new_container(victim[0], server["name"], name="victim")
    api.admin("DELETE", f"/containers/{old}", expect=200)
    # SQLite gave max(id)+1 again: the attacker got the victim's uid (and,
    # on the node, the victim's home).
    new = api.new_container(attacker[0], server["name"], name="attacker")
    assert new != old and new > old
    assert api.get(f"/containers/{new}", auth=attacker).json()["uid"] == new
    assert api.get(f"/containers/{old}", auth=attacker).status_code == 403

    # Across a restart of the API too: the high-water mark is stored.
    api.admin("DELETE", f"/containers/{new}", expect=200)
    stop_api(api)
    again = start_api(api.workdir)
    try:
        third = again.new_container(attacker[0], server["name"], name="third")
        assert third > new
    finally:
        stop_api(again)
    api.proc = again.proc  # fresh_api's teardown stops it once more: harmless


def test_other_ids_are_never_given_again(fresh_api):
    """Custom distros, loopboxes, tags, domains, port mappings, news: deleting
    the newest and creating another gives a new id."""
    api = fresh_api
    auth, _ = api.new_customer()
    server = api.new_server(owner=auth[0])
    uid = api.new_container(auth[0], server["name"])

    def twice(create, delete):
        first = create()
        delete(first)
        second = create()
        assert second > first, (first, second)

    twice(lambda: api.post("/tags/", auth=auth, json={"name": unique("t")}).json()["id"],
          lambda i: api.delete(f"/tags/{i}", auth=auth))
    twice(lambda: api.post("/loopboxes/", auth=auth,
                           json={"container": uid, "filename": unique("f"),
                                 "mountpoint": unique("m")}).json()["id"],
          lambda i: api.delete(f"/loopboxes/{i}", auth=auth))
    twice(lambda: api.post(f"/portmappings/{server['address']}", auth=auth,
                           json={"container": uid, "proto": "tcp", "public_port": 20000,
                                 "private_port": 8000}).json()["id"],
          lambda i: api.delete(f"/portmappings/{server['address']}", auth=auth,
                               json={"id": i}))
    twice(lambda: api.admin("POST", "/news", {"content": "x"}, expect=201).json()["id"],
          lambda i: api.admin("DELETE", f"/news/{i}", expect=200))
    twice(lambda: api.admin("POST", "/distros", {"name": unique("d"), "path": "/"},
                            expect=201).json()["id"],
          lambda i: api.admin("DELETE", f"/distros/{i}", expect=200))


# ---- 2. no dangling custom distro ----

def storage_and_booter(api, ssh_keys, auth=None):
    """A customer's storage container holding a custom distro and a sibling
    on the same server booting it (startable: it has a key)."""
    if auth is None:
        auth, _ = api.new_customer()
    server = api.new_server()
    st = api.new_container(auth[0], server["name"], name="storage")
    b = api.new_container(auth[0], server["name"], name="booter")
    assert api.post(f"/containers/{st}", auth=auth,
                    json={"custom_distros_storage": True}).status_code == 200
    r = api.post(f"/custom_distros/{st}", auth=auth, json={"name": "j", "path": "jessie"})
    assert r.status_code == 201, r.text
    did = r.json()["id"]
    r = api.post(f"/containers/{b}", auth=auth, json={"custom_distro": did,
                                                      "ssh_keys": [ssh_keys[0]]})
    assert r.status_code == 200 and r.json()["custom_distro"] == did, r.text
    return auth, server, st, b, did


def test_deleting_the_holder_unsets_its_custom_distros(api, ssh_keys):
    auth, server, st, b, did = storage_and_booter(api, ssh_keys)
    me = api.get("/me/", auth=auth).json()
    # The node is told whose custom distro it is.
    state = node_get(api, server)
    rootfs = next(c for c in state["containers"] if c["uid"] == b)["rootfs"]
    assert rootfs == {"kind": "custom", "id": did, "holder_uid": st,
                      "holder_customer": me["uuid"], "path": "jessie"}
    node_status(api, server, [{"uid": b, "state": "running", "generation": 0}])

    api.admin("DELETE", f"/containers/{st}", expect=200)
    c = api.get(f"/containers/{b}", auth=auth).json()
    assert c["custom_distro"] is None and c["custom_distro_name"] is None
    reason = f"stopped: custom distro {did} was deleted with its storage container {st}"
    assert c["status"]["state"] == "stopped"
    assert c["status"]["last_error"] == reason
    # No longer in its node's state: the node stops it.
    assert b not in [x["uid"] for x in node_get(api, server)["containers"]]
    # The node's periodic report (stopped, reason unknown to it) keeps the reason.
    node_status(api, server, [{"uid": b, "state": "stopped", "last_error": None}])
    assert api.get(f"/containers/{b}", auth=auth).json()["status"]["last_error"] == reason

    # Another customer's new custom distro never takes the old id.
    other, _ = api.new_customer()
    _, _, _, _, did2 = storage_and_booter(api, ssh_keys, auth=other)
    assert did2 > did

    # Setting a distro again ends the API's stop.
    distro = api.new_distro()
    r = api.post(f"/containers/{b}", auth=auth, json={"distro": distro["id"]})
    assert r.status_code == 200
    assert r.json()["status"]["last_error"] is None  # the node's own report again
    assert b in [x["uid"] for x in node_get(api, server)["containers"]]


def test_deleting_a_custom_distro_says_why_its_containers_stop(api, ssh_keys):
    auth, server, st, b, did = storage_and_booter(api, ssh_keys)
    assert api.delete(f"/custom_distro/{did}", auth=auth).status_code == 200
    c = api.get(f"/containers/{b}", auth=auth).json()
    assert c["custom_distro"] is None
    assert c["status"] == {"state": "stopped", "since": None, "restarts": 0,
                           "last_error": f"stopped: custom distro {did} was deleted"}
    # Clearing the custom distro (to null) is not setting one: the reason stays.
    api.post(f"/containers/{b}", auth=auth, json={"custom_distro": None})
    assert api.get(f"/containers/{b}", auth=auth).json()["status"]["last_error"]
    # A new custom distro of the same holder ends it.
    r = api.post(f"/custom_distros/{st}", auth=auth, json={"name": "k", "path": "k"})
    r = api.post(f"/containers/{b}", auth=auth, json={"custom_distro": r.json()["id"]})
    assert r.status_code == 200 and r.json()["status"]["last_error"] is None


def test_only_own_custom_distros_on_the_same_server(api, ssh_keys):
    auth, server, st, b, did = storage_and_booter(api, ssh_keys)
    # Another customer's container on the very same server cannot boot it.
    other, _ = api.new_customer()
    theirs = api.new_container(other[0], server["name"])
    r = api.post(f"/containers/{theirs}", auth=other, json={"custom_distro": did})
    assert r.status_code == 400 and "custom_distro" in r.json()["reason"]
    assert api.get(f"/containers/{theirs}", auth=other).json()["custom_distro"] is None
    # Nor can the holder's owner's container on another server.
    far = api.new_container(auth[0], api.new_server()["name"])
    r = api.post(f"/containers/{far}", auth=auth, json={"custom_distro": did})
    assert r.status_code == 400
    assert api.get(f"/containers/{far}", auth=auth).json()["custom_distro"] is None


# ---- 9. numbers are bounded ----

def test_huge_sizes_are_refused_and_change_nothing(fresh_api):
    api = fresh_api
    auth, _ = api.new_customer()
    server = api.new_server(owner=auth[0], memory=MEMORY_MAX, storage=STORAGE_MAX)
    uid = api.new_container(auth[0], server["name"], memory=100, storage=100)
    # The attack: an owned server's container claims 2^63-1 MB, and every
    # later create summed past 2^63 (a 500).
    for field, top in (("memory", MEMORY_MAX), ("storage", STORAGE_MAX)):
        for bad in (HUGE, top + 1, 0, -1):
            r = api.post(f"/containers/{uid}", auth=auth, json={field: bad})
            assert r.status_code == 400, (field, bad, r.text)
            assert field in r.json()["reason"] and str(top) in r.json()["reason"]
            r = api.post("/containers/", auth=auth,
                         json={"server": server["address"], "name": "x", "memory": 1,
                               "storage": 1, field: bad})
            assert r.status_code == 400, (field, bad, r.text)
            api.admin("POST", f"/containers/{uid}", {field: bad}, expect=400)
            api.admin("POST", "/containers", {"customer": auth[0], "server": server["name"],
                                              "name": "x", "memory": 1, "storage": 1,
                                              field: bad}, expect=400)
            api.admin("POST", f"/servers/{server['name']}", {field: bad}, expect=400)
            api.admin("POST", "/servers", {"name": unique("s"), "address": "192.0.2.99",
                                           "memory": 1, "storage": 1, field: bad},
                      expect=400)
    c = api.get(f"/containers/{uid}", auth=auth).json()
    assert (c["memory"], c["storage"]) == (100, 100)
    assert len(api.get("/containers/", auth=auth).json()) == 1
    s = api.admin("GET", f"/servers/{server['name']}", expect=200).json()
    assert (s["memory"], s["storage"]) == (MEMORY_MAX, STORAGE_MAX)
    assert all(x["address"] != "192.0.2.99" for x in api.admin("GET", "/servers").json())

    # The maximum itself is fine, and creates keep working after the attempts.
    r = api.post(f"/containers/{uid}", auth=auth, json={"memory": MEMORY_MAX - 100,
                                                        "storage": STORAGE_MAX - 100})
    assert r.status_code == 200, r.text
    r = api.post("/containers/", auth=auth, json={"server": server["address"], "name": "y",
                                                  "memory": 100, "storage": 100})
    assert r.status_code == 201, r.text
    r = api.post("/containers/", auth=auth, json={"server": server["address"], "name": "z",
                                                  "memory": 1, "storage": 1})
    assert r.status_code == 409 and "not enough memory" in r.json()["reason"]


# ---- purge of deleted homes ----

def test_purge_deleted_reaches_the_nodes_state(api):
    server = api.new_server()
    st = node_get(api, server)
    assert st["server"]["purge_deleted_before"] == 0  # nothing purged until asked

    # A node waiting on its long poll wakes when the supplier purges.
    woke = {}

    def poll():
        t = time.monotonic()
        woke["state"] = node_get(api, server, version=st["version"], wait=30)
        woke["after"] = time.monotonic() - t

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.5)
    before = time.time()
    r = api.admin("POST", f"/servers/{server['name']}/purge_deleted", {"older_than": 3600},
                  expect=200).json()
    th.join(timeout=40)
    assert abs(r["purge_deleted_before"] - (before - 3600)) <= 2
    assert woke["after"] < 10
    assert woke["state"]["server"]["purge_deleted_before"] == r["purge_deleted_before"]
    assert woke["state"]["version"] != st["version"]

    # No body, or 0: everything deleted until now.
    r = requests.post(api.base + f"/admin/servers/{server['name']}/purge_deleted", timeout=30,
                      headers={"Authorization": "Bearer " + api.token})
    assert r.status_code == 200 and abs(r.json()["purge_deleted_before"] - time.time()) <= 2
    now = r.json()["purge_deleted_before"]

    # Bad input: 400 (404 for no such server), and nothing changes.
    for body in ({"older_than": -1}, {"older_than": "1h"}, {"older_than": 1.5}):
        r = api.admin("POST", f"/servers/{server['name']}/purge_deleted", body, expect=400)
        assert "older_than" in r.json()["reason"]
    api.admin("POST", "/servers/nosuchserver/purge_deleted", {}, expect=404)
    assert node_get(api, server)["server"]["purge_deleted_before"] == now
    # Only that server's state moves.
    other = api.new_server()
    assert node_get(api, other)["server"]["purge_deleted_before"] == 0


def test_purge_deleted_cli(api):
    server = api.new_server()
    env = dict(os.environ, IMPERIUM_API=api.base, IMPERIUM_ADMIN_TOKEN_FILE=api.token_file)
    env.pop("IMPERIUM_ADMIN_TOKEN", None)
    cli = os.path.join(BIN, "imperium")

    def run(*args):
        return subprocess.run([cli, "admin", "server", "purge-deleted", *args],
                              capture_output=True, text=True, timeout=60, env=env)

    p = run(server["name"], "--older-than", "86400")
    assert p.returncode == 0, p.stderr
    t = int(p.stdout.strip())
    assert abs(t - (time.time() - 86400)) <= 2
    assert node_get(api, server)["server"]["purge_deleted_before"] == t
    p = run(server["name"])
    assert p.returncode == 0 and abs(int(p.stdout) - time.time()) <= 2
    p = run(server["name"], "--older-than", "-5")
    assert p.returncode != 0 and "older_than" in p.stderr
    p = run(server["name"], "--older-than", "soon")
    assert p.returncode != 0
    p = run("nosuchserver")
    assert p.returncode != 0
    assert node_get(api, server)["server"]["purge_deleted_before"] != t  # the 2nd run's
    p = subprocess.run([cli, "admin", "server", "--help"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert "purge-deleted NAME" in p.stdout and "--older-than SECONDS" in p.stdout
