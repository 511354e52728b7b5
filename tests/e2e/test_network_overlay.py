"""Links across servers over the VXLAN overlay (issue 15, item 4;
docs/NETWORK.md, "The overlay"): two nodes, each in a network namespace of
its own plugged into the `world` namespace (203.0.113.0/24, the underlay),
`overlay = vxlan`, a container on each.  Not linked, or linked one way:
nothing passes; linked both ways: TCP and UDP both ways; unlink: an open
connection stops and new ones fail; a third container never reaches them;
each node's overlay device holds routes only for the linked remote /32s,
and stop-all leaves none of it.

Network safety: the 10.x probes run inside containers' namespaces, whose
default route leads to their node's namespace, whose default route leads
to the world namespace: nothing can reach the host's namespace."""

import json
import socket
import subprocess
import time

import pytest

from nodeutil import NEEDS_CONTAINERS, NETTOOL, launch, socket_in_netns, wait_for

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]

DEV = "vx-imperium"
OVERLAY = "overlay = vxlan\n"
PORT = 7000


def mac_of(address):
    """The node's overlay MAC: 02:<its 4 address bytes>:00."""
    return "02:" + ":".join(f"{int(b):02x}" for b in address.split(".")) + ":00"


def overlay_of(node):
    """(routes, neighbours, forwarding entries) of the node's overlay device,
    as {ip}, {ip: mac}, {mac: dst}; None when there is no device."""
    if node.ns.run("ip", "link", "show", DEV).returncode != 0:
        return None
    routes = {r["dst"] for r in node.ns.ip_json("route", "show", "proto", "73", "dev", DEV)}
    neigh = {n["dst"]: n.get("lladdr") for n in node.ns.ip_json("neigh", "show", "dev", DEV)
             if "PERMANENT" in n.get("state", [])}
    p = node.ns.run("bridge", "-j", "fdb", "show", "dev", DEV, check=True)
    fdb = {f["mac"]: f.get("dst") for f in json.loads(p.stdout or "[]") if f.get("dst")}
    return routes, neigh, fdb


