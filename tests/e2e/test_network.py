"""Containers' uwsgi0 (issue 15, item 1; docs/NETWORK.md): the veth whose
inside end holds the container's API ip, its /32 route on the node, the
node's gateway address and `unreachable` route, cleanup on stop, adoption
across a node restart, crash leftovers removed at node start.

Every networked node runs in a namespace of its own (nodeutil.NetNode,
plugged into the `world` namespace); nothing is made in the host's."""

import json
import os
import signal
import subprocess

import pytest

from nodeutil import (NEEDS_CONTAINERS, NODE, init_of, launch, running, socket_in_netns,
                      wait_for)

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]

HTTP_APP = '''def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b"hello from " + NAME.encode()]
'''


def uwsgi0(node, uid):
    links = {l["ifname"]: l for l in node.container_ip_json(uid, "addr")}
    return links


def route32(node, ip):
    return [r for r in node.our_routes() if r["dst"] == ip]


def http_vassal(node, uid, ip, port, name):
    """A vassal with http-socket = ip:port answering "hello from <name>"."""
    home = node.home(uid)
    with open(os.path.join(home, f"{name}.py"), "w") as f:
        f.write(f"NAME = {name!r}\n" + HTTP_APP)
    tmp = os.path.join(home, "vassals", f".{name}.tmp")
    with open(tmp, "w") as f:
        f.write(f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/{name}.py\n"
                f"http-socket = {ip}:{port}\n")
    os.chown(tmp, uid, uid)
    os.rename(tmp, os.path.join(home, "vassals", f"{name}.ini"))


def http_get(node, url):
    """GET url from the node's namespace: the body, or None."""
    p = node.ns.run("python3", "-c",
                    "import sys, urllib.request\n"
                    "try: print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())\n"
                    "except Exception as e: print('FAIL', e)", url)
    out = p.stdout.strip()
    return None if out.startswith("FAIL") else out


def test_uwsgi0_holds_the_api_ip_and_the_default_route(make_net_node, host_distro, ssh_keys):
    n = make_net_node()
    uid = launch(n, host_distro, ssh_keys)
    ip = n.ip_of(uid)
    assert ip.startswith("10.")
    links = uwsgi0(n, uid)
    assert set(links) == {"lo", "uwsgi0"}, links
    assert "UP" in links["lo"]["flags"]
    addrs = [(a["local"], a["prefixlen"]) for a in links["uwsgi0"]["addr_info"]
             if a["family"] == "inet"]
    assert addrs == [(ip, 8)], links["uwsgi0"]
    assert "UP" in links["uwsgi0"]["flags"]
    routes = n.container_ip_json(uid, "route")
    assert {"dst": "default", "gateway": "10.0.0.1", "dev": "uwsgi0"}.items() <= \
        [r for r in routes if r["dst"] == "default"][0].items(), routes

    # The node: <prefix><uid> with no address, the /32 through it (proto 73),
    # the gateway on lo, `unreachable 10.0.0.0/8 proto 73`, forwarding on.
    host = f"imp{uid}"
    assert host in n.links()
    (link,) = n.ns.ip_json("addr", "show", "dev", host)
    assert not link["addr_info"], link  # no IPv4, and no IPv6 link-local either
    assert [r["dev"] for r in route32(n, ip)] == [host]
    assert [r for r in n.our_routes() if r["dst"] == "10.0.0.0/8" and r["type"] == "unreachable"]
    (lo,) = n.ns.ip_json("addr", "show", "dev", "lo")
    assert ("10.0.0.1", 32) in [(a["local"], a["prefixlen"]) for a in lo["addr_info"]]
    assert n.ns.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    # route_localnet only for a server on 127.x (make run): this one has a
    # TEST-NET address, and with it 0 a container's packets to 127.0.0.1
    # (SO_BINDTODEVICE uwsgi0) die even without the nft table.
    for key, want in (("ipv4/conf/{}/proxy_arp", "1"), ("ipv4/conf/{}/route_localnet", "0"),
                      ("ipv6/conf/{}/disable_ipv6", "1")):
        p = n.ns.run("cat", "/proc/sys/net/" + key.format(host))
        assert p.stdout.strip() == want, key
    # Proxy ARP answers at once (the kernel's default waits up to 0.8 s: a
    # container's first packet to a just-linked peer would wait for it).
    p = n.ns.run("cat", f"/proc/sys/net/ipv4/neigh/{host}/proxy_delay")
    assert p.stdout.strip() == "0", p
    # The host's namespace got none of it.
    assert not os.path.exists(f"/sys/class/net/{host}")


def test_the_containers_vassal_answers_on_its_ip(make_net_node, host_distro, ssh_keys):
    n = make_net_node()
    uid = launch(n, host_distro, ssh_keys)
    ip = n.ip_of(uid)
    http_vassal(n, uid, ip, 8000, "web")
    got = wait_for(lambda: http_get(n, f"http://{ip}:8000/"), 30, "the vassal on uwsgi0",
                   interval=0.2)
    assert got == "hello from web"


