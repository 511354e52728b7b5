"""The node's nft table (issue 15, items 2, 3, 5; docs/NETWORK.md): containers
are isolated by default, reach each other only once both linked, lose an open
connection on unlink; they reach no node service and no world with NAT off,
the world (masqueraded) with it on; a port mapping from the world reaches a
container's 10.x service and stops with its delete; stop-all removes the
node's table and leaves any other.

Every node runs in a namespace of its own (nodeutil.NetNode, plugged into the
`world` namespace 203.0.113.0/24); probes run in the containers' namespaces
(nsenter --net=/proc/<init>/ns/net), the world's, or the node's.  Waits are
bounded polls (the node applies a change within a second of the API call);
no test asserts a timing."""

import contextlib
import json
import subprocess
import time

import pytest

from nodeutil import NEEDS_CONTAINERS, NETTOOL, init_of, launch, running, wait_for

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]

TABLE = "imperium"  # nft_table's default
LIVE = 3.0          # generous bound for "applied within a second"

# One TCP connection kept open; each stdin line is one exchange on it:
# "ok" when the echo came back within a second, "FAIL" otherwise.
HOLD = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.settimeout(1.0)
print("open", flush=True)
for line in sys.stdin:
    try:
        s.sendall(b"hi")
        ok = s.recv(10) == b"hi"
    except OSError:
        ok = False
    print("ok" if ok else "FAIL", flush=True)
'''

# A TCP server that answers each connection with the peer's address.
WHO = r'''
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("listening", flush=True)
while True:
    c, a = s.accept()
    c.sendall(a[0].encode())
    c.close()
