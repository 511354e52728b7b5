"""Alarm delivery by the node (issue 16, docs/ALARMS.md): an alarm raised with
the API, or by the node itself (the quota crossing quota_threshold %), reaches
an open ssh shell of the container, a real XMPP server (Debian's prosody on
127.0.0.1, in a temp dir, always started with --config) and a local HTTP
receiver in the Pushover, Pushbullet and Slack request formats; at most one
delivery per alarm_freq, the held ones said in the next; a failing channel is
retried and delays no other.

Runs as root like every node test; prosody runs as its own user, every
listener on 127.0.0.1.  (The API-only alarm tests are in test_alarms.py.)"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import free_port, stop_proc, unique, wait_for
from nodeutil import NEEDS_CONTAINERS, MiB
from sshutil import SSHD, open_shell, read_until, sshd_in_front

PROSODY = "/usr/bin/prosody"
PROSODYCTL = "/usr/bin/prosodyctl"
XMPP_HOST = "imperium.test"

pytestmark = [*NEEDS_CONTAINERS,
              pytest.mark.skipif(not os.path.exists(PROSODY), reason="needs prosody"),
              pytest.mark.skipif(not os.path.exists(SSHD), reason="needs openssh-server"),
              pytest.mark.usefixtures("subreaper")]

PROSODY_CFG = """-- throw-away prosody of test_alarm_delivery.py: loopback only, no TLS
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ info = "{d}/prosody.log"; error = "{d}/prosody.err" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
admin_address = nil
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "posix"; "offline" }}
modules_disabled = {{ "s2s"; "tls"; "admin_shell" }}
authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
VirtualHost "{host}"
"""

AS_PROSODY = ["setpriv", "--reuid", "prosody", "--regid", "prosody", "--clear-groups"]


class Prosody:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="imperium-prosody-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.cfg = os.path.join(self.dir, "prosody.cfg.lua")
        with open(self.cfg, "w") as f:
            f.write(PROSODY_CFG.format(d=self.dir, port=self.port, host=XMPP_HOST))
        os.mkdir(os.path.join(self.dir, "data"))
        shutil.chown(self.dir, "prosody", "prosody")
        shutil.chown(os.path.join(self.dir, "data"), "prosody", "prosody")
        self.proc = None

    def ctl(self, *args):
        # --config always: without it prosodyctl acts on the system's server.
        p = subprocess.run([*AS_PROSODY, PROSODYCTL, "--config", self.cfg, *args],
                           capture_output=True, text=True, timeout=30, cwd=self.dir)
        assert p.returncode == 0, p.stdout + p.stderr
        return p

    def register(self, user, password):
        self.ctl("register", user, XMPP_HOST, password)
        return f"{user}@{XMPP_HOST}"

    def start(self):
        self.log = open(os.path.join(self.dir, "stdout.log"), "w")
        self.proc = subprocess.Popen([*AS_PROSODY, PROSODY, "--config", self.cfg],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)

        def listening():
            assert self.proc.poll() is None, open(self.log.name).read()
            p = subprocess.run(["ss", "-Hltn", f"sport = :{self.port}"], capture_output=True,
                               text=True)
            return "127.0.0.1" in p.stdout
        wait_for(listening, 15, "prosody listening")

    def stop(self):
        if self.proc:
            stop_proc(self.proc, timeout=10)
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def offline(self, user):
        """The messages prosody keeps for an account that is not online
        (mod_offline's store): the text of what the account received."""
        def enc(name):  # prosody's datamanager: every non-word character as %xx
            return re.sub(r"\W", lambda m: "%%%02x" % ord(m.group()), name)
        path = os.path.join(self.dir, "data", enc(XMPP_HOST), "offline", f"{enc(user)}.list")
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


@pytest.fixture(scope="module")
def prosody():
    p = Prosody()
    try:
        p.sender = p.register("node", "node-secret")
        p.start()
        yield p
    finally:
        p.stop()


class Receiver:
    """The local stand-in for Pushover, Pushbullet and Slack: records every
    POST (time, path, headers, body); paths under /flaky/ answer 500 to
    their first `flaky` requests."""

    def __init__(self):
        self.got = []
        self.flaky = 2
        self.lock = threading.Lock()
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with rec.lock:
                    rec.got.append((time.monotonic(), self.path, dict(self.headers),
                                    body.decode()))
                    fail = self.path.startswith("/flaky/") and sum(
                        1 for g in rec.got if g[1] == self.path) <= rec.flaky
                out = b"failing" if fail else (b'{"status":1,"request":"test"}'
                                               if self.path == "/1/messages.json" else b"ok")
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def matching(self, path, text):
        with self.lock:
            return [g for g in self.got if g[1] == path and text in urllib.parse.unquote(g[3])]


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.srv.shutdown()
    r.srv.server_close()


@pytest.fixture
def alarm_node(make_node, prosody, receiver):
    node = make_node(conf=f"pushover_url = {receiver.url}/1/messages.json\n"
                          f"pushbullet_url = {receiver.url}/v2/pushes\n"
                          f"slack_hosts = 127.0.0.1\n"
                          f"alarm_insecure_http = true\n"
                          f"xmpp_server = 127.0.0.1:{prosody.port}\n"
                          f"xmpp_insecure = true\n"
                          f"quota_check_interval = 1\n")
    with sshd_in_front(node) as sshd:
        yield node, sshd


def with_every_channel(node, prosody, receiver, uid, tag, slack_path=None, **fields):
    """Every channel of container uid set, pointing at the test's servers;
    returns the XMPP account that receives its alarms."""
    dest = prosody.register(f"dest-{tag}", "dest-secret")
    node.post(uid, {"jid": prosody.sender, "jid_secret": "node-secret",
                    "jid_destinations": dest, "pushover_user": f"user-{tag}",
                    "pushover_token": f"token-{tag}", "pushover_sound": "siren",
                    "pushbullet_token": f"pb-{tag}",
                    "slack_webhook": receiver.url + (slack_path or f"/services/T/B/{tag}"),
                    **fields})
    return f"dest-{tag}"


def xmpp_got(node, prosody, user, text):
    """The account `user` received `text` (prosody keeps it offline for it)."""
    try:
        wait_for(lambda: text in prosody.offline(user), 15, "the XMPP message in prosody")
    except AssertionError:
        with open(os.path.join(prosody.dir, "prosody.log"), errors="replace") as f:
            plog = f.read()[-2000:]
        lines = [line for line in node.log().splitlines() if "xmpp" in line.lower()]
        raise AssertionError(f"no XMPP message {text!r} for {user}: node: {lines}, "
                             f"prosody: {plog}, offline: {prosody.offline(user)!r}")


def check_formats(receiver, tag, text):
    """The three services each got `text` once, in their own format."""
    [po] = wait_for(lambda: receiver.matching("/1/messages.json", f"user=user-{tag}"), 15,
                    "the Pushover request")
    form = urllib.parse.parse_qs(po[3])
    assert po[2]["Content-Type"] == "application/x-www-form-urlencoded"
    assert form["token"] == [f"token-{tag}"] and form["user"] == [f"user-{tag}"]
    assert form["sound"] == ["siren"] and form["title"] == ["imperium alarm"]
    assert form["message"] == [text]
    pb = wait_for(lambda: [g for g in receiver.matching("/v2/pushes", text)
                           if g[2].get("Access-Token") == f"pb-{tag}"], 15, "the Pushbullet note")
    assert len(pb) == 1 and pb[0][2]["Content-Type"] == "application/json"
    assert json.loads(pb[0][3]) == {"type": "note", "title": "imperium alarm", "body": text}
    [sl] = wait_for(lambda: receiver.matching(f"/services/T/B/{tag}", ""), 15, "the Slack post")
    assert json.loads(sl[3]) == {"text": text}


def test_an_api_alarm_reaches_every_channel(alarm_node, prosody, receiver, host_distro,
                                            keypairs):
    node, sshd = alarm_node
    key, pub = keypairs[0]
    uid = node.new_container()
    tag = unique("a")
    dest = with_every_channel(node, prosody, receiver, uid, tag)
    node.launch(uid, host_distro, pub)
    name = node.container(uid)["name"]
    shell = open_shell(sshd, key, uid)

    # Raised with the container's alarm key, as an app would.
    k = node.api.post(f"/alarm_key/{uid}", auth=node.auth).json()["alarm_key"]
    r = node.api.post(f"/alarms/raise/{uid}", params={"key": k}, data="the cache is cold")
    assert r.status_code == 201, r.text
    text = f"[imperium] {name} ({uid}): the cache is cold"

    got = read_until(shell, "the cache is cold", 15).replace("\r", "")
    assert f"[imperium] {name} ({uid}): the cache is cold\n" in got
    check_formats(receiver, tag, text)
    xmpp_got(node, prosody, dest, text)
    # Stored once (by the API), never again by the node.
    time.sleep(1)
    alarms = node.api.get("/alarms/", auth=node.auth, params={"container": uid}).json()
    assert [a["msg"] for a in alarms] == ["the cache is cold"]
    with open(os.path.join(node.state, "alarm_seq")) as f:
        assert int(f.read()) == alarms[0]["id"]
    shell.stdin.write(b"exit\n")
    shell.stdin.flush()
    shell.wait(timeout=10)


def test_a_failing_channel_is_retried_and_delays_no_other(alarm_node, prosody, receiver,
                                                          host_distro, keypairs):
    node, _ = alarm_node
    uid = node.new_container()
    tag = unique("c")
    slack = f"/flaky/{tag}"
    with_every_channel(node, prosody, receiver, uid, tag, slack_path=slack)
    node.launch(uid, host_distro, keypairs[1][1])
    t = time.monotonic()
    assert node.api.post(f"/alarms/raise/{uid}", auth=node.auth, data="flaky").status_code == 201
    [po] = wait_for(lambda: receiver.matching("/1/messages.json", f"user=user-{tag}"), 10,
                    "the Pushover request")
    # Slack answered 500 twice: tried again with backoff (1 s, 2 s), and
    # Pushover did not wait for it.
    try:
        tries = wait_for(lambda: (g := receiver.matching(slack, "")) and len(g) >= 3 and g, 20,
                         "3 tries of the failing webhook")
    except AssertionError:
        raise AssertionError(f"{receiver.matching(slack, '')}: " + "\n".join(
            line for line in node.log().splitlines() if "alarm" in line))
    assert len(tries) == 3
    assert po[0] < tries[1][0], "Pushover waited for the failing channel"
    assert tries[1][0] - tries[0][0] >= 0.9 and tries[2][0] - tries[1][0] >= 1.9
    assert po[0] - t < 5
    time.sleep(1.5)
    assert len(receiver.matching(slack, "")) == 3  # the third was a success: no more
    assert "alarm to slack failed" in node.log()


def test_quota_crossing_is_stored_once_and_rate_limited(alarm_node, prosody, receiver,
                                                        host_distro, keypairs):
    node, sshd = alarm_node
    key, pub = keypairs[2]
    uid = node.new_container()
    tag = unique("q")
    dest = with_every_channel(node, prosody, receiver, uid, tag, quota_threshold=50,
                              storage=40)
    node.launch(uid, host_distro, pub)
    name = node.container(uid)["name"]
    shell = open_shell(sshd, key, uid)
    big = os.path.join(node.home(uid), "big")

    def quota_alarms():
        r = node.api.get("/alarms/", auth=node.auth, params={"container": uid, "level": 0})
        assert r.status_code == 200, r.text
        return [a for a in r.json() if a["class"] == "quota"]

    def fill():
        with open(big, "wb") as f:
            f.write(b"\1" * (25 * MiB))
            f.flush()
            os.fsync(f.fileno())

    fill()
    first = time.monotonic()
    [al] = wait_for(quota_alarms, 15, "the quota alarm in /alarms/")
    assert al["level"] == 0 and re.search(r"\d+ MB used of \d+ MB", al["msg"]), al
    text = f"[imperium] {name} ({uid}): {al['msg']}"
    check_formats(receiver, tag, text)
    got = read_until(shell, "MB used of", 15).replace("\r", "")
    assert text + "\n" in got
    xmpp_got(node, prosody, dest, text)
    # Still over: no second alarm.
    time.sleep(2.5)
    assert len(quota_alarms()) == 1

    # Twice more across the threshold within alarm_freq (60 s): stored, not delivered.
    for n in (2, 3):
        os.unlink(big)
        time.sleep(2.5)  # a check below the threshold re-arms it
        fill()
        wait_for(lambda: len(quota_alarms()) == n, 15, f"quota alarm {n} in /alarms/")
    assert len(receiver.matching("/1/messages.json", f"user=user-{tag}")) == 1
    assert len(receiver.matching(f"/services/T/B/{tag}", "")) == 1

    # When the window opens: the newest, saying how many more were held.
    more = wait_for(lambda: receiver.matching("/1/messages.json", "1 more alarm since"),
                    first + 75 - time.monotonic(), "the held alarm")
    assert time.monotonic() - first >= 55
    assert len([g for g in more if f"user=user-{tag}" in g[3]]) == 1
    read_until(shell, "1 more alarm since", 10)
    shell.stdin.write(b"exit\n")
    shell.stdin.flush()
    shell.wait(timeout=10)


class Listener:
    """A TCP listener on ip:port counting the connections it accepts: where a
    jid's domain would lead the node if it connected wherever a customer says."""

    def __init__(self, ip, port):
        import socket
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            c.close()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_a_jid_on_a_loopback_address_is_refused(make_node, receiver, host_distro, keypairs):
    """xmpp_server unset: the node resolves the jid's domain itself and
    connects only to a public address on 5222/5223 (docs/ALARMS.md, No
    SSRF).  A jid x@127.0.0.N would have made it open TCP to 127.0.0.N:5222
    from the host's namespace: refused, logged once, not retried, and the
    other channels still delivered."""
    ip = f"127.0.{os.getpid() % 250 + 2}.{int(time.time()) % 250 + 2}"
    listener = Listener(ip, 5222)
    node = make_node(start=False)
    with open(node.conf, "a") as f:
        f.write(f"pushover_url = {receiver.url}/1/messages.json\n"
                f"alarm_insecure_http = true\n"
                f"xmpp_insecure = true\n")
    node.start()
    try:
        uid = node.new_container()
        tag = unique("s")
        jid = f"x-{tag}@{ip}"
        node.post(uid, {"jid": jid, "jid_secret": "secret", "jid_destinations": f"y@{ip}",
                        "pushover_user": f"user-{tag}", "pushover_token": f"token-{tag}"})
        node.launch(uid, host_distro, keypairs[0][1])
        assert node.api.post(f"/alarms/raise/{uid}", auth=node.auth,
                             data="to loopback").status_code == 201
        wait_for(lambda: receiver.matching("/1/messages.json", f"user=user-{tag}"), 15,
                 "the Pushover request")
        refusal = f"alarm not sent by XMPP as {jid}: {ip} is a loopback address"
        wait_for(lambda: refusal in node.log() or listener.accepted, 10,
                 "the refusal in the node's log (or a connection)")
        time.sleep(2.5)  # a retry would come after 1 s
        assert listener.accepted == 0, "the node connected to a loopback address"
        assert node.log().count(refusal) == 1, node.log()
        assert "alarm to xmpp given up" not in node.log()
    finally:
        listener.close()
