"""The node daemon's own health for suppliers (issue 16): `metrics_listen`
serves Prometheus text at /metrics, parsed here as a scraper would; its
numbers follow what the daemon does (containers by state, starts).  A bad
`metrics_listen` (or a port another program holds) stops the start with a
sentence that names the setting.  And `emperor_log_maxsize`: a container's
logs/emperor.log rotates into one emperor.log.1, nothing more.

Runs as root, like every node test (a daemon of its own under build/e2e-node/,
the listener on 127.0.0.1 only)."""

import os
import re
import socket
import subprocess

import pytest
import requests

from helpers import free_port, wait_for
from nodeutil import NEEDS_CONTAINERS, NODE, running

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]

# A sample line of the text format 0.0.4: name, optional {labels}, value.
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([-+0-9.eE]+|NaN|[+-]Inf)$')


def scrape(port):
    """{'name{labels}': value} of one GET /metrics; every line must parse."""
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for line in r.text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


RUNNING = 'imperium_node_containers{state="running"}'
STARTS = "imperium_node_container_starts_total"


def test_metrics_listen_serves_the_daemons_health(make_node, host_distro, ssh_keys):
    node = make_node(start=False)
    port = free_port()
    with open(node.conf, "a") as f:
        f.write(f"metrics_listen = 127.0.0.1:{port}\n")
    node.start()
    assert f"the node's own metrics: http://127.0.0.1:{port}/metrics" in node.log()

    m = scrape(port)
    assert m[RUNNING] == 0 and m[STARTS] == 0
    assert 'imperium_node_alarm_deliveries_total{channel="xmpp",result="sent"}' in m
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 404
    assert requests.post(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 405

    # Two containers start: the gauge says what the API is told, the
    # counter counts both starts.
    a, b = node.new_container(), node.new_container()
    node.launch(a, host_distro, ssh_keys[0])
    node.launch(b, host_distro, ssh_keys[1])
    node.wait_status(a, state="running")
    node.wait_status(b, state="running")
    m = wait_for(lambda: (m := scrape(port))[RUNNING] == 2 and m, 10, "2 running on /metrics")
    assert m[STARTS] == 2
    assert m['imperium_node_containers{state="failed"}'] == 0

    # A reboot is one more start; the gauge stays at what runs.
    init = running(a)[0]
    node.post(a, {"reboot": 1})
    wait_for(lambda: (r := running(a)) and r[0] != init, 10, "the rebooted container")
    # (The counter moves at the start, the gauge at the status report after it.)
    wait_for(lambda: (m := scrape(port))[STARTS] == 3 and m[RUNNING] == 2, 10,
             "3 starts and 2 running on /metrics")

    # The daemon's stop closes the listener.
    node.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)


def run_node(node, listen):
    """The daemon with metrics_listen = listen: its exit code and output
    (it must refuse at once)."""
    with open(node.conf) as f:
        conf = f.read()
    path = node.conf + ".metrics"  # node.conf stays good for the cleanup's stop-all
    with open(path, "w") as f:
        f.write(conf + f"metrics_listen = {listen}\n")
    p = subprocess.run([NODE, "run", "--config", path], capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize("listen", ["localhost:9101", "127.0.0.1", "127.0.0.1:0",
                                    "127.0.0.1:70000"])
def test_a_bad_metrics_listen_is_refused_at_start(make_node, listen):
    node = make_node(start=False)
    rc, out = run_node(node, listen)
    assert rc != 0
    assert "metrics_listen" in out and ("IPV4:PORT" in out or "IPv4" in out), out
    assert "node state received" not in out


def test_a_taken_metrics_port_stops_the_start(make_node):
    node = make_node(start=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc, out = run_node(node, f"127.0.0.1:{port}")
    assert rc != 0
    assert f"metrics_listen: cannot listen on 127.0.0.1:{port}" in out, out


# ---- emperor.log rotation ---------------------------------------------------------

# A vassal that writes about 60 KB to the Emperor's log when it loads
# (a vassal's stderr is the Emperor's log).  uWSGI looks at the log's size
# about once a second, not at each line: a file overshoots the limit by
# what was logged meanwhile.
CHATTY = """import sys
for i in range(500):
    sys.stderr.write("%s line %04d %s\\n" % (TAG, i, "x" * 100))
sys.stderr.flush()

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"chatty"]
"""


def test_emperor_log_rotates_into_one_backup(make_node, host_distro, ssh_keys):
    maxsize = 4096
    node = make_node(start=False)
    with open(node.conf, "a") as f:
        f.write(f"emperor_log_maxsize = {maxsize}\n")
    node.start()
    uid = node.new_container()
    _, emperor = node.launch(uid, host_distro, ssh_keys[0])
    with open(f"/proc/{emperor}/cmdline") as f:
        argv = f.read().split("\0")
    assert argv[argv.index("--log-maxsize") + 1] == str(maxsize)
    assert argv[argv.index("--log-backupname") + 1] == f"/containers/{uid}/logs/emperor.log.1"

    logs = os.path.join(node.home(uid), "logs")

    def logged():
        text = ""
        for name in ("emperor.log.1", "emperor.log"):
            try:
                text += open(os.path.join(logs, name), errors="replace").read()
            except FileNotFoundError:
                pass
        return text

    # Three vassals, one after the other: three times past the limit.
    for n in range(3):
        home = node.home(uid)
        with open(os.path.join(home, f"chatty{n}.py"), "w") as f:
            f.write(f"TAG = 'chatty{n}'\n" + CHATTY)
        tmp = os.path.join(home, "vassals", ".chatty.tmp")
        with open(tmp, "w") as f:
            f.write(f"[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/chatty{n}.py\n"
                    f"socket = $(HOME)/run/chatty{n}.sock\n")
        os.chown(tmp, uid, uid)
        os.rename(tmp, os.path.join(home, "vassals", f"chatty{n}.ini"))
        wait_for(lambda: f"vassal chatty{n}.ini is ready to accept requests" in logged(), 20,
                 f"vassal chatty{n}", interval=0.1)
        # Its rotation (within about a second) before the next one writes.
        wait_for(lambda: f"chatty{n} line 0000" in open(os.path.join(logs, "emperor.log.1"),
                                                      errors="replace").read()
                 if os.path.exists(os.path.join(logs, "emperor.log.1")) else False,
                 10, f"chatty{n}'s lines rotated into emperor.log.1", interval=0.1)

    # One backup, replaced at each rotation (the first two vassals' lines
    # are gone); no emperor.log.<unix time>; emperor.log small again.
    assert sorted(os.listdir(logs)) == ["emperor.log", "emperor.log.1"]
    backup = open(os.path.join(logs, "emperor.log.1"), errors="replace").read()
    assert "chatty0 line" not in backup and "chatty1 line" not in backup
    assert os.path.getsize(os.path.join(logs, "emperor.log")) < maxsize