def test_a_stopped_container_leaves_no_interface_or_route(make_net_node, host_distro, ssh_keys):
    n = make_net_node()
    uids = [launch(n, host_distro, ssh_keys, i=i) for i in range(2)]
    ips = [n.ip_of(u) for u in uids]
    assert {f"imp{u}" for u in uids} <= set(n.links())

    # Restart through the API: the old veth's name is free again at once.
    init = init_of(uids[0])
    n.post(uids[0], {"reboot": True})
    wait_for(lambda: running(uids[0]) and init_of(uids[0]) != init, 10, "the rebooted container")
    wait_for(lambda: f"imp{uids[0]}" in n.links(), 5, "the new veth")
    assert "uwsgi0" in uwsgi0(n, uids[0])
    assert n.status(uids[0])["last_error"] is None

    # stop-all (with the daemon stopped): nothing of theirs left, even when
    # something else keeps a container's network namespace alive (here a
    # process of the test in it), where the kernel would keep the veth.
    holder = n.serve(uids[1], 7000)
    try:
        n.stop()
        p = n.run("stop-all", "--config", n.conf)
        assert p.returncode == 0, p.stderr
        assert not n.links(), n.links()
        assert not [r for r in n.our_routes() if r["dst"] in ips]
    finally:
        holder.kill()
        holder.wait(10)
    # Nothing of the node's either: its unreachable route and the gateway on
    # lo go once no proto-73 /32 is left (ip_forward stays).
    assert not n.our_routes(), n.our_routes()
    assert "10.0.0.1" not in lo_addrs(n)

    # The next daemon starts them again at once.
    n.start()
    for u in uids:
        wait_for(lambda: running(u), 10, "the container again")
    wait_for(lambda: {f"imp{u}" for u in uids} <= set(n.links()), 5, "their veths")
    assert sorted(r["dst"] for r in n.our_routes() if r["dst"] in ips) == sorted(ips)


def test_a_killed_node_adopts_the_network_untouched(make_net_node, host_distro, ssh_keys):
    n = make_net_node()
    uid = launch(n, host_distro, ssh_keys)
    ip = n.ip_of(uid)
    host = f"imp{uid}"
    index = n.ns.ip_json("link", "show", "dev", host)[0]["ifindex"]
    init = init_of(uid)
    server = n.serve(uid, 7000)
    c = socket_in_netns(n.ns.path)
    try:
        c.settimeout(3)
        c.connect((ip, 7000))
        c.sendall(b"one")
        assert c.recv(10) == b"one"

        n.proc.send_signal(signal.SIGKILL)
        n.proc.wait(10)
        n.start()
        wait_for(lambda: "adopted" in n.log(), 10, "the adoption")
        # The node follows states in order: once a mapping made now is in its
        # table, it has followed the API's state, and what a restart of the
        # container would do, it would have begun.
        r = n.api.post(f"/portmappings/{n.address}", auth=n.auth,
                       json={"container": uid, "proto": "tcp", "public_port": 9000,
                             "private_port": 7000})
        assert r.status_code == 201, r.text
        wait_for(lambda: "9000" in n.ns.run("nft", "list", "set", "inet", "imperium",
                                            "pm_tcp").stdout, 5, "the new state applied")
        assert init_of(uid) == init
        assert n.ns.ip_json("link", "show", "dev", host)[0]["ifindex"] == index
        assert [r["dev"] for r in route32(n, ip)] == [host]
        c.sendall(b"two")
        assert c.recv(10) == b"two"
    finally:
        c.close()
        server.kill()
        server.wait(10)


def lo_addrs(node):
    (lo,) = node.ns.ip_json("addr", "show", "dev", "lo")
    return [a["local"] for a in lo["addr_info"] if a["family"] == "inet"]


