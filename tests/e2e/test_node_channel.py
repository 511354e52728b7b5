"""The nodes' channel: per-server authentication, desired state with a
version, long polls woken by changes, status reports shown to customers."""

import json
import threading
import time

import requests

from conftest import stop_api
from helpers import unique


def node_get(api, server, secret, **params):
    return requests.get(api.base + "/node/state", auth=(server["name"], secret),
                        params=params, timeout=90)


def make_server(api, **kw):
    s = api.new_server(**kw)
    assert len(s["node_secret"]) == 64
    return s, s["node_secret"]


def startable(api, auth, uid, distro, key):
    r = api.post(f"/containers/{uid}", auth=auth, json={"distro": distro["id"], "ssh_keys": [key]})
    assert r.status_code == 200


def test_node_auth(api):
    server, secret = make_server(api)
    assert node_get(api, server, secret).status_code == 200
    assert node_get(api, server, secret[:-1] + ("0" if secret[-1] != "0" else "1")).status_code == 401
    assert requests.get(api.base + "/node/state", timeout=10).status_code == 401
    other, other_secret = make_server(api)
    assert node_get(api, server, other_secret).status_code == 401
    # Customer credentials and the admin token are not node credentials.
    auth, _ = api.new_customer()
    assert requests.get(api.base + "/node/state", auth=auth, timeout=10).status_code == 401
    r = requests.get(api.base + "/node/state", timeout=10,
                     headers={"Authorization": "Bearer " + api.token})
    assert r.status_code == 401
    # Rotation: the old secret stops working at once.
    r = api.admin("POST", f"/servers/{server['name']}/secret", expect=200).json()
    assert node_get(api, server, secret).status_code == 401
    assert node_get(api, server, r["node_secret"]).status_code == 200


def test_state_holds_only_this_servers_startable_containers(api, ssh_keys):
    auth, info = api.new_customer()
    server, secret = make_server(api)
    elsewhere, _ = make_server(api)
    distro = api.new_distro(path="/srv/distros/bookworm")
    ready = api.new_container(auth[0], server["name"])
    no_key = api.new_container(auth[0], server["name"])
    no_distro = api.new_container(auth[0], server["name"])
    other_server = api.new_container(auth[0], elsewhere["name"])
    startable(api, auth, ready, distro, ssh_keys[0])
    startable(api, auth, other_server, distro, ssh_keys[0])
    api.post(f"/containers/{no_key}", auth=auth, json={"distro": distro["id"]})
    api.post(f"/containers/{no_distro}", auth=auth, json={"ssh_keys": [ssh_keys[0]]})
    st = node_get(api, server, secret).json()
    assert [c["uid"] for c in st["containers"]] == [ready]
    c = st["containers"][0]
    assert c["rootfs"] == {"kind": "distro", "id": distro["id"], "path": "/srv/distros/bookworm"}
    assert c["ssh_keys"] == [ssh_keys[0]]
    assert c["memory"] == 500 and c["hostname"] == "changeme"
    assert c["customer"]["uuid"] == info["uuid"]
    assert "BEGIN PRIVATE KEY" in c["customer"]["rsa_key"]
    assert st["server"]["name"] == server["name"]
    assert len(st["version"]) == 32
    # Another customer's keys never reach a node without its containers.
    other_auth, other_info = api.new_customer()
    other_uid = api.new_container(other_auth[0], elsewhere["name"])
    startable(api, other_auth, other_uid, distro, ssh_keys[1])
    text = node_get(api, server, secret).text
    assert other_info["uuid"] not in text and other_info["rsa_pubkey"].split("\n")[1] not in text


def test_mutual_links_only(api, ssh_keys):
    auth, _ = api.new_customer()
    server, secret = make_server(api)
    distro = api.new_distro()
    a = api.new_container(auth[0], server["name"])
    b = api.new_container(auth[0], server["name"])
    for uid in (a, b):
        startable(api, auth, uid, distro, ssh_keys[0])
    api.post(f"/containers/{a}", auth=auth, json={"link": b})
    links = {c["uid"]: c["links"] for c in node_get(api, server, secret).json()["containers"]}
    assert links == {a: [], b: []}  # one side only: no link yet
    api.post(f"/containers/{b}", auth=auth, json={"link": a})
    links = {c["uid"]: c["links"] for c in node_get(api, server, secret).json()["containers"]}
    assert links == {a: [b], b: [a]}
    assert node_get(api, server, secret).json()["link_peers"] == []  # both here


