"""Automatic HTTPS (auto-ssl-domain, docs/ROUTER.md "Automatic HTTPS"): the node obtains
certificates from Debian's pebble (the ACME test server) on loopback, the router answers
its HTTP-01 challenges and serves what was issued.

Pebble's own directory is served over TLS with a certificate of a test CA made here,
given to the node as acme_ca_bundle; its DNS is pebble-challtestsrv on a loopback port
answering 127.0.0.1 for every name (nothing queries a real resolver)."""

import grp
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

import pytest

from helpers import BIN, free_port, stop_proc, unique, wait_for
from nodeutil import NEEDS_CONTAINERS, PY_APP, RouterNode, add_domain, launch, new_base

PEBBLE = shutil.which("pebble")
CHALLTESTSRV = shutil.which("pebble-challtestsrv")
UACME = shutil.which("uacme")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pebble:
    """pebble + pebble-challtestsrv on loopback, in a directory of their own."""

    def __init__(self, http_port):
        self.dir = tempfile.mkdtemp(prefix="imperium-pebble-")
        self.http_port = http_port
        self.port, self.mgmt, self.dns, self.dns_mgmt, self.tls = (free_port() for _ in range(5))
        self.procs = []
        self.ca = os.path.join(self.dir, "ca.crt")
        self.directory = f"https://127.0.0.1:{self.port}/dir"

    def _certs(self):
        d = self.dir
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                "-subj", "/CN=imperium test ACME directory CA", cwd=d)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "pebble.key", "-out", "pebble.csr", "-subj", "/CN=127.0.0.1", cwd=d)
        with open(os.path.join(d, "san.ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl("x509", "-req", "-in", "pebble.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "pebble.crt",
                cwd=d)

    def start(self):
        self._certs()
        conf = {"pebble": {"listenAddress": f"127.0.0.1:{self.port}",
                           "managementListenAddress": f"127.0.0.1:{self.mgmt}",
                           "certificate": os.path.join(self.dir, "pebble.crt"),
                           "privateKey": os.path.join(self.dir, "pebble.key"),
                           "httpPort": self.http_port, "tlsPort": self.tls,
                           "ocspResponderURL": "", "externalAccountBindingRequired": False}}
        cfg = os.path.join(self.dir, "pebble.json")
        with open(cfg, "w") as f:
            json.dump(conf, f)
        log = open(os.path.join(self.dir, "challtestsrv.log"), "w")
        # Every A query answers 127.0.0.1, no AAAA; only the DNS and management listen.
        self.procs.append(subprocess.Popen(
            [CHALLTESTSRV, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{self.dns}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", f"127.0.0.1:{self.dns_mgmt}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.dir))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        log = open(os.path.join(self.dir, "pebble.log"), "w")
        self.procs.append(subprocess.Popen(
            [PEBBLE, "-config", cfg, "-dnsserver", f"127.0.0.1:{self.dns}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, env=env))
        wait_for(self._up, 15, "pebble's directory")
        return self

    def _get(self, url):
        ctx = ssl.create_default_context(cafile=self.ca)
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.read()

    def _up(self):
        for p in self.procs:
            assert p.poll() is None, f"{p.args[0]} ended: {self.logs()}"
        try:
            return b"newAccount" in self._get(self.directory)
        except OSError:
            return False

    def root(self):
        """PEM of the root pebble issues under (its management interface)."""
        return self._get(f"https://127.0.0.1:{self.mgmt}/roots/0").decode()

    def logs(self):
        out = ""
        for name in ("pebble.log", "challtestsrv.log"):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    out += f"--- {name}\n" + f.read()[-4000:]
            except OSError:
                pass
        return out

    def stop(self):
        for p in reversed(self.procs):
            stop_proc(p, timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


pytestmark = [*NEEDS_CONTAINERS,
              pytest.mark.skipif(not (PEBBLE and CHALLTESTSRV and UACME),
                                 reason="needs pebble, pebble-challtestsrv and uacme"),
              pytest.mark.usefixtures("subreaper")]

# Pebble's certificates are valid 5 years: renewing 3650 days before expiry
# means every certificate is due at once, so each is obtained again every
# acme_retry seconds (the renewal test watches a new one being served).
RETRY_S = 5


@pytest.fixture(scope="module")
def acme(api, subreaper):
    """(node, pebble): a router node on 127.0.0.1 whose HTTP port is pebble's httpPort.
    (It names subreaper so that it ends first: the node's containers go before it.)"""
    http = free_port()
    pebble = Pebble(http).start()
    base = new_base("acme-")
    node = RouterNode(api, base, port=http)
    node.https = free_port()
    with open(node.conf, "a") as f:
        f.write(f"router_https = 127.0.0.1:{node.https}\n"
                f"acme_directory = {pebble.directory}\n"
                f"acme_ca_bundle = {pebble.ca}\n"
                f"acme_email = supplier@example.org\n"
                f"acme_renew_days = 3650\n"
                f"acme_retry = {RETRY_S}\n")
    try:
        node.start()
        yield node, pebble
    finally:
        try:
            node.cleanup()
        finally:
            node.print_logs()
            print("\n".join(line for line in node.log().splitlines()
                            if "acme" in line or "subscription" in line)[-6000:])
            print(pebble.logs())
            pebble.stop()
            shutil.rmtree(base, ignore_errors=True)


def served_cert(node, name, root_pem):
    """(DER of the certificate served for name, the app's answer), verified against root_pem."""
    ctx = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection(("127.0.0.1", node.https), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            der = s.getpeercert(binary_form=True)
            s.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            body = b""
            while chunk := s.recv(65536):
                body += chunk
    return der, body.decode(errors="replace")


def wait_served(node, name, root_pem, text, timeout, other_than=None):
    """served_cert once it verifies (and differs from other_than) and the app answers."""
    def ok():
        try:
            der, body = served_cert(node, name, root_pem)
        except (OSError, ssl.SSLError):
            return None
        return (der, body) if text in body and der != other_than else None
    return wait_for(ok, timeout, f"{name} over HTTPS with pebble's certificate", interval=0.5)


def router_log(node, uid):
    try:
        with open(os.path.join(node.home(uid), "logs", "router.log")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def auto_vassal(node, uid, name, tag):
    node.vassal(uid, f"{tag}.ini",
                f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/{tag}.py\n"
                f"auto-ssl-domain = {name}\n",
                files=[(f"{tag}.py", f"NAME = {tag!r}\n" + PY_APP)])


def test_auto_ssl_domain_gets_a_certificate_from_the_acme_server_and_renews_it(
        acme, host_distro, ssh_keys):
    node, pebble = acme
    name = unique("auto") + ".test"
    add_domain(node.api, node.auth, name)
    uid = launch(node, host_distro, ssh_keys)
    auto_vassal(node, uid, name, "app")
    root = pebble.root()
    # Issued by pebble (verified against its root, for the name) and served.
    der, body = wait_served(node, name, root, "Hello i am python app", 60)
    assert f"certificate for {name} obtained from {pebble.directory}, valid until " in \
        router_log(node, uid)
    # Plain HTTP on the same name reaches the app too.
    node.wait_answer(name, "Hello i am python app")
    # The key is the node's: root and the router's group only.
    certs = os.path.join(node.state, "router", "acme", "certs")
    router_gid = grp.getgrnam("imperium-router").gr_gid
    for f in (f"{name}.key", f"{name}.crt"):
        st = os.stat(os.path.join(certs, f))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, router_gid, 0o640), f
    st = os.stat(os.path.join(node.state, "router", "acme", "state"))
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o700)
    # Nothing of the challenges is left behind.
    assert os.listdir(os.path.join(node.state, "router", "acme", "challenges")) == []
    # Renewal: every certificate is due (acme_renew_days beyond pebble's
    # validity), so another one comes and is served without a restart.
    der2, _ = wait_served(node, name, root, "Hello i am python app", 60, other_than=der)
    assert der2 != der
    assert router_log(node, uid).count(f"certificate for {name} obtained from") >= 2


def test_wildcards_and_names_of_others_are_refused_and_never_asked_for(
        acme, host_distro, ssh_keys):
    node, pebble = acme
    wild = "." + unique("wild") + ".test"
    add_domain(node.api, node.auth, wild)
    other, _ = node.api.new_customer()
    theirs = unique("theirs") + ".test"
    add_domain(node.api, other, theirs)
    uid = launch(node, host_distro, ssh_keys)
    auto_vassal(node, uid, wild, "wild")
    auto_vassal(node, uid, theirs, "theirs")
    # Refused by the gate at the announcement (the packet is not forwarded).
    wait_for(lambda: f"subscription of {wild} refused: a wildcard cannot be proven"
             in router_log(node, uid), 30, "the wildcard's refusal", interval=0.5)
    # (The node's state holds the domains of the customers it hosts: another's
    # is "not one of your domains", or "belongs to another customer" when
    # that customer has a container here too.)
    wait_for(lambda: f"subscription of {theirs} refused: the domain {theirs} "
             in router_log(node, uid), 30, "the other's name refused", interval=0.5)
    # Neither was asked of the ACME server.
    log = pebble.logs()
    assert wild.lstrip(".") not in log and theirs not in log
    assert not os.path.exists(os.path.join(node.state, "router", "acme", "certs",
                                           f"{theirs}.key"))


@pytest.mark.parametrize("line, says", [
    ("acme_directory = http://acme.test/dir", "acme_directory must be an https:// URL"),
    ("acme_email = not an address", "acme_email must be an e-mail address"),
    ("acme_renew_days = 0", "acme_renew_days"),
    ("acme_retry = 0", "acme_retry"),
])
def test_bad_acme_settings_stop_the_node_with_a_clear_error(tmp_path, line, says):
    conf = tmp_path / "node.conf"
    conf.write_text(f"api_url = http://127.0.0.1:1\nserver_name = x\nsecret = s\n"
                    f"state_dir = {tmp_path}/state\ncontainers_dir = {tmp_path}/homes\n{line}\n")
    p = subprocess.run([os.path.join(BIN, "imperium-node"), "run", "--config", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and f"node.conf:6: {says}" in p.stderr, p.stderr
    assert not os.path.exists(tmp_path / "state")  # refused before anything was made