def start_refused(node, says):
    """The daemon exits at once (bounded wait) with a log that says `says`."""
    offset = len(node.log())
    with open(node.logpath, "a") as log:
        p = subprocess.Popen([*node.wrap, NODE, "run", "--config", node.conf],
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.terminate()
        p.wait(20)
        pytest.fail("the node started: " + node.log()[offset:][-3000:])
    assert p.returncode != 0
    assert says in node.log()[offset:], node.log()[offset:]


def test_a_network_routed_elsewhere_is_refused_and_left_alone(make_net_node):
    # The server routes 10.0.0.0/8 somewhere (a VPN, a LAN): the node must not
    # replace or hide that route with its unreachable one.
    n = make_net_node(start=False)
    n.ns.ip("route", "add", "10.0.0.0/8", "via", "203.0.113.1")
    before = n.ns.ip_json("route", "show", "10.0.0.0/8")
    start_refused(n, "10.0.0.0/8 is already routed (via 203.0.113.1 dev world0): choose "
                     "another container_network or remove that route")
    assert n.ns.ip_json("route", "show", "10.0.0.0/8") == before
    assert not n.our_routes()
    assert "10.0.0.1" not in lo_addrs(n)


def test_veth_prefix_or_nft_table_change_waits_for_the_containers(make_net_node, host_distro,
                                                                   ssh_keys):
    n = make_net_node()
    uid = launch(n, host_distro, ssh_keys)
    n.stop()
    with open(n.conf) as f:
        conf = f.read()
    for old, new, says in (
            ("veth_prefix = imp\n", "veth_prefix = imq\n", "veth_prefix was 'imp'"),
            ("", "nft_table = imperium_b\n", "nft_table was 'imperium'")):
        with open(n.conf, "w") as f:
            f.write(conf.replace(old, new) if old else conf + new)
        start_refused(n, f"{says} when container {uid} (of 1 running) started")
        assert running(uid)
        assert f"imp{uid}" in n.links()
        assert n.ns.run("nft", "list", "table", "inet", "imperium_b").returncode != 0
    # Back to the old settings: it starts and adopts the container.
    with open(n.conf, "w") as f:
        f.write(conf)
    n.start()
    wait_for(lambda: "adopted" in n.log(), 10, "the adoption")
    # With nothing running any more, a change is fine.
    n.stop()
    assert n.run("stop-all", "--config", n.conf).returncode == 0
    with open(n.conf, "w") as f:
        f.write(conf.replace("veth_prefix = imp\n", "veth_prefix = imq\n"))
    n.veth_prefix = "imq"
    n.start()
    wait_for(lambda: running(uid), 10, "the container again")
    wait_for(lambda: f"imq{uid}" in n.links(), 5, "its veth with the new prefix")


def test_leftover_interfaces_are_removed_at_node_start(make_net_node, host_distro, ssh_keys):
    n = make_net_node(start=False)
    # A crash's leftover (our prefix, no such container) and an interface of
    # another prefix (another node's, or the supplier's): only the first goes.
    n.ns.ip("link", "add", "imp99999", "type", "veth", "peer", "name", "x99999")
    n.ns.ip("link", "add", "other9", "type", "veth", "peer", "name", "x9")
    n.ns.ip("link", "set", "imp99999", "up")
    n.ns.ip("route", "add", "10.9.9.9/32", "dev", "imp99999", "proto", "73")
    n.start()
    names = [l["ifname"] for l in n.ns.ip_json("link")]
    assert "imp99999" not in names and "x99999" not in names, names
    assert "other9" in names
    assert not route32(n, "10.9.9.9")
    assert "1 leftover imp* interfaces removed" in n.log()
    uid = launch(n, host_distro, ssh_keys)
    assert f"imp{uid}" in n.links()


def test_an_ip_outside_the_container_network_is_refused(make_net_node, host_distro, ssh_keys):
    # 10.0.0.0/8 in the API; this node's network is 10.200.0.0/16.
    n = make_net_node(conf="container_network = 10.200.0.0/16\ngateway = 10.200.0.1\n")
    uid = n.new_container()
    n.post(uid, {"distro": host_distro["id"]})
    n.post(uid, {"ssh_keys": [ssh_keys[0]]})
    st = n.wait_status(uid, timeout=10, state="failed")
    assert "10.200.0.0/16" in st["last_error"] and n.ip_of(uid) in st["last_error"], st
    assert not n.links()
    assert init_of(uid) is None


def test_a_start_failing_inside_leaves_no_interface(make_net_node, host_distro, ssh_keys):
    # The veth is made before "go"; the child then fails (no Emperor to exec).
    n = make_net_node(conf="uwsgi = /nonexistent/uwsgi\n")
    uid = n.new_container()
    n.post(uid, {"distro": host_distro["id"]})
    n.post(uid, {"ssh_keys": [ssh_keys[0]]})
    st = n.wait_status(uid, timeout=10, state="failed")
    assert "/nonexistent/uwsgi" in st["last_error"], st
    assert f"imp{uid}" not in n.links()
    assert not route32(n, n.ip_of(uid))


def test_network_off_gives_only_lo(make_node, host_distro, ssh_keys):
    n = make_node()  # in the host's namespace, so `network = off` (nodeutil.Node)
    uid = launch(n, host_distro, ssh_keys)
    p = subprocess.run(["nsenter", f"--net=/proc/{init_of(uid)}/ns/net", "ip", "-j", "link"],
                       capture_output=True, text=True, timeout=30)
    assert [l["ifname"] for l in json.loads(p.stdout)] == ["lo"]
    assert not os.path.exists(f"/sys/class/net/imp{uid}")