def test_link_peers_are_the_mutual_links_on_other_servers(api, ssh_keys):
    """Issue 15: a node learns the remote ends of its containers' mutual
    links (ip, server address, uid), and only mutual ones."""
    auth, _ = api.new_customer()
    here, secret = make_server(api)
    there, there_secret = make_server(api)
    distro = api.new_distro()
    a = api.new_container(auth[0], here["name"])
    b = api.new_container(auth[0], there["name"])
    c = api.new_container(auth[0], there["name"])
    for uid in (a, b, c):
        startable(api, auth, uid, distro, ssh_keys[0])
    for x, y in ((a, b), (b, a), (a, c)):  # c never links back
        assert api.post(f"/containers/{x}", auth=auth, json={"link": y}).status_code == 200
    ip = {u: api.get(f"/containers/{u}", auth=auth).json()["ip"] for u in (a, b)}
    st = node_get(api, here, secret).json()
    assert st["link_peers"] == [{"ip": ip[b], "server": there["address"], "uid": b}]
    st = node_get(api, there, there_secret).json()
    assert st["link_peers"] == [{"ip": ip[a], "server": here["address"], "uid": a}]
    assert api.post(f"/containers/{b}", auth=auth, json={"unlink": a}).status_code == 200
    assert node_get(api, here, secret).json()["link_peers"] == []


def test_legion_members_get_the_domains_of_each_others_customers(api, ssh_keys):
    """Issue 19: a cluster-domain subscription reaches every member's
    router, which checks it against the domain owner's key: a member's state
    holds the domains (and keys) of customers with a container on any member
    of its legions, and nothing of servers outside them; the legion's id
    (its UDP port is legion_port + id) is in the state."""
    here, secret = make_server(api)
    there, _ = make_server(api)
    outside, _ = make_server(api)
    distro = api.new_distro()
    names = {}
    for srv in (there, outside):
        auth, info = api.new_customer()
        startable(api, auth, api.new_container(auth[0], srv["name"]), distro, ssh_keys[0])
        names[srv["name"]] = (unique("c") + ".example.org", info)
        api.admin("POST", "/domains", {"name": names[srv["name"]][0], "customer": auth[0]},
                  expect=201)
    domains = {d["name"] for d in node_get(api, here, secret).json()["domains"]}
    assert not domains & {names[there["name"]][0], names[outside["name"]][0]}
    legion = unique("legion")
    r = api.admin("POST", "/legions", {"name": legion, "address": "203.0.113.100", "key": "k",
                                       "nodes": [here["name"], there["name"]]})
    assert r.status_code in (200, 201), r.text
    st = node_get(api, here, secret).json()
    by_name = {d["name"]: d for d in st["domains"]}
    name, info = names[there["name"]]
    assert by_name[name]["customer"] == info["uuid"]
    assert by_name[name]["pubkey"] == info["rsa_pubkey"]
    assert names[outside["name"]][0] not in by_name
    assert names[outside["name"]][1]["uuid"] not in json.dumps(st)
    [lg] = [lg for lg in st["legions"] if lg["name"] == legion]
    [admin_view] = [lg for lg in api.admin("GET", "/legions", expect=200).json()
                    if lg["name"] == legion]
    assert lg["id"] == admin_view["id"] and lg["nodes"] == [here["address"], there["address"]]
    api.admin("DELETE", f"/legions/{legion}", expect=200)
    domains = {d["name"] for d in node_get(api, here, secret).json()["domains"]}
    assert name not in domains


