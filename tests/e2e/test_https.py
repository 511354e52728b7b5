"""HTTPS as the customer does it (the seed's "HTTPS/SNI" and
"Client-certificates" sections, docs/ROUTER.md): the real API and node with
router_http and router_https on free local ports, keys and certificates
made in the home with the seed's openssl commands (-subj instead of the
prompts), vassals in vassals/ using ssl-domain and ssl-ca-domain, and the
requests made by curl and openssl s_client.  Everything goes through the
node's subscription gate, which checks and copies the files (subcerts.c).
Root only."""

import glob
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import unique
from helpers import wait_for
from nodeutil import NEEDS_CONTAINERS, add_domain, free_port, launch, router_node

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]

APP = '''import os
def application(env, start_response):
    with open(os.environ["SEEN"], "a") as f:
        f.write("%s %s %s\\n" % (TAG, env.get("HTTP_HOST", ""), env.get("PATH_INFO", "")))
    body = ("%s HTTPS=%s DN=%s" % (TAG, env.get("HTTPS"), env.get("HTTPS_DN"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


class Customer:
    """A container of a customer on the node, and what it has in its home."""

    def __init__(self, node, uid, auth):
        self.node, self.uid, self.auth = node, uid, auth
        self.home = node.home(uid)

    def sh(self, cmd):
        """A shell command in the home, as the customer (the seed's openssl
        commands): what it makes is the customer's."""
        subprocess.run(cmd, shell=True, cwd=self.home, check=True, capture_output=True,
                       executable="/bin/bash", user=self.uid, group=self.uid,
                       extra_groups=[])

    def path(self, rel):
        return os.path.join(self.home, rel)

    def self_signed(self, base, cn, san=None):
        """The seed's self-signed certificate: certs/<base>.key, .crt."""
        self.sh("mkdir -p certs")
        ext = f" -extfile <(printf 'subjectAltName=DNS:{san}')" if san else ""
        self.sh(f"openssl genrsa -out certs/{base}.key 2048 && "
                f"openssl req -new -key certs/{base}.key -out certs/{base}.csr -subj '/CN={cn}' && "
                f"openssl x509 -req -days 365 -in certs/{base}.csr -signkey certs/{base}.key "
                f"-out certs/{base}.crt{ext}")
        return self.path(f"certs/{base}.crt")

    def ca(self, base):
        """The seed's CA: an encrypted key (-des3) and its certificate."""
        self.sh("mkdir -p certs")
        self.sh(f"openssl genrsa -des3 -passout pass:secret -out certs/{base}.key 2048 && "
                f"openssl req -new -x509 -days 365 -key certs/{base}.key -passin pass:secret "
                f"-out certs/{base}.crt -subj '/CN={base}'")

    def client(self, base, ca, cn):
        """A client's csr signed with the seed's command: (key, crt) paths."""
        self.sh(f"openssl genrsa -out certs/{base}.key 2048 && "
                f"openssl req -new -key certs/{base}.key -out certs/{base}.csr -subj '/CN={cn}' && "
                f"openssl x509 -req -days 365 -in certs/{base}.csr -CA certs/{ca}.crt "
                f"-CAkey certs/{ca}.key -passin pass:secret -set_serial 01 -out certs/{base}.crt")
        return self.path(f"certs/{base}.key"), self.path(f"certs/{base}.crt")

    def vassal(self, name, lines, tag=None):
        """vassals/<name>.ini: the python app (answering its tag, HTTPS and
        HTTPS_DN) with `lines`."""
        self.node.vassal(self.uid, f"{name}.ini",
                         f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/{name}.py\n"
                         f"env = SEEN=$(HOME)/seen.log\n{lines}",
                         files=[(f"{name}.py", f"TAG = {(tag or name)!r}\n" + APP)])

    def seen(self):
        try:
            with open(self.path("seen.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def router_log(self):
        try:
            with open(self.path("logs/router.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""


class Https:
    def __init__(self, node, https_port):
        self.node, self.port = node, https_port

    def curl(self, name, path="/", host=None, cacert=None, cert=None, insecure=False,
             http=False, head=False):
        """(status, body or headers), or (0, curl's error) when no answer came."""
        port = self.node.port if http else self.port
        url = f"{'http' if http else 'https'}://{name}:{port}{path}"
        cmd = ["curl", "-sS", "--max-time", "5", "--resolve", f"{name}:{port}:127.0.0.1",
               "-w", "\n%{http_code}", url]
        cmd += ["-H", f"Host: {host}"] if host else []
        cmd += ["--cacert", cacert] if cacert else []
        cmd += ["-k"] if insecure else []
        cmd += ["--cert", cert[1], "--key", cert[0]] if cert else []
        cmd += ["-D", "-", "-o", "/dev/null"] if head else []
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            return 0, p.stderr
        body, _, code = p.stdout.rpartition("\n")
        return int(code), body

    def served_subject(self, name):
        """The subject of the certificate the router serves for SNI `name`."""
        p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}",
                            "-servername", name], input="", capture_output=True, text=True,
                           timeout=10)
        for line in p.stdout.splitlines():
            if line.startswith("subject="):
                return line
        return ""

    def processes_know(self, key):
        """Every HTTP process of the router has `key` with its TLS context
        (each answers a stats socket of its own: router-stats.sock[.N])."""
        socks = glob.glob(os.path.join(self.node.state, "router", "run", "router-stats.sock*"))
        for path in socks:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            except OSError:
                return False
            finally:
                s.close()
            if not any(x["key"] == key and x.get("sni_enabled")
                       for x in json.loads(data).get("subscriptions", [])):
                return False
        return bool(socks)

    def wait_served(self, key):
        wait_for(lambda: self.processes_know(key), 40, f"{key} in every router process")

    def wait_answer(self, name, code, want, timeout=40, **kw):
        """Until `name` answers `code` with `want` in the body (or headers):
        the router's HTTP processes each learn a subscription (docs/ROUTER.md);
        returns the answer."""
        got = [None]

        def ok():
            got[0] = self.curl(name, **kw)
            return got[0][0] == code and want in got[0][1]
        wait_for(ok, timeout, f"{code} {want!r} from {name} ({got})", interval=0.3)
        return got[0]

    def wait_200(self, name, want, key=None, **kw):
        """The first answer, then every process of the router serving it."""
        got = self.wait_answer(name, 200, want, **kw)
        self.wait_served(key or name)
        return got


@pytest.fixture(scope="module")
def site(api, host_distro, ssh_keys):
    https = free_port()
    with router_node(api, "https-", conf=f"router_https = 127.0.0.1:{https}\n",
                     show_logs=True) as n:
        a = Customer(n, launch(n, host_distro, ssh_keys), n.auth)
        other, _ = api.new_customer()
        b = Customer(n, launch(n, host_distro, ssh_keys, auth=other, i=1), other)
        yield Https(n, https), a, b
        n.check_log()


def test_ssl_domain_serves_https_and_plain_http(site):
    h, a, _ = site
    dom = unique("ssl") + ".org"
    add_domain(a.node.api, a.auth, dom)
    crt = a.self_signed("foobar", dom)
    a.vassal("ssl", f"ssl-domain = {dom} $(HOME)/certs/foobar.key $(HOME)/certs/foobar.crt\n")
    h.wait_200(dom, "ssl HTTPS=on DN=None", cacert=crt)
    h.wait_answer(dom, 200, "ssl HTTPS=None DN=None", timeout=5, http=True)
    # The router reads the gate's root-owned copy, not the home's file.
    copy = os.path.join(a.node.state, "router", "homes", str(a.uid), "certs", "foobar.crt")
    st = os.stat(copy)
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o640)
    assert open(copy).read() == open(crt).read()


def test_the_seeds_redirect_vassal_forces_https(site):
    h, a, _ = site
    dom = unique("redir") + ".org"
    add_domain(a.node.api, a.auth, dom)
    crt = a.self_signed("redir", dom)
    a.vassal("redir", f"ssl-domain = {dom} $(HOME)/certs/redir.key $(HOME)/certs/redir.crt\n"
             "plugin = router_redirect\n"
             "route-if-not = equal:${HTTPS};on "
             "redirect-permanent:https://${HTTP_HOST}${REQUEST_URI}\n")
    h.wait_200(dom, "redir HTTPS=on", cacert=crt)
    h.wait_answer(dom, 301, f"Location: https://{dom}:{h.node.port}/x?y=1", timeout=5,
                  path="/x?y=1", http=True, head=True)


def test_client_certificates(site):
    h, a, _ = site
    must, may = unique("must") + ".org", unique("may") + ".org"
    for d in (must, may):
        add_domain(a.node.api, a.auth, d)
    a.ca("ca")
    alice = a.client("alice", "ca", "alice")
    must_crt = a.self_signed("must", must)
    may_crt = a.self_signed("may", may)
    a.vassal("must", f"ssl-ca-domain = {must} $(HOME)/certs/must.key $(HOME)/certs/must.crt "
             "!$(HOME)/certs/ca.crt\n")
    a.vassal("may", f"ssl-ca-domain = {may} $(HOME)/certs/may.key $(HOME)/certs/may.crt "
             "$(HOME)/certs/ca.crt\n")
    h.wait_200(must, "must HTTPS=on DN=", cacert=must_crt, cert=alice)
    code, body = h.curl(must, cacert=must_crt, cert=alice)
    assert code == 200 and "CN=alice" in body.replace(" ", ""), body
    # "!": no client certificate, no handshake.
    code, err = h.curl(must, cacert=must_crt)
    assert code == 0, err
    # Without "!": both get in, the DN only for the one with a certificate.
    h.wait_200(may, "may HTTPS=on DN=None", cacert=may_crt)
    code, body = h.curl(may, cacert=may_crt, cert=alice)
    assert code == 200 and "alice" in body, body


def test_wildcard_ssl_domain(site):
    h, a, _ = site
    base = unique("wild") + ".org"
    add_domain(a.node.api, a.auth, "." + base)
    crt = a.self_signed("wild", base, san="*." + base)
    a.vassal("wild", f"ssl-domain = .{base} $(HOME)/certs/wild.key $(HOME)/certs/wild.crt\n")
    h.wait_200("a." + base, "wild HTTPS=on DN=None", key="." + base, cacert=crt)
    assert h.curl("b." + base, cacert=crt) == (200, "wild HTTPS=on DN=None")


def test_another_customers_client_certificate_cannot_reach_a_protected_name(site):
    """The issue's attack through real customers: B serves its own name
    with its own CA; B's client certificate opens TLS for B's name and asks
    for A's protected name in Host.  421, and A's app never sees it."""
    h, a, b = site
    prot, mine = unique("prot") + ".org", unique("mine") + ".org"
    add_domain(a.node.api, a.auth, prot)
    add_domain(b.node.api, b.auth, mine)
    a.ca("aca")
    prot_crt = a.self_signed("prot", prot)
    a.vassal("prot", f"ssl-ca-domain = {prot} $(HOME)/certs/prot.key $(HOME)/certs/prot.crt "
             "!$(HOME)/certs/aca.crt\n")
    b.ca("bca")
    mallory = b.client("mallory", "bca", "mallory")
    mine_crt = b.self_signed("mine", mine)
    b.vassal("mine", f"ssl-ca-domain = {mine} $(HOME)/certs/mine.key $(HOME)/certs/mine.crt "
             "!$(HOME)/certs/bca.crt\n")
    h.wait_200(mine, "mine HTTPS=on", cacert=mine_crt, cert=mallory)
    h.wait_served(prot)
    assert prot in h.served_subject(prot)
    code, body = h.curl(mine, path="/attack", host=prot, cacert=mine_crt, cert=mallory)
    assert code == 421, body
    code, err = h.curl(prot, path="/attack-2", cacert=prot_crt, cert=mallory)
    assert code == 0, err  # B's CA is not A's: no handshake
    time.sleep(0.5)
    assert "attack" not in a.seen(), a.seen()


def test_a_mismatched_pair_and_a_symlink_out_of_the_home_are_refused(site):
    h, a, _ = site
    bad, link = unique("bad") + ".org", unique("link") + ".org"
    add_domain(a.node.api, a.auth, bad)
    add_domain(a.node.api, a.auth, link)
    a.self_signed("bad1", bad)
    a.self_signed("bad2", bad)
    a.vassal("bad", f"ssl-domain = {bad} $(HOME)/certs/bad2.key $(HOME)/certs/bad1.crt\n")
    # A certificate outside the home, valid for the name, reached by a link.
    outside = os.path.join(a.node.base, unique("outside"))
    os.makedirs(outside)
    os.chmod(outside, 0o755)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "9",
                    "-subj", f"/CN={link}", "-keyout", outside + "/o.key", "-out",
                    outside + "/o.crt"], check=True, capture_output=True)
    os.chmod(outside + "/o.key", 0o644)
    a.sh(f"cp {outside}/o.key certs/ && ln -s {outside}/o.crt certs/o.crt")
    a.vassal("link", f"ssl-domain = {link} $(HOME)/certs/o.key $(HOME)/certs/o.crt\n")
    wait_for(lambda: f"subscription of {bad} refused: the key does not match the certificate "
             f"(key /containers/{a.uid}/certs/bad2.key, certificate "
             f"/containers/{a.uid}/certs/bad1.crt)" in a.router_log(), 40,
             "the mismatch in logs/router.log")
    wait_for(lambda: f"subscription of {link} refused: the certificate "
             f"/containers/{a.uid}/certs/o.crt is (or passes through) a symbolic link"
             in a.router_log(), 40, "the symlink in logs/router.log")
    # Neither name is served (not over HTTPS, not even its plain record).
    for d in (bad, link):
        assert d not in h.served_subject(d)
        assert h.curl(d, insecure=True)[0] == 404
        assert h.curl(d, http=True)[0] == 404
    assert not os.path.exists(os.path.join(a.node.state, "router", "homes", str(a.uid),
                                           "certs", "o.crt"))


def test_a_renewed_certificate_is_served_within_seconds(site):
    h, a, _ = site
    dom = unique("renew") + ".org"
    add_domain(a.node.api, a.auth, dom)
    old = os.path.join(a.node.base, unique("old") + ".crt")
    shutil.copy(a.self_signed("renew", dom), old)
    a.vassal("renew", f"ssl-domain = {dom} $(HOME)/certs/renew.key $(HOME)/certs/renew.crt\n")
    h.wait_200(dom, "renew HTTPS=on", cacert=old)
    # The customer renews: new files made beside, then moved over the old.
    a.self_signed("renew2", dom, san=dom)
    a.sh("mv certs/renew2.key certs/renew.key && mv certs/renew2.crt certs/renew.crt")
    # Within seconds every connection gets the new certificate (each of the
    # router's processes renews its context at the next announcement it
    # receives), and none the old one.
    new = a.path("certs/renew.crt")
    wait_for(lambda: all(h.curl(dom, cacert=new)[0] == 200 for _ in range(6)) and
             all(h.curl(dom, cacert=old)[0] == 0 for _ in range(6)), 15,
             "the renewed certificate on every connection")