'''


class Procs:
    """Helper processes inside namespaces, all killed at the end (before
    the containers stop: a process in a container's namespace keeps it)."""

    def __init__(self):
        self.procs = []

    def start(self, prefix, *cmd, ready=None):
        p = subprocess.Popen([*prefix, *cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        if ready:
            line = p.stdout.readline().strip()
            assert line == ready, line + p.stdout.read() if line != ready else ""
        return p

    def hold(self, prefix, host, port):
        """An open TCP connection to host:port; held.exchange() -> bool."""
        p = self.start(prefix, "python3", "-c", HOLD, host, str(port), ready="open")

        def exchange():
            p.stdin.write("x\n")
            p.stdin.flush()
            return p.stdout.readline().strip() == "ok"

        p.exchange = exchange
        return p

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def procs():
    p = Procs()
    try:
        yield p
    finally:
        p.close()


def cns(n, uid):
    """The command prefix that runs in container uid's network namespace."""
    return ["nsenter", f"--net={n.netns_of(uid)}"]


def link(n, a, b, op="link"):
    r = n.api.post(f"/containers/{a}", auth=n.auth, json={op: b})
    assert r.status_code == 200, r.text


def nft_json(ns, *what):
    """`nft -j list ...` in namespace ns: the parsed list, None when it fails."""
    p = ns.run("nft", "-j", "list", *what)
    return json.loads(p.stdout)["nftables"] if p.returncode == 0 else None


def set_elements(ns, name, table=TABLE):
    objs = nft_json(ns, "set", "inet", table, name) or []
    for o in objs:
        if "set" in o:
            return o["set"].get("elem", [])
    return []


def as_uid_probe(n, uid, proto, host, port, dev=""):
    """nettool's probe in container uid's network namespace as its uid
    (what a customer's process can do); dev: SO_BINDTODEVICE first."""
    p = n.in_container(uid, "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                       "/usr/bin/python3", NETTOOL, proto, host, str(port), "0.7",
                       *([dev] if dev else []))
    assert "FAIL" in p.stdout or p.stdout.strip() == f"{proto} ok", (p.stdout, p.stderr)
    assert "not permitted" not in p.stdout, p.stdout  # the probe itself must work
    return p.stdout.strip() == f"{proto} ok"


def reach(n, src, dst_ip, port, protos=("tcp", "udp")):
    return all(n.probe(src, proto, dst_ip, port) for proto in protos)


def never(n, src, dst_ip, port):
    return not any(n.probe(src, proto, dst_ip, port, timeout=0.7) for proto in ("tcp", "udp"))


def test_links_are_mutual_live_and_cut_open_flows(make_net_node, host_distro, ssh_keys, procs):
    n = make_net_node()
    a, b, c = (launch(n, host_distro, ssh_keys) for _ in range(3))
    ip = {u: n.ip_of(u) for u in (a, b, c)}
    inits = {u: init_of(u) for u in (a, b)}
    for u in (a, b, c):
        procs.start(cns(n, u), "python3", NETTOOL, "srv", ip[u], "7000", ready="listening")
    # Isolated by default, even one customer's containers.
    assert never(n, a, ip[b], 7000) and never(n, b, ip[a], 7000)
    # One side only: still nothing.  The node applies states in order: once
    # a mapping made after the link is in force, so is the one-sided link.
    link(n, a, b)
    pm(n, c, 9999, 7000, "tcp")
    wait_for(lambda: set_elements(n.ns, "pm_tcp"), LIVE, "the mapping made after the link")
    assert never(n, a, ip[b], 7000) and never(n, b, ip[a], 7000)
    assert set_elements(n.ns, "links") == []
    # Both sides: TCP and UDP both ways, within a second or so.
    link(n, b, a)
    wait_for(lambda: n.probe(a, "tcp", ip[b], 7000), LIVE, "a -> b once both linked")
    assert reach(n, a, ip[b], 7000) and reach(n, b, ip[a], 7000)
    # A third container never reaches either, nor is reached.
    assert never(n, c, ip[a], 7000) and never(n, c, ip[b], 7000)
    assert never(n, a, ip[c], 7000) and never(n, b, ip[c], 7000)
    # Neither container restarted for it (same init).
    assert {u: init_of(u) for u in (a, b)} == inits
    # Unlink: an open connection stops working, a new one fails.
    held = procs.hold(cns(n, a), ip[b], 7000)
    assert held.exchange()
    link(n, b, a, "unlink")
    wait_for(lambda: not held.exchange(), LIVE, "the open a -> b connection cut by unlink")
    assert never(n, a, ip[b], 7000) and never(n, b, ip[a], 7000)
    assert set_elements(n.ns, "links") == []


def test_a_flushed_ruleset_is_put_back(make_net_node, host_distro, ssh_keys, procs):
    """`nft flush ruleset` (a restart of Debian's nftables service, a
    firewall's reload) deletes the node's table: the node notices within a
    second or so and applies it again whole, saying so once."""
    n = make_net_node()
    a, b, c = (launch(n, host_distro, ssh_keys) for _ in range(3))
    ip = {u: n.ip_of(u) for u in (a, b, c)}
    for u in (b, c):
        procs.start(cns(n, u), "python3", NETTOOL, "srv", ip[u], "7000", ready="listening")
    link(n, a, b)
    link(n, b, a)
    wait_for(lambda: n.probe(a, "tcp", ip[b], 7000), LIVE, "a -> b once both linked")
    assert never(n, a, ip[c], 7000)
    for _ in range(2):  # each time: one event, one line
        n.ns.run("nft", "flush", "ruleset", check=True)
        assert nft_json(n.ns, "table", "inet", TABLE) is None
        wait_for(lambda: len(set_elements(n.ns, "links")) == 2, LIVE, "the table put back")
        assert never(n, a, ip[c], 7000) and never(n, c, ip[b], 7000)
        assert reach(n, a, ip[b], 7000)
    assert n.log().count(f"the nft table inet {TABLE} is gone or was replaced") == 2


def test_containers_reach_no_node_service_no_uwsgi_socket_no_world(make_net_node, host_distro,
                                                                   ssh_keys, world, procs):
    n = make_net_node()
    a, b = launch(n, host_distro, ssh_keys), launch(n, host_distro, ssh_keys)
    # The node's services: TCP+UDP echoes on 127.0.0.1 and on every address
    # of the node's namespace (the gateway 10.0.0.1 and its TEST-NET address).
    procs.start(n.ns.nsenter(), "python3", NETTOOL, "srv", "127.0.0.1", "7400",
                ready="listening")
    procs.start(n.ns.nsenter(), "python3", NETTOOL, "srv", "0.0.0.0", "7401", ready="listening")
    assert n.probe(None, "udp", "127.0.0.1", 7400) and n.probe(None, "tcp", "10.0.0.1", 7401)
    # From the container, as its uid: 127.0.0.1 out of uwsgi0 (SO_BINDTODEVICE:
    # towards the node, not the container's own lo), the any-address service
    # through the gateway and the node's address.
    targets = [(proto, "127.0.0.1", 7400, "uwsgi0") for proto in ("udp", "tcp")] + \
        [(proto, host, 7401, "") for proto in ("tcp", "udp") for host in ("10.0.0.1", n.address)]

    def reached():
        return [t for t in targets if as_uid_probe(n, a, *t)]

    assert reached() == []
    # Each probe can succeed: without the table (the daemon stopped, so it
    # does not put it back), the any-address service answers.
    n.stop()
    n.ns.run("nft", "delete", "table", "inet", TABLE, check=True)
    assert reached(), "no probe reached the node without the table: they prove nothing"
    n.start()
    wait_for(lambda: nft_json(n.ns, "table", "inet", TABLE), LIVE, "the table again")
    assert reached() == []
    # Another container's uWSGI socket over the network (an http-socket on its ip).
    procs.start(cns(n, b), "python3", NETTOOL, "srv", n.ip_of(b), "8000", ready="listening")
    assert never(n, a, n.ip_of(b), 8000)
    # The world, with nat = off (NetNode's default): nothing.
    procs.start(world.nsenter(), "python3", NETTOOL, "srv", world.GATEWAY, "7100",
                ready="listening")
    assert n.probe(None, "tcp", world.GATEWAY, 7100)  # the node itself reaches it
    assert never(n, a, world.GATEWAY, 7100)


def test_nat_on_masquerades_out_of_the_uplink(make_net_node, host_distro, ssh_keys, world,
                                              procs):
    n = make_net_node(conf="uplink = world0\nnat = on\n", veth_prefix="imn")
    a = launch(n, host_distro, ssh_keys)
    procs.start(world.nsenter(), "python3", "-c", WHO, world.GATEWAY, "7200", ready="listening")
    # The world sees the node's TEST-NET address, not the container's 10.x.
    p = n.in_container(a, "python3", "-c",
                       "import socket, sys\n"
                       "s = socket.create_connection((sys.argv[1], 7200), timeout=2)\n"
                       "print(s.recv(64).decode())", world.GATEWAY)
    assert p.stdout.strip() == n.address, (p.stdout, p.stderr)
    # Still no other container and no node service with NAT on.
    b = launch(n, host_distro, ssh_keys)
    procs.start(cns(n, b), "python3", NETTOOL, "srv", n.ip_of(b), "7000", ready="listening")
    assert never(n, a, n.ip_of(b), 7000)
    # Never the cloud's metadata service (nat_deny's default, 169.254.0.0/16),
    # though the node reaches it out of the uplink.
    meta = "169.254.169.254"
    world.ip("addr", "add", f"{meta}/32", "dev", "br0")
    try:
        procs.start(world.nsenter(), "python3", NETTOOL, "srv", meta, "80", ready="listening")
        assert n.probe(None, "tcp", meta, 80)
        assert never(n, a, meta, 80)
        procs.start(world.nsenter(), "python3", NETTOOL, "srv", world.GATEWAY, "7201",
                    ready="listening")
        assert n.probe(a, "tcp", world.GATEWAY, 7201)  # the rest of the world still works
    finally:
        world.run("ip", "addr", "del", f"{meta}/32", "dev", "br0")


def pm(n, uid, public, private, proto):
    r = n.api.post(f"/portmappings/{n.address}", auth=n.auth,
                   json={"container": uid, "proto": proto, "public_port": public,
                         "private_port": private})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def world_probe(world, proto, host, port, timeout=1.5):
    p = world.run("python3", NETTOOL, proto, host, str(port), str(timeout))
    return p.stdout.strip() == f"{proto} ok"


@contextlib.contextmanager
def world_routes_10_to(world, n, *addrs):
    """The world routes the container network to node n (a LAN neighbour
    of the uplink could), and holds addrs on its bridge; both undone at the
    end (the world is the module's).  The world has no way out of its
    namespace: a 10.x sent from it reaches only n."""
    world.ip("route", "add", "10.0.0.0/8", "via", n.address)
    added = []
    try:
        for addr in addrs:
            world.ip("addr", "add", addr, "dev", "br0")
            added.append(addr)
        yield
    finally:
        for addr in added:
            world.run("ip", "addr", "del", addr, "dev", "br0")
        world.run("ip", "route", "del", "10.0.0.0/8")


# Every datagram received on HOST:PORT is printed with its source, until
# "legit" (a marker sent after the spoofed ones) or T seconds of silence.
SINK = r'''
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((sys.argv[1], int(sys.argv[2])))
u.settimeout(float(sys.argv[3]))
print("listening", flush=True)
try:
    while True:
        d, a = u.recvfrom(100)
        print(d.decode(), a[0], flush=True)
        if d == b"legit":
            break