def test_long_poll_wakes_on_change(api, ssh_keys):
    auth, _ = api.new_customer()
    server, secret = make_server(api)
    distro = api.new_distro()
    uid = api.new_container(auth[0], server["name"])
    startable(api, auth, uid, distro, ssh_keys[0])
    first = node_get(api, server, secret).json()
    # No change: the poll waits the whole time and answers the same version.
    t0 = time.monotonic()
    same = node_get(api, server, secret, version=first["version"], wait=1).json()
    assert time.monotonic() - t0 >= 0.9
    assert same["version"] == first["version"]
    # A stale version answers at once.
    t0 = time.monotonic()
    assert node_get(api, server, secret, version="stale", wait=30).json()["version"] == first["version"]
    assert time.monotonic() - t0 < 5
    # A change wakes a waiting poll long before its 30 s are up.
    result = {}

    def poll():
        result["r"] = node_get(api, server, secret, version=first["version"], wait=30)
        result["t"] = time.monotonic()

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.5)
    assert th.is_alive()
    t_change = time.monotonic()
    api.post(f"/containers/{uid}", auth=auth, json={"reboot": 1})
    th.join(timeout=30)
    assert not th.is_alive()
    assert result["t"] - t_change < 5
    new = result["r"].json()
    assert new["version"] != first["version"]
    assert new["containers"][0]["generation"] == first["containers"][0]["generation"] + 1
    # A change on another server does not change this node's version.
    other, _ = make_server(api)
    api.new_container(auth[0], other["name"], memory=1, storage=1)
    assert node_get(api, server, secret).json()["version"] == new["version"]


def test_bad_wait_is_400(api):
    server, secret = make_server(api)
    for w in ("-1", "61", "x", ""):
        assert node_get(api, server, secret, wait=w).status_code == 400


def test_status_reports(api, ssh_keys):
    auth, _ = api.new_customer()
    server, secret = make_server(api)
    other_server, other_secret = make_server(api)
    distro = api.new_distro()
    uid = api.new_container(auth[0], server["name"])
    st = api.get(f"/containers/{uid}", auth=auth).json()["status"]
    assert st == {"state": "stopped", "since": None, "restarts": 0, "last_error": None}
    startable(api, auth, uid, distro, ssh_keys[0])
    assert api.get(f"/containers/{uid}", auth=auth).json()["status"]["state"] == "starting"
    gen = node_get(api, server, secret).json()["containers"][0]["generation"]
    report = {"containers": [{"uid": uid, "state": "running", "since": 1700000000,
                              "restarts": 2, "last_error": None, "generation": gen}]}
    r = requests.post(api.base + "/node/status", auth=(server["name"], secret), json=report,
                      timeout=10)
    assert r.status_code == 200
    st = api.get(f"/containers/{uid}", auth=auth).json()["status"]
    assert st == {"state": "running", "since": 1700000000, "restarts": 2, "last_error": None}
    # A change not applied yet shows as starting.
    api.post(f"/containers/{uid}", auth=auth, json={"reboot": 1})
    assert api.get(f"/containers/{uid}", auth=auth).json()["status"]["state"] == "starting"
    # Another node cannot report for this container.
    bad = {"containers": [{"uid": uid, "state": "failed", "last_error": "nope"}]}
    r = requests.post(api.base + "/node/status", auth=(other_server["name"], other_secret),
                      json=bad, timeout=10)
    assert r.status_code == 200
    assert api.get(f"/containers/{uid}", auth=auth).json()["status"]["last_error"] is None
    # Malformed reports are refused whole.
    for body in ({"containers": [{"uid": uid, "state": "dancing"}]},
                 {"containers": [{"uid": str(uid), "state": "running"}]},
                 {"containers": "x"}, {}):
        r = requests.post(api.base + "/node/status", auth=(server["name"], secret), json=body,
                          timeout=10)
        assert r.status_code == 400, body


def test_shutdown_with_a_waiting_poll(fresh_api, ssh_keys):
    """SIGTERM while a node's long poll is suspended: a clean exit."""
    api = fresh_api
    server, secret = make_server(api)
    v = node_get(api, server, secret).json()["version"]
    done = threading.Event()

    def poll():
        try:
            node_get(api, server, secret, version=v, wait=60)
        except requests.RequestException:
            pass
        done.set()

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.5)
    stop_api(api)  # asserts exit code 0 and no sanitizer report
    assert done.wait(10)
    th.join()
