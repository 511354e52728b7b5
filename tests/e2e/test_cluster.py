"""cluster-domain across a Legion (issue 19, item 3; docs/CLUSTER.md
"cluster-domain", docs/ROUTER.md "Clusters"): three nodes, each in a network
namespace of its own plugged into the `world` namespace (203.0.113.0/24),
each with the HTTP router on 0.0.0.0:80, its fastrouter on the cluster port
and `uplink = world0`, form a legion through real uWSGI legion members.  A
customer's `cluster-domain` vassal on each node is served by its own node
and, through the floating address, by the Lord together with the vassals of
the other members (each app answers its node's name); another customer's
vassal claiming the name gets no request, and its packets are refused by
its own node's gate (its logs/router.log); a subscription naming a TCP address other than the
node's own endpoint is refused (the container's logs/router.log); when the
whole Lord dies, its vassals are out of the new Lord's pool within 5 s.
ssl-cluster-domain (docs/CLUSTER.md "ssl-cluster-domain"): vassals on the two
members that are not the Lord are served over HTTPS through the floating
address with the customer's certificate, which reached the Lord only inside
sealed envelopes: a capture of the world namespace sees them, never the key.

Network safety: everything runs in namespaces this test made; the world
namespace's requests go to 203.0.113.x only."""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from nodeutil import (FLOATING, NEEDS_CONTAINERS, PY_APP, add_domain, in_netns, kill_node,
                      launch, legion_cluster, make_legion, unique, wait_for, wait_lord)

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]

OUT_OF_POOL_S = 5.0


def cluster_vassal(node, uid, name, domain, tag):
    node.vassal(uid, f"{name}.ini",
                f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/{name}.py\n"
                f"cluster-domain = {domain}\n",
                files=[(f"{name}.py", f"NAME = {tag!r}\n" + PY_APP)])


def floating_answers(node, domain, n):
    """n requests from the world to the floating address: (status, text, seconds)."""
    out = []
    for _ in range(n):
        try:
            r = node.get(domain, timeout=3, address=FLOATING)
            out.append((r.status_code, r.text, r.elapsed.total_seconds()))
        except Exception as e:  # a refused or timed-out connection counts as a failure
            out.append((0, str(e), 3.0))
    return out


def tcp_connects(ns, host, port):
    """A TCP connection from namespace ns (a Netns) to host:port within 1 s."""
    code = (f"import socket; socket.create_connection(({host!r}, {port}), 1).close()")
    return ns.run("python3", "-c", code).returncode == 0


def router_log_of(node, uid):
    try:
        return open(os.path.join(node.home(uid), "logs", "router.log"), errors="replace").read()
    except FileNotFoundError:
        return ""