except OSError:
    print("silence", flush=True)
'''

# Datagrams from SRC (an address of this namespace) to DST:PORT.
SEND = r'''
import socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((sys.argv[1], 0))
for _ in range(int(sys.argv[5])):
    u.sendto(sys.argv[4].encode(), (sys.argv[2], int(sys.argv[3])))
    time.sleep(0.05)
'''


def test_the_world_cannot_pose_as_a_linked_container(make_net_node, host_distro, ssh_keys,
                                                      world, procs):
    """Whoever routes to the node (a LAN neighbour of the uplink, another
    node's veth in a shared namespace) sends with a's address to linked b:
    dropped, since a's address routes to a's veth, not to where it came in."""
    n = make_net_node()
    a, b = launch(n, host_distro, ssh_keys), launch(n, host_distro, ssh_keys)
    ip_a, ip_b = n.ip_of(a), n.ip_of(b)
    link(n, a, b)
    link(n, b, a)
    wait_for(lambda: len(set_elements(n.ns, "links")) == 2, LIVE, "both link elements")
    sink = procs.start(cns(n, b), "python3", "-c", SINK, ip_b, "7300", "5", ready="listening")
    with world_routes_10_to(world, n, f"{ip_a}/32"):
        world.run("python3", "-c", SEND, ip_a, ip_b, "7300", "spoof", "5", check=True)
        time.sleep(0.3)  # they would have arrived by now: the marker comes after them
        n.in_container(a, "python3", "-c", SEND, ip_a, ip_b, "7300", "legit", "3")
        out, _ = sink.communicate(timeout=10)
    got = out.split("\n")
    assert f"legit {ip_a}" in got, out  # a -> b itself works
    assert not [line for line in got if line.startswith("spoof")], out


def test_port_mapping_from_the_world(make_net_node, host_distro, ssh_keys, world, procs):
    n = make_net_node()
    a = launch(n, host_distro, ssh_keys)
    ip = n.ip_of(a)
    procs.start(cns(n, a), "python3", NETTOOL, "srv", ip, "8000", ready="listening")
    # The same service bound on 127.0.0.1 inside: never reachable by a mapping.
    procs.start(cns(n, a), "python3", NETTOOL, "srv", "127.0.0.1", "8001", ready="listening")
    tcp = pm(n, a, 9000, 8000, "tcp")
    pm(n, a, 9000, 8000, "udp")
    pm(n, a, 9001, 8001, "tcp")
    wait_for(lambda: world_probe(world, "tcp", n.address, 9000), LIVE, "the tcp mapping")
    assert world_probe(world, "udp", n.address, 9000)
    assert not world_probe(world, "tcp", n.address, 9001)
    assert not world_probe(world, "tcp", n.address, 9002)  # not mapped
    # A node-local client of the mapping (the node's own address).
    assert n.probe(None, "tcp", n.address, 9000)
    # The container's 10.x is not reachable from the world without a mapping
    # (even routed to the node).
    with world_routes_10_to(world, n):
        assert not world_probe(world, "tcp", ip, 8000, timeout=0.7)
        assert not world_probe(world, "udp", ip, 8000, timeout=0.7)
    # Delete: an open mapped flow stops, the port is closed.
    held = procs.hold(world.nsenter(), n.address, 9000)
    assert held.exchange()
    r = n.api.delete(f"/portmappings/{n.address}", auth=n.auth, json={"id": tcp})
    assert r.status_code == 200, r.text
    wait_for(lambda: not held.exchange(), LIVE, "the open mapped flow cut by the delete")
    assert not world_probe(world, "tcp", n.address, 9000, timeout=0.7)
    assert world_probe(world, "udp", n.address, 9000)  # the udp mapping stays


def test_moving_a_mapped_port_cuts_the_old_flows(make_net_node, host_distro, ssh_keys, world,
                                                  procs):
    """A mapped flow belongs to its mapping (public port . container ip .
    private port), not to the public port alone.  The daemon is stopped
    while the port moves, so the node sees the move as one change (no state
    in between without the port)."""
    n = make_net_node()
    a, b = launch(n, host_distro, ssh_keys), launch(n, host_distro, ssh_keys)
    for u in (a, b):
        procs.start(cns(n, u), "python3", NETTOOL, "srv", n.ip_of(u), "8000", ready="listening")
    old = pm(n, a, 9000, 8000, "tcp")
    wait_for(lambda: world_probe(world, "tcp", n.address, 9000), LIVE, "the tcp mapping")
    held = procs.hold(world.nsenter(), n.address, 9000)
    assert held.exchange()
    n.stop()
    r = n.api.delete(f"/portmappings/{n.address}", auth=n.auth, json={"id": old})
    assert r.status_code == 200, r.text
    pm(n, b, 9000, 8000, "tcp")
    n.start()
    wait_for(lambda: n.ip_of(b) in json.dumps(nft_json(n.ns, "map", "inet", TABLE, "portmap")),
             LIVE, "the moved mapping")
    wait_for(lambda: not held.exchange(), LIVE, "the old flow to a cut by the move")
    assert world_probe(world, "tcp", n.address, 9000)  # a new one reaches b


def test_stop_all_removes_only_the_nodes_table(make_net_node, host_distro, ssh_keys):
    n = make_net_node()
    n.ns.run("nft", "add", "table", "inet", "other", check=True)
    n.ns.run("nft", "add", "set", "inet", "other", "keep", "{ type ipv4_addr; }", check=True)
    n.ns.run("nft", "add", "element", "inet", "other", "keep", "{ 192.0.2.7 }", check=True)
    a, b = launch(n, host_distro, ssh_keys), launch(n, host_distro, ssh_keys)
    link(n, a, b)
    link(n, b, a)
    pm(n, a, 9000, 8000, "tcp")
    wait_for(lambda: len(set_elements(n.ns, "links")) == 2, LIVE, "both link elements")
    assert set_elements(n.ns, "pm_tcp") == [{"concat": [9000, n.ip_of(a), 8000]}]
    # The daemon's exit (SIGTERM) leaves the table: the containers keep running isolated.
    n.stop()
    assert len(set_elements(n.ns, "links")) == 2
    p = n.run("stop-all", "--config", n.conf)
    assert p.returncode == 0, p.stderr
    assert nft_json(n.ns, "table", "inet", TABLE) is None  # gone, elements and all
    other = nft_json(n.ns, "set", "inet", "other", "keep")
    assert other is not None and "192.0.2.7" in json.dumps(other)


def test_no_container_starts_while_the_table_cannot_be_applied(make_net_node, host_distro,
                                                               ssh_keys, procs):
    """Without its table containers would reach each other: while libnftables
    cannot apply it, nothing starts (the status says why), retried each
    second.  Here another process owns a table of that name (nft's `flags
    owner`: only its socket may change it, and it goes with that socket)."""
    n = make_net_node(start=False)
    owner = procs.start(n.ns.nsenter(), "nft", "-i")
    owner.stdin.write(f"add table inet {TABLE} {{ flags owner; }}\n")
    owner.stdin.flush()
    # (`nft -j` 1.0.6 prints an owned table's flags as broken JSON: plain list.)
    wait_for(lambda: n.ns.run("nft", "list", "table", "inet", TABLE).returncode == 0, 5,
             "the owned table")
    n.start()
    uid = n.new_container()
    n.post(uid, {"distro": host_distro["id"]})
    n.post(uid, {"ssh_keys": [ssh_keys[0]]})
    st = n.wait_status(uid, state="failed")
    assert "nft table" in st["last_error"], st
    assert not running(uid)
    assert "no container starts until it applies" in n.log()
    owner.kill()
    owner.wait()
    wait_for(lambda: running(uid), 5, "the container once the table applied")
    n.wait_status(uid, state="running", last_error=None)
    assert set_elements(n.ns, "links") == []  # ours now
