"""The node's router over HTTPS (docs/ROUTER.md), end to end: the real node
with router_http and router_https on free local ports, one container
running an app on a plain socket in its run/, and the router driven
directly: the test signs subscription packets with the customer's key (as a
vassal's ssl-domain does) and sends them to the router's own subscription
server, naming sni_* files it puts under <state_dir>/router/homes/<uid>/
itself (where the gate puts its checked copies), so nothing here depends on
the gate.  Real curl and openssl on the client side.  Root only."""

import http.client
import json
import os
import pwd
import re
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from conftest import unique
from helpers import wait_for
from nodeutil import NEEDS_CONTAINERS, add_domain, free_port, launch, router_node

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]

ROUTER_USER = "imperium-router"

APP = '''import os
def application(env, start_response):
    with open(os.environ["SEEN"], "a") as f:
        f.write("%s %s\\n" % (env.get("HTTP_HOST", ""), env.get("PATH_INFO", "")))
    body = ("app HTTPS=%s DN=%s" % (env.get("HTTPS"), env.get("HTTPS_DN"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def openssl(*args, **kw):
    return subprocess.run(["openssl", *args], check=True, capture_output=True, **kw)


class Certs:
    """Keys and certificates made with the openssl command, in a directory."""

    def __init__(self, d):
        self.d = d
        os.makedirs(d, exist_ok=True)

    def p(self, name):
        return os.path.join(self.d, name)

    def server(self, name, dns, cn=None):
        """name.key + name.crt: self-signed, for the DNS names dns."""
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.p(name + ".key"), "-out", self.p(name + ".crt"), "-days", "30",
                "-subj", f"/CN={cn or dns[0]}",
                "-addext", "subjectAltName=" + ",".join(f"DNS:{d}" for d in dns))
        return self.p(name + ".key"), self.p(name + ".crt")

    def ca(self, name):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.p(name + ".key"), "-out", self.p(name + ".crt"), "-days", "30",
                "-subj", f"/CN={name}")
        return self.p(name + ".key"), self.p(name + ".crt")

    def client(self, name, ca, cn):
        """A client certificate for cn signed by the CA `ca` (made by ca())."""
        key, csr, crt = self.p(name + ".key"), self.p(name + ".csr"), self.p(name + ".crt")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        openssl("x509", "-req", "-in", csr, "-CA", self.p(ca + ".crt"), "-CAkey",
                self.p(ca + ".key"), "-set_serial", "1", "-days", "30", "-out", crt)
        return key, crt


def kv(k, v):
    k = k.encode()
    v = v if isinstance(v, bytes) else str(v).encode()
    return struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v


class Tls:
    """The node, its container, the app, and what the test subscribed."""

    def __init__(self, node, uid, https_port):
        self.node, self.uid, self.port = node, uid, https_port
        self.rdir = os.path.join(node.state, "router")
        self.gid = pwd.getpwnam(ROUTER_USER).pw_gid
        self.sign_key = os.path.join(node.home(uid), "etc", "uwsgi.key")
        self.addr = f"/containers/{uid}/run/app.socket"
        self.certs = Certs(os.path.join(node.base, "certs"))
        self.subs = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.announce, daemon=True)
        self.thread.start()

    # -- files the router reads -------------------------------------------------------

    def router_file(self, src, rel):
        """src copied (root:router 0640, like the gate's copies) to
        homes/<uid>/tlstest/rel: the router's /containers/<uid>/tlstest/rel."""
        d = os.path.join(self.rdir, "homes", str(self.uid), "tlstest")
        os.makedirs(d, exist_ok=True)
        os.chown(d, 0, self.gid)
        os.chmod(d, 0o710)
        tmp = os.path.join(d, "." + rel + ".tmp")
        with open(src, "rb") as f, open(tmp, "wb") as g:
            g.write(f.read())
        os.chown(tmp, 0, self.gid)
        os.chmod(tmp, 0o640)
        os.rename(tmp, os.path.join(d, rel))
        return f"/containers/{self.uid}/tlstest/{rel}"

    # -- subscriptions -----------------------------------------------------------------

    def packet(self, key, cmd=0, **sni):
        body = kv("key", key) + kv("address", self.addr) + kv("modifier1", 0) + \
            kv("modifier2", 0) + kv("cores", 1) + kv("load", 0) + kv("weight", 1)
        for k in ("sni_key", "sni_crt", "sni_ca"):
            if k in sni:
                body += kv(k, sni[k])
        body += kv("unix", int(time.time()) + cmd)
        sig = subprocess.run(["openssl", "dgst", "-sha1", "-sign", self.sign_key], input=body,
                             capture_output=True, check=True).stdout
        body += kv("sign", sig)
        return struct.pack("<BHB", 224, len(body), cmd) + body

    def send(self, pkt):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.sendto(pkt, os.path.join(self.rdir, "run", "subscription.sock"))
        except OSError:
            pass  # the router is (re)starting: the next round
        finally:
            s.close()

    def subscribe(self, key, **sni):
        """Announced every second from now on, like subscribe-freq = 1."""
        add_domain(self.node.api, self.node.auth, key)
        pem = os.path.join(self.rdir, "keys", key + ".pem")
        wait_for(lambda: os.path.exists(pem), 15, f"the node's key file for {key}")
        self.subs[key] = sni
        self.send(self.packet(key, **sni))
        wait_for(lambda: key in self.node.subscriptions(), 10, f"{key} subscribed")
        if sni:
            wait_for(lambda: self.sni_enabled(key), 10, f"{key}'s TLS context")

    def per_process(self):
        """The subscriptions of every http process of the router (each
        answers a stats socket of its own: router-stats.sock, .1, ...)."""
        run = os.path.join(self.rdir, "run")
        socks = [f for f in os.listdir(run) if re.fullmatch(r"router-stats\.sock(\.\d+)?", f)]
        out = []
        for name in socks:
            s = socket.socket(socket.AF_UNIX)
            s.connect(os.path.join(run, name))
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            s.close()
            out.append(json.loads(data).get("subscriptions", []))
        return out

    def sni_enabled(self, key):
        """key has its TLS context in every http process of the router."""
        procs = self.per_process()
        return bool(procs) and all(any(x["key"] == key and x.get("sni_enabled") for x in subs)
                                   for subs in procs)

    def unsubscribe(self, key):
        """No more announcements, then the vassal's goodbye (cmd 1), as a
        vassal that stops sends; returns once no process routes key."""
        sni = self.subs.pop(key)
        time.sleep(1.5)  # an announcement round already under way ends
        self.send(self.packet(key, cmd=1, **sni))
        wait_for(lambda: all(all(x["key"] != key for x in subs) for subs in self.per_process()),
                 10, f"{key} unsubscribed")

    def announce(self):
        while not self.stop.wait(1.0):
            for key, sni in list(self.subs.items()):
                self.send(self.packet(key, **sni))

    # -- clients -------------------------------------------------------------------------

    def curl(self, name, path="/", host=None, cacert=None, cert=None, insecure=False,
             http=False):
        """(status, body), or (0, curl's error) when no answer came."""
        port = self.node.port if http else self.port
        url = f"{'http' if http else 'https'}://{name}:{port}{path}"
        cmd = ["curl", "-sS", "--max-time", "5", "--resolve", f"{name}:{port}:127.0.0.1",
               "-w", "\n%{http_code}", url]
        if host:
            cmd += ["-H", f"Host: {host}"]
        if cacert:
            cmd += ["--cacert", cacert]
        if insecure:
            cmd += ["-k"]
        if cert:
            cmd += ["--cert", cert[1], "--key", cert[0]]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            return 0, p.stderr
        body, _, code = p.stdout.rpartition("\n")
        return int(code), body

    def s_client(self, servername=None, *args):
        cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}", *args]
        if servername:
            cmd += ["-servername", servername]
        return subprocess.run(cmd, input="", capture_output=True, text=True, timeout=10).stdout

    def seen(self):
        try:
            with open(os.path.join(self.node.home(self.uid), "seen.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""


@pytest.fixture(scope="module")
def tls(api, host_distro, ssh_keys):
    https = free_port()
    with router_node(api, "rtls-", conf=f"router_https = 127.0.0.1:{https}\n",
                     show_logs=True) as n:
        uid = launch(n, host_distro, ssh_keys)
        n.vassal(uid, "app.ini", "[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/app.py\n"
                 "socket = $(HOME)/run/app.socket\nenv = SEEN=$(HOME)/seen.log\n",
                 files=[("app.py", APP)])
        wait_for(lambda: os.path.exists(os.path.join(n.sockets(uid), "app.socket")), 30,
                 "the app's socket")
        t = Tls(n, uid, https)
        try:
            yield t
        finally:
            t.stop.set()
            t.thread.join(5)
        n.check_log()


def ssl_domain(tls, name, dns=None, ca=None):
    """name subscribed with its own self-signed certificate (and client CA
    `ca`, e.g. "!ca" for a mandatory one); returns the certificate's path."""
    key, crt = tls.certs.server(name, dns or [name])
    sni = {"sni_key": tls.router_file(key, name + ".key"),
           "sni_crt": tls.router_file(crt, name + ".crt")}
    if ca:
        bang = "!" if ca.startswith("!") else ""
        sni["sni_ca"] = bang + tls.router_file(tls.certs.p(ca.lstrip("!") + ".crt"),
                                               name + ".ca")
    tls.subscribe(name, **sni)
    return crt


def test_ssl_domain_served_with_its_certificate(tls):
    dom = unique("s") + ".org"
    crt = ssl_domain(tls, dom)
    code, body = tls.curl(dom, cacert=crt)
    assert (code, body) == (200, "app HTTPS=on DN=None"), body
    # The plain-HTTP record of the same subscription.
    code, body = tls.curl(dom, http=True)
    assert (code, body) == (200, "app HTTPS=None DN=None"), body
    # A name nobody serves: the default certificate, then a 404 page.
    nobody = "nobody-" + dom
    out = tls.s_client(nobody)
    assert "CN = imperium default certificate" in out or \
        "CN=imperium default certificate" in out, out
    code, body = tls.curl(nobody, insecure=True)
    assert code == 404 and "Not Found" in body, body
    # The default certificate is root's, readable by the router's group only.
    st = os.stat(os.path.join(tls.rdir, "tls", "default.key"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, tls.gid, 0o640)
    st = os.stat(os.path.join(tls.rdir, "tls"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, tls.gid, 0o710)


def test_client_certificates(tls):
    ca = unique("ca")
    tls.certs.ca(ca)
    client = tls.certs.client(unique("cl"), ca, "alice")
    must, may = unique("must") + ".org", unique("may") + ".org"
    must_crt = ssl_domain(tls, must, ca="!" + ca)
    may_crt = ssl_domain(tls, may, ca=ca)
    # "!": no certificate, no handshake; the CA's client gets in, DN and all.
    code, err = tls.curl(must, cacert=must_crt)
    assert code == 0, err
    code, body = tls.curl(must, cacert=must_crt, cert=client)
    assert code == 200 and "HTTPS=on" in body and "CN=alice" in body, body
    # Without "!": both get in, the DN only with a certificate.
    assert tls.curl(may, cacert=may_crt) == (200, "app HTTPS=on DN=None")
    code, body = tls.curl(may, cacert=may_crt, cert=client)
    assert code == 200 and "CN=alice" in body, body


def test_wildcard_certificate(tls):
    base = unique("wc") + ".org"
    crt = ssl_domain(tls, "." + base, dns=["*." + base])
    code, body = tls.curl("a." + base, cacert=crt)
    assert (code, body) == (200, "app HTTPS=on DN=None"), body


def test_host_other_than_sni_is_misdirected(tls):
    """The issue's attack: a client with a certificate of another customer's
    CA opens TLS for that customer's name, then asks for the protected name
    in Host.  421, and the app never sees it; without SNI, 421 too."""
    ca, other_ca = unique("pca"), unique("oca")
    tls.certs.ca(ca)
    tls.certs.ca(other_ca)
    mallory = tls.certs.client(unique("mal"), other_ca, "mallory")
    protected, other = unique("prot") + ".org", unique("oth") + ".org"
    prot_crt = ssl_domain(tls, protected, ca="!" + ca)
    other_crt = ssl_domain(tls, other, ca="!" + other_ca)
    # Mallory is welcome on her own name...
    code, body = tls.curl(other, cacert=other_crt, cert=mallory)
    assert code == 200 and "CN=mallory" in body, body
    # ...but not with the protected Host on that connection.
    code, body = tls.curl(other, path="/attack-1", host=protected, cacert=other_crt,
                          cert=mallory)
    assert code == 421 and "Misdirected" in body, body
    # No SNI at all (an address in the URL): 421 whatever the Host.
    code, body = tls.curl("127.0.0.1", path="/attack-2", host=protected, insecure=True)
    assert code == 421, body
    # A name in capitals still selects the protected context (no certificate:
    # no handshake), never the default one.
    code, err = tls.curl(protected.upper(), path="/attack-3", cacert=prot_crt)
    assert code == 0, err
    time.sleep(0.5)
    assert "attack" not in tls.seen(), tls.seen()


def test_no_session_resumption(tls):
    a, b = unique("ra") + ".org", unique("rb") + ".org"
    ssl_domain(tls, a)
    ssl_domain(tls, b)
    for proto in ("-tls1_2", "-tls1_3"):
        sess = os.path.join(tls.certs.d, unique("sess") + ".pem")
        first = tls.s_client(a, proto, "-sess_out", sess)
        # No ticket, no session id: nothing a client could offer again
        # (s_client then writes no session file)...
        assert "New, " in first and "Session Ticket arrived" not in first and \
            "TLS session ticket:" not in first and \
            (re.search(r"Session-ID: *\n", first) or "SSL-Session:" not in first), first
        # ...and whatever it offers is not taken, on either name.
        if os.path.exists(sess):
            for name in (a, b):
                again = tls.s_client(name, proto, "-sess_in", sess)
                assert "Reused" not in again and "New, " in again, again


def test_renewed_certificate_served_and_open_connections_kept(tls):
    dom = unique("rn") + ".org"
    old = ssl_domain(tls, dom)
    ctx = ssl.create_default_context(cafile=old)
    raw = socket.create_connection(("127.0.0.1", tls.port), timeout=5)
    conn = http.client.HTTPSConnection(dom, tls.port, context=ctx, timeout=5)
    conn.sock = ctx.wrap_socket(raw, server_hostname=dom)
    conn.request("GET", "/before")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"app HTTPS=on DN=None"
    # The gate's way: new files renamed over the copies the router reads.
    key, crt = tls.certs.server(dom + "-2", [dom], cn="renewed " + dom)
    tls.router_file(key, dom + ".key")
    tls.router_file(crt, dom + ".crt")
    wait_for(lambda: "renewed " + dom in tls.s_client(dom), 15, "the renewed certificate")
    code, body = tls.curl(dom, cacert=crt)
    assert code == 200, body
    # The connection opened before still works (the old context is kept).
    conn.request("GET", "/after")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"app HTTPS=on DN=None"
    conn.close()


def test_other_files_for_a_name_do_not_flip_its_context(tls):
    """Two announcers of one name naming different files (two vassals, or
    hand-made packets) must not make the router load a context per packet:
    the first files stay, the others are ignored and logged once."""
    dom = unique("ff") + ".org"
    first = ssl_domain(tls, dom)
    key, crt = tls.certs.server(dom + "-b", [dom], cn="second " + dom)
    other = {"sni_key": tls.router_file(key, dom + "-b.key"),
             "sni_crt": tls.router_file(crt, dom + "-b.crt")}
    for _ in range(4):
        tls.send(tls.packet(dom, **other))
        time.sleep(0.5)
    assert "second " + dom not in tls.s_client(dom)
    assert tls.curl(dom, cacert=first) == (200, "app HTTPS=on DN=None")
    log = tls.node.router_log()
    assert f"{dom}: certificate files changed" not in log, log[-3000:]
    # once per name and process (the router runs a few http processes)
    ignored = log.count(f"{dom}: a subscription names other certificate files")
    assert 1 <= ignored <= len(tls.per_process()), log[-3000:]


def test_acme_challenge_answered_on_any_host(tls):
    token = "tok_" + unique("t").replace(".", "-")
    d = os.path.join(tls.rdir, "acme", "challenges")
    st = os.stat(d)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, tls.gid, 0o710)
    path = os.path.join(d, token)
    with open(path, "w") as f:
        f.write(token + ".thumbprint")
    os.chown(path, 0, tls.gid)
    os.chmod(path, 0o640)
    try:
        for host in ("anything.example", unique("x") + ".org"):
            code, body = tls.curl(host, path="/.well-known/acme-challenge/" + token, http=True)
            assert (code, body) == (200, token + ".thumbprint")
        # Not a challenge the router holds: routed as usual (nobody: 404).
        code, _ = tls.curl("anything.example", path="/.well-known/acme-challenge/nope",
                           http=True)
        assert code == 404
        code, _ = tls.curl("anything.example", path="/.well-known/acme-challenge/..%2f" + token,
                           http=True)
        assert code == 404
    finally:
        os.unlink(path)


def test_keep_alive_two_requests_on_one_connection(tls):
    dom = unique("ka") + ".org"
    tls.subscribe(dom)
    conn = http.client.HTTPConnection("127.0.0.1", tls.node.port, timeout=5)
    socks = []
    # The router's own 404 keeps the connection too (and has no body for HEAD).
    for method, path, host, want in (("GET", "/1", dom, 200), ("GET", "/2", "nobody-" + dom, 404),
                                     ("HEAD", "/3", "nobody-" + dom, 404),
                                     ("GET", "/3", dom, 200)):
        conn.request(method, path, headers={"Host": host})
        r = conn.getresponse()
        r.read()
        assert r.status == want and not r.will_close, (path, r.status, r.getheaders())
        socks.append(conn.sock)
    assert all(s is socks[0] for s in socks)
    conn.close()
    assert re.search(rf"{re.escape(dom)} /1\n.*{re.escape(dom)} /3\n", tls.seen(), re.S)


# A TLS 1.3 client whose second ClientHello (after the server's
# HelloRetryRequest) names another server than its first: python's ssl and
# openssl s_client cannot do that.
HRR_CLIENT = r"""
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static const char *second;
static int switched;
/* RFC 8446 4.1.3: a ServerHello with this random is a HelloRetryRequest */
static const unsigned char hrr_random[32] = {
	0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
	0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C};
static void msg(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl, void *arg) {
	const unsigned char *b = buf;
	(void) version; (void) arg;
	if (!write_p && type == SSL3_RT_HANDSHAKE && len > 38 && b[0] == 2 && !memcmp(b + 6, hrr_random, 32)) {
		SSL_set_tlsext_host_name(ssl, second);
		switched = 1;
	}
}
int main(int argc, char **argv) {
	if (argc != 5) return 64;
	second = argv[3];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	/* a key share the server refuses first: it answers with an HRR */
	SSL_CTX_set1_groups_list(ctx, "ffdhe2048:P-256");
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(fd, (struct sockaddr *) &a, sizeof a)) { perror("connect"); return 1; }
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, argv[2]);
	SSL_set_msg_callback(ssl, msg);
	if (SSL_connect(ssl) != 1) {
		ERR_print_errors_fp(stderr);
		fprintf(stderr, "handshake failed, switched=%d\n", switched);
		return 2;
	}
	fprintf(stderr, "handshake ok, switched=%d\n", switched);
	SSL_write(ssl, argv[4], strlen(argv[4]));
	char buf[4096];
	int n;
	while ((n = SSL_read(ssl, buf, sizeof buf - 1)) > 0) { buf[n] = 0; fputs(buf, stdout); }
	return 0;
}
"""


@pytest.fixture(scope="module")
def hrr_client(tmp_path_factory):
    d = tmp_path_factory.mktemp("hrr")
    src, exe = d / "hrr.c", d / "hrr"
    src.write_text(HRR_CLIENT)
    subprocess.run(["gcc", "-Wall", "-o", str(exe), str(src), "-lssl", "-lcrypto"], check=True)
    return str(exe)


def test_sni_changed_after_hello_retry_is_misdirected(tls, hrr_client):
    """The first ClientHello names a site without client certificates and
    offers a key share the router refuses (a HelloRetryRequest follows); the
    second names the protected site.  The connection keeps the first site's
    rules (no certificate asked), so the router must not route the
    protected Host on it: 421, and the app never sees the request."""
    ca = unique("hca")
    tls.certs.ca(ca)
    public, protected = unique("hpub") + ".org", unique("hprot") + ".org"
    ssl_domain(tls, public)
    ssl_domain(tls, protected, ca="!" + ca)
    # In capitals, uWSGI's own callback (the one OpenSSL runs for the
    # second hello: the first one's context's) misses the protected context.
    req = f"GET /hrr-attack-1 HTTP/1.1\r\nHost: {protected}\r\nConnection: close\r\n\r\n"
    p = subprocess.run([hrr_client, str(tls.port), public, protected.upper(), req],
                       capture_output=True, text=True, timeout=10)
    # the attack happened: a retry, the name switched, no certificate asked
    assert p.returncode == 0 and "handshake ok, switched=1" in p.stderr, p.stderr
    assert p.stdout.startswith("HTTP/1.1 421 "), p.stdout
    # In lower case it switches to the protected context, which then asks
    # for the certificate: no answer at all (and never the app).
    req = req.replace("attack-1", "attack-2")
    p = subprocess.run([hrr_client, str(tls.port), public, protected, req],
                       capture_output=True, text=True, timeout=10)
    assert "switched=1" in p.stderr and " 200 " not in p.stdout, (p.stderr, p.stdout)
    # The same client with one name all along is served as usual.
    req = f"GET /hrr-ok HTTP/1.1\r\nHost: {public}\r\nConnection: close\r\n\r\n"
    p = subprocess.run([hrr_client, str(tls.port), public, public, req],
                       capture_output=True, text=True, timeout=10)
    assert "switched=1" in p.stderr and p.stdout.startswith("HTTP/1.1 200 "), (p.stderr, p.stdout)
    time.sleep(0.5)
    assert "hrr-attack" not in tls.seen(), tls.seen()


def djb33x_bucket(name):
    """The hash bucket of uWSGI's subscription table for name."""
    h = 5381
    for c in name.encode():
        h = (((h << 5) + h) ^ c) & 0xffffffff
    return h % 0xffff


def test_leftover_context_not_routed_to_wildcard(tls):
    """uWSGI leaves a name's TLS context behind when its slot goes and
    shares a hash bucket with another name's.  A client naming it then
    negotiates that context (no client certificate asked), and its Host
    falls through to the protected wildcard's subscription: 421."""
    ca = unique("wca")
    tls.certs.ca(ca)
    base = unique("lw") + ".org"
    leaf = "a." + base
    want = djb33x_bucket(leaf)
    other = next(c for c in (f"c{i}-{base}" for i in range(2_000_000)) if djb33x_bucket(c) == want)
    ssl_domain(tls, "." + base, dns=["*." + base], ca="!" + ca)
    leaf_crt = ssl_domain(tls, leaf)
    tls.subscribe(other)
    assert tls.curl(leaf, path="/leaf-before", cacert=leaf_crt) == (200, "app HTTPS=on DN=None")
    tls.unsubscribe(leaf)
    # The leftover context still answers the name (its certificate, no
    # client certificate asked)...
    code, body = tls.curl(leaf, path="/leftover-attack", cacert=leaf_crt)
    assert code == 421 and "Misdirected" in body, body
    # ...while the wildcard's own context still wants its certificate.
    code, err = tls.curl("b." + base, path="/wildcard-attack", insecure=True)
    assert code == 0, err
    time.sleep(0.5)
    assert "attack" not in tls.seen(), tls.seen()