def test_cluster_domain_is_balanced_over_every_member(api, world, make_router_net_node,
                                                      host_distro, ssh_keys):
    # Tolerance 2 (not the default 1): this test is about routing, and a
    # busy test machine (sanitized binaries) must not make members flap.
    nodes, _, domain, uids, _ = legion_cluster(
        api, make_router_net_node, host_distro, ssh_keys, prefix="cl",
        conf="legion_tolerance = 2\n",
        deploy=lambda node, uid, domain, i: cluster_vassal(node, uid, "app", domain, f"node{i}"))
    # Each node still serves it on its own address, its own vassal among the
    # others (every member's router has every member's endpoint, so that a
    # new Lord routes at once).
    for i, node in enumerate(nodes):
        node.wait_answer(domain, f"node{i}")
    lord = wait_lord(nodes)

    # Through the floating address: the vassals of all three nodes answer.
    seen = set()

    def all_three():
        for s, t, _ in floating_answers(lord, domain, 6):
            if s == 200:
                seen.add(t)
        return len(seen) == 3
    wait_for(all_three, 20, "answers of all three nodes on the floating address", interval=0.2)
    assert seen == {f"Hello i am python node{i}" for i in range(3)}

    # The fastrouter (cluster port) takes uwsgi requests, whose variables a
    # vassal believes: only the members reach it, never the world.
    assert tcp_connects(nodes[1].ns, nodes[0].address, 3032)
    assert not tcp_connects(world, nodes[0].address, 3032)

    # A TCP address other than the node's own endpoint is refused, and said.
    other_ep = f"{nodes[1].address}:3032"
    nodes[0].vassal(uids[0], "bad.ini",
                    "[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/app.py\n"
                    f"socket = $(HOME)/run/bad.socket\n"
                    f"subscribe2 = server=/run/subscribe/cluster,key={domain},addr={other_ep},"
                    "sign=SHA1:$(HOME)/etc/uwsgi.key\n")
    wait_for(lambda: f"address {other_ep}: a cluster subscription may only name this node's "
             f"cluster endpoint {nodes[0].address}:3032" in router_log_of(nodes[0], uids[0]),
             15, "the refusal in logs/router.log")

    # Another customer's vassal claiming the name on a member that is not
    # the Lord: no request reaches it, there or through the Lord.
    member = next(n for n in nodes if n is not lord)
    intruder, _ = api.new_customer()
    iuid = launch(member, host_distro, ssh_keys, auth=intruder)
    cluster_vassal(member, iuid, "evil", domain, "intruder")
    wait_for(lambda: os.path.exists(os.path.join(member.sockets(iuid),
                                                 f"{domain}_evil.ini.socket")),
             20, "the intruder's socket")
    time.sleep(5)  # two announcement rounds
    texts = [t for s, t, _ in floating_answers(lord, domain, 30)]
    texts += [t for s, t in member.answers(domain, n=15)]
    assert not [t for t in texts if "intruder" in t]
    # Refused by its own node's gate, which checks the signature against the
    # domain's owner's key before it counts a holder or seals anything for
    # the members (and says so in the intruder's logs/router.log).
    wait_for(lambda: f"subscription of {domain} refused: the packet for {domain} is not signed "
             "by its owner" in router_log_of(member, iuid), 10,
             "the intruder's refusal in its logs/router.log")

    # The whole Lord dies: its vassals are out of the new Lord's pool within
    # OUT_OF_POOL_S (no answer from it, no request waiting on it).
    dead = f"node{nodes.index(lord)}"
    survivors = [n for n in nodes if n is not lord]
    t0 = time.monotonic()
    kill_node(lord)
    new_lord = wait_lord(survivors, timeout=10)  # the failover itself: test_legion.py
    time.sleep(max(0.0, t0 + OUT_OF_POOL_S - time.monotonic()))
    got = floating_answers(new_lord, domain, 20)
    assert all(s == 200 for s, _, _ in got), got
    assert not [t for _, t, _ in got if dead in t]
    slow = [e for _, _, e in got if e >= 0.9]
    assert not slow, f"requests waited on the dead member: {got}"
    assert {t for _, t, _ in got} == {f"Hello i am python node{nodes.index(n)}"
                                      for n in survivors}


# ---- ssl-cluster-domain ---------------------------------------------------------------

class Sniffer:
    """Every frame crossing the world namespace's bridge ports (a Python
    AF_PACKET socket made in that namespace: tcpdump is not installed),
    from start to stop(), at most 64 MB."""

    def __init__(self, world):
        self.frames, self.size = [], 0
        self.done = threading.Event()
        self.sock = in_netns(world.path, self._open)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    @staticmethod
    def _open():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.settimeout(0.2)
        return s

    def _run(self):
        while not self.done.is_set() and self.size < 64 << 20:
            try:
                f = self.sock.recv(65535)
            except socket.timeout:
                continue
            self.frames.append(f)
            self.size += len(f)

    def stop(self):
        self.done.set()
        self.t.join(5)
        self.sock.close()

    def envelopes(self, port=3033):
        """(type, UDP length) of each gate envelope seen (first fragments)."""
        out = []
        for f in self.frames:
            if len(f) < 42 or f[12:14] != b"\x08\x00" or f[23] != 17:
                continue
            ip = f[14:]
            if int.from_bytes(ip[6:8], "big") & 0x1fff:  # a later fragment
                continue
            udp = ip[(ip[0] & 15) * 4:]
            if int.from_bytes(udp[2:4], "big") == port and udp[8:13] == b"IMPL1":
                out.append((udp[13], int.from_bytes(udp[4:6], "big")))
        return out


def site_certificate(tmp, domain):
    """A self-signed key and certificate for domain (the customer's): paths
    and the key's DER."""
    key, crt = os.path.join(tmp, "site.key"), os.path.join(tmp, "site.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "9", "-subj", f"/CN={domain}", "-addext",
                    f"subjectAltName=DNS:{domain}"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", key, "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return key, crt, der


def der_of(crt):
    return subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"], check=True,
                          capture_output=True).stdout