class Box:
    """A container: its node, owner and ip."""

    def __init__(self, node, host_distro, ssh_keys, auth=None, i=0):
        self.node, self.auth = node, auth or node.auth
        self.uid = launch(node, host_distro, ssh_keys, auth=auth, i=i)
        r = node.api.get(f"/containers/{self.uid}", auth=self.auth)
        assert r.status_code == 200, r.text
        self.ip = r.json()["ip"]

    def post(self, body):
        r = self.node.api.post(f"/containers/{self.uid}", auth=self.auth, json=body)
        assert r.status_code == 200, r.text

    def serve(self):
        """nettool's TCP + UDP echo on ip:PORT in the container's namespace
        (NetNode.serve asks the API with the node's customer)."""
        p = subprocess.Popen(["nsenter", f"--net={self.node.netns_of(self.uid)}", "python3",
                              NETTOOL, "srv", self.ip, str(PORT)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert p.stdout.readline().strip() == "listening"
        return p

    def reaches(self, other, proto="tcp", timeout=1.5):
        return self.node.probe(self.uid, proto, other.ip, PORT, timeout=timeout)


def both_ways(a, b, proto):
    return a.reaches(b, proto) and b.reaches(a, proto)


def neither_way(a, b):
    """Nothing in either direction, TCP or UDP (an echo on this machine
    comes back in milliseconds: 0.8 s of silence is a refusal)."""
    return not any(x.reaches(y, p, timeout=0.8) for x, y in ((a, b), (b, a))
                   for p in ("tcp", "udp"))


@pytest.mark.parametrize("customers", ["one customer", "two customers"])
def test_linked_containers_reach_each_other_across_nodes(make_net_node, host_distro, ssh_keys,
                                                         customers):
    na, nb = make_net_node(conf=OVERLAY), make_net_node(conf=OVERLAY)
    x = Box(na, host_distro, ssh_keys)
    y = Box(nb, host_distro, ssh_keys, auth=na.auth if customers == "one customer" else None)
    # The third: on the other node in one case, beside x in the other.
    z = Box(na if customers == "one customer" else nb, host_distro, ssh_keys, i=1)
    assert len({x.ip, y.ip, z.ip}) == 3

    # With the overlay on, uwsgi0 carries what the overlay can (1500 - 50).
    for box in (x, y):
        (link,) = box.node.container_ip_json(box.uid, "link", "show", "uwsgi0")
        assert link["mtu"] == 1450, link
    # Each node's device: VXLAN from its own address, its own MAC, no entries.
    for n in (na, nb):
        (dev,) = n.ns.ip_json("-d", "link", "show", DEV)
        assert dev["address"] == mac_of(n.address), dev
        data = dev["linkinfo"]["info_data"]
        assert (data["id"], data["local"], data["port"], data["learning"]) == \
            (4242, n.address, 4789, False), data
        assert overlay_of(n) == (set(), {}, {})

    servers = [box.serve() for box in (x, y, z)]
    try:
        assert neither_way(x, y)
        # One side only: still nothing, and no route for it.
        x.post({"link": y.uid})
        time.sleep(1.0)
        assert neither_way(x, y)
        assert overlay_of(na) == (set(), {}, {})

        # Both: TCP and UDP both ways, within a few seconds of the call.
        y.post({"link": x.uid})
        wait_for(lambda: x.reaches(y), 5, "x -> y over the overlay", interval=0.1)
        assert both_ways(x, y, "tcp") and both_ways(x, y, "udp")
        # Each node holds exactly the remote linked /32, its MAC, its node.
        assert overlay_of(na) == ({y.ip}, {y.ip: mac_of(nb.address)},
                                  {mac_of(nb.address): nb.address})
        assert overlay_of(nb) == ({x.ip}, {x.ip: mac_of(na.address)},
                                  {mac_of(na.address): na.address})
        # The third reaches neither, and neither reaches it.
        assert neither_way(z, y) and neither_way(z, x)

        # An open connection x -> y, then unlink: it stops, new ones fail.
        c = socket_in_netns(na.netns_of(x.uid))
        try:
            c.settimeout(2)
            c.connect((y.ip, PORT))
            c.sendall(b"one")
            assert c.recv(10) == b"one"
            x.post({"unlink": y.uid})
            wait_for(lambda: not x.reaches(y), 5, "the unlink", interval=0.1)
            c.settimeout(1)
            with pytest.raises(OSError):
                c.sendall(b"two")
                c.recv(10)
        finally:
            c.close()
        assert neither_way(x, y)
        wait_for(lambda: overlay_of(na) == (set(), {}, {}) and overlay_of(nb) == (set(), {}, {}),
                 5, "the overlay entries gone")
    finally:
        for s in servers:
            s.kill()
            s.wait(10)


def test_stop_all_removes_the_overlay(make_net_node, host_distro, ssh_keys):
    na, nb = make_net_node(conf=OVERLAY), make_net_node(conf=OVERLAY)
    x = Box(na, host_distro, ssh_keys)
    y = Box(nb, host_distro, ssh_keys)
    x.post({"link": y.uid})
    y.post({"link": x.uid})
    wait_for(lambda: overlay_of(na) and overlay_of(na)[0] == {y.ip}, 5, "the route to y")

    # The daemon's exit leaves the device and its entries (the containers
    # keep running, linked); a restarted daemon adopts them untouched.
    index = na.ns.ip_json("link", "show", DEV)[0]["ifindex"]
    na.stop()
    assert overlay_of(na)[0] == {y.ip}
    na.start()
    wait_for(lambda: "node state received" in na.log(), 10, "the restarted daemon's state")
    assert na.ns.ip_json("link", "show", DEV)[0]["ifindex"] == index
    assert overlay_of(na)[0] == {y.ip}

    # stop-all: no device, route or neighbour of theirs left.
    na.stop()
    p = na.run("stop-all", "--config", na.conf)
    assert p.returncode == 0, p.stderr
    assert overlay_of(na) is None
    assert not [r for r in na.our_routes() if r["dst"] == y.ip]
    assert not [n for n in na.ns.ip_json("neigh") if n["dst"] == y.ip]


def test_vxlan_from_a_stranger_is_dropped(make_net_node, world, host_distro, ssh_keys):
    """The input rule: VXLAN to the node's port only from a peer node; the
    forward rule: from the overlay, only linked pairs."""
    na = make_net_node(conf=OVERLAY)
    x = Box(na, host_distro, ssh_keys)
    rules = na.ns.run("nft", "list", "table", "inet", "imperium", check=True).stdout
    assert f'iifname "{DEV}" jump overlay_in' in rules, rules
    assert f"ip daddr {na.address} udp dport 4789 ip saddr != @overlay_peers drop" in rules
    # A datagram to the VXLAN port from the world (not a peer) is counted
    # by nothing but the drop: the node's socket never sees it.  Send one
    # and check the rule's effect through the kernel's VXLAN counters.
    before = na.ns.ip_json("-s", "link", "show", DEV)[0]["stats64"]["rx"]
    s = socket_in_netns(world.path, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        frame = bytes([8, 0, 0, 0, 0, 0x10, 0x92, 0]) + bytes.fromhex(
            mac_of(na.address).replace(":", "")) + bytes(6) + b"\x08\x00" + bytes(46)
        for _ in range(3):
            s.sendto(frame, (na.address, 4789))
    finally:
        s.close()
    time.sleep(0.3)
    after = na.ns.ip_json("-s", "link", "show", DEV)[0]["stats64"]["rx"]
    assert after["packets"] == before["packets"], (before, after)
    assert x.ip  # the container is there; nothing reached it