def ssl_cluster_vassal(node, uid, domain, tag, key, crt):
    """The customer's own key and certificate in the home (certs/, theirs),
    and a vassal with ssl-cluster-domain naming them."""
    certs = os.path.join(node.home(uid), "certs")
    os.makedirs(certs, exist_ok=True)
    os.chown(certs, uid, uid)
    for src in (key, crt):
        dst = os.path.join(certs, os.path.basename(src))
        shutil.copyfile(src, dst)
        os.chown(dst, uid, uid)
        os.chmod(dst, 0o600)
    node.vassal(uid, "app.ini",
                "[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/app.py\n"
                f"ssl-cluster-domain = {domain} $(HOME)/certs/site.key $(HOME)/certs/site.crt\n",
                files=[("app.py", f"NAME = {tag!r}\n" + PY_APP)])


def https_floating(world, domain, cacert):
    """curl from the world: HTTPS to the floating address for domain,
    verified against cacert; (ok, body or error)."""
    p = world.run("curl", "-sS", "--max-time", "3", "--cacert", cacert, "--resolve",
                  f"{domain}:443:{FLOATING}", f"https://{domain}/")
    return p.returncode == 0, (p.stdout if p.returncode == 0 else p.stderr)


def test_ssl_cluster_domain_reaches_the_lord_sealed(api, world, make_router_net_node,
                                                     host_distro, ssh_keys, tmp_path):
    """The customer's vassals on the two members that are not the Lord say
    ssl-cluster-domain: the Lord, with no file of its own, serves the name
    over HTTPS through the floating address with the customer's certificate
    (it came from the members, sealed), answered by both; the key is never
    in the packets between the nodes, which did carry the certificate
    envelopes."""
    nodes = [make_router_net_node(conf="legion_tolerance = 2\nrouter_https = 0.0.0.0:443\n")
             for _ in range(3)]
    make_legion(api, nodes, address=FLOATING, quorum=2)
    auth, _ = api.new_customer()
    domain = f"{unique('scl')}.example.org"
    add_domain(api, auth, domain)
    key, crt, der = site_certificate(str(tmp_path), domain)
    lord = wait_lord(nodes)
    members = [n for n in nodes if n is not lord]
    sniffer = Sniffer(world)
    uids = []
    try:
        for i, node in enumerate(members):
            uids.append(launch(node, host_distro, ssh_keys, auth=auth))
            ssl_cluster_vassal(node, uids[-1], domain, f"member{i}", key, crt)
        seen = set()

        def both_over_https():
            for _ in range(6):
                ok, body = https_floating(world, domain, crt)
                if ok:
                    seen.add(body)
            return len(seen) == 2
        wait_for(both_over_https, 40, "HTTPS answers of both members on the floating address",
                 interval=0.3)
        assert seen == {"Hello i am python member0", "Hello i am python member1"}
        time.sleep(2.5)  # one more announcement round under the capture
    finally:
        sniffer.stop()
    # The Lord has no container of the customer: it serves the members' sets,
    # root-owned copies at the path their packets name.
    for uid in uids:
        copy = os.path.join(lord.state, "router", "homes", str(uid), "certs", "site.crt")
        assert os.stat(copy).st_uid == 0
        assert der_of(copy) == der_of(crt)
    kinds = sniffer.envelopes()
    certs = [n for t, n in kinds if t == 3]  # CLUSTER_CERT (clustercrypt.h)
    assert certs and max(certs) > len(der), f"no certificate envelope captured: {kinds[:20]}"
    assert [t for t, _ in kinds if t == 1], "no subscription envelope captured"
    blob = b"".join(sniffer.frames)
    assert domain.encode() in blob  # the capture holds payloads (the clients' SNI, in clear)
    assert b"PRIVATE KEY" not in blob
    leaks = [i for i in range(0, len(der) - 32) if der[i:i + 32] in blob]
    assert not leaks, f"{len(leaks)} 32-byte runs of the key's DER in the packets"
    pem_lines = [line for line in open(key).read().splitlines() if "-----" not in line]
    assert not [line for line in pem_lines if line.encode() in blob]
