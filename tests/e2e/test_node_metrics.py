"""Metrics from the nodes (issue 16, docs/METRICS.md), end to end: the real
API, the real imperium-node with `metrics_interval = 1`, containers on the
host distro, requests through the node's router; what a customer reads with
GET /metrics/... .  Also the channel's outbox (the API away for a minute, a
node restart in between) and the node's system alarms for OOM kills and
crash loops (GET /alarms/).  Root only."""

import json
import os
import shutil
import tempfile
import time

import pytest

import conftest
from conftest import start_api, stop_api, unique
from helpers import wait_for
from nodeutil import NEEDS_CONTAINERS, Node, init_of, launch, new_base, router_node

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]

INTERVAL = 1
# The issue says a minute; IMPERIUM_OUTAGE_S shortens it for a quick run.
OUTAGE_S = int(os.environ.get("IMPERIUM_OUTAGE_S", "60"))


def metric(api, auth, name, uid):
    r = api.get(f"/metrics/container.{name}/{uid}", auth=auth)
    assert r.status_code == 200, r.text
    return r.json()


def domain_hits(api, auth, domain_id):
    r = api.get(f"/metrics/domain.hits/{domain_id}", auth=auth)
    assert r.status_code == 200, r.text
    return sum(v for entry in r.json() for _, v in entry["metrics"])


def new_domain(api, auth):
    name = unique("metrics") + ".org"
    api.admin("POST", "/domains", {"name": name, "customer": auth[0]}, expect=201)
    r = api.get("/domains/", auth=auth)
    assert r.status_code == 200, r.text
    return name, next(d["id"] for d in r.json() if d["name"] == name)


@pytest.fixture
def mnode(api):
    with router_node(api, "metrics-", conf=f"metrics_interval = {INTERVAL}\n",
                     show_logs=True) as n:
        yield n


def test_domain_hits_cpu_mem(mnode, host_distro, ssh_keys):
    api, auth = mnode.api, mnode.auth
    dom, dom_id = new_domain(api, auth)
    uid = launch(mnode, host_distro, ssh_keys)
    mnode.py_vassal(uid, "app", dom)
    # Subscribed, and not one request yet: every hit below is the test's.
    wait_for(lambda: mnode.subscriptions().get(dom), 30, "the vassal's subscription")
    n = 17
    answers = mnode.answers(dom, n)
    assert all(code == 200 for code, _ in answers), answers
    # Within two intervals (and the sample's trip through the channel).
    try:
        wait_for(lambda: domain_hits(api, auth, dom_id) == n, 2 * INTERVAL + 3,
                 f"{n} hits in /metrics/domain.hits/{dom_id}", interval=0.2)
    except AssertionError:
        print(mnode.log()[-6000:])
        print(api.get(f"/metrics/domain.hits/{dom_id}", auth=auth).json())
        import socket
        c = socket.socket(socket.AF_UNIX)
        c.connect(os.path.join(mnode.state, "router", "run", "router-stats.sock"))
        print("STATS", c.recv(65536))
        raise
    time.sleep(2 * INTERVAL)
    assert domain_hits(api, auth, dom_id) == n  # nothing counted twice

    # The Emperor, the vassal and 17 requests used some CPU; memory is in use.
    cpu = metric(api, auth, "cpu", uid)
    assert cpu and sum(v for _, v in cpu) > 0, cpu
    mem = metric(api, auth, "mem", uid)
    assert mem and mem[-1][1] > 0, mem
    rss = metric(api, auth, "mem.rss", uid)
    assert rss and rss[-1][1] > 0 and rss[-1][1] <= mem[-1][1], (rss, mem)

    # A busy vassal: the CPU time of the next intervals grows with it.
    busy = "import time\nend = time.time() + 3\nwhile time.time() < end: pass\n"
    mnode.vassal(uid, "busy.ini", "[uwsgi]\nplugin = 0:python\n"
                 "pyrun = $(HOME)/busy.py\n", files=[("busy.py", busy)])
    t0 = int(time.time())

    def busy_cpu():
        got = [v for t, v in metric(api, auth, "cpu", uid) if t > t0]
        return sum(got) > 0.5e9 and got  # half a second of CPU time at least
    wait_for(busy_cpu, 10, "CPU time of the busy vassal", interval=0.5)
    mnode.check_log()


def test_quota_and_io_of_the_home(mnode, host_distro, ssh_keys):
    api, auth = mnode.api, mnode.auth
    uid = launch(mnode, host_distro, ssh_keys)
    wait_for(lambda: metric(api, auth, "mem", uid), 5, "a first sample")
    if not metric(api, auth, "quota", uid):
        pytest.skip("this node's homes have no quota (quota = off or no loop image)")
    before = metric(api, auth, "quota", uid)[-1][1]
    path = os.path.join(mnode.home(uid), "blob")
    with open(path, "wb") as f:
        f.write(os.urandom(4 << 20))
        f.flush()
        os.fsync(f.fileno())
    wait_for(lambda: metric(api, auth, "quota", uid)[-1][1] >= before + (4 << 20), 5,
             "the 4 MB file in the quota metric", interval=0.2)
    # Written through the home's loop device: its write counter moved as much.
    wait_for(lambda: sum(v for _, v in metric(api, auth, "io.write", uid)) >= 4 << 20, 5,
             "4 MB in io.write", interval=0.2)


def count_samples(api, auth, uid, since, until):
    """Distinct seconds of `mem` samples in [since, until]: one per interval."""
    return len({t for t, _ in metric(api, auth, "mem", uid) if since <= t <= until})


@pytest.fixture
def own_api(monkeypatch):
    """An API of this test's own, restartable on the same port and database:
    yields (api, restart) where restart(down_s) stops it for down_s seconds."""
    d = tempfile.mkdtemp(prefix="imperium-e2e-")
    state = {"api": start_api(d)}
    port = state["api"].port

    def stop():
        stop_api(state["api"])

    def start():
        monkeypatch.setattr(conftest, "free_port", lambda: port)
        a = start_api(d)
        state["api"].proc = a.proc  # the same object for everyone holding it
        return state["api"]

    try:
        yield state["api"], stop, start
    finally:
        try:
            if state["api"].proc.poll() is None:
                stop_api(state["api"])
        finally:
            shutil.rmtree(d, ignore_errors=True)


def test_api_away_for_a_minute_loses_nothing(own_api, ssh_keys):
    api, stop, start = own_api
    node = Node(api, new_base("outbox-"))
    with open(node.conf, "a") as f:
        f.write(f"metrics_interval = {INTERVAL}\n")
    distro = api.new_distro(unique("host-distro-"), path="/")
    try:
        node.start()
        uid = launch(node, distro, ssh_keys)
        wait_for(lambda: metric(api, node.auth, "mem", uid), 5, "a first sample")

        t_stop = int(time.time()) + 1
        stop()
        time.sleep(OUTAGE_S)
        t_back = int(time.time()) - 1
        start()
        # Every interval's sample of the outage arrives (the outbox, in order).
        expected = (t_back - t_stop + 1) // INTERVAL
        wait_for(lambda: count_samples(api, node.auth, uid, t_stop, t_back) >= expected - 2,
                 30, f"{expected} samples of the outage", interval=0.5)
        assert "cannot send to the API" in node.log()
        assert "the API takes the outbox again" in node.log()

        # Away again, and the node restarted meanwhile: the outbox is saved at
        # the clean stop and sent by the next daemon.
        t_stop = int(time.time()) + 1
        stop()
        time.sleep(5)
        node.stop()
        t_back = int(time.time()) - 1
        outbox = os.path.join(node.state, "outbox.json")
        with open(outbox) as f:
            saved = json.load(f)["outbox"]
        assert len(saved) >= 4 and {b["route"] for b in saved} == {"metrics"}, saved
        start()
        node.start()
        expected = (t_back - t_stop + 1) // INTERVAL
        wait_for(lambda: count_samples(api, node.auth, uid, t_stop, t_back) >= expected - 2,
                 30, f"{expected} samples from the saved outbox", interval=0.5)
        assert not os.path.exists(outbox)
        assert "bodies of the last run's outbox reloaded" in node.log()
    finally:
        node.cleanup()
        shutil.rmtree(node.base, ignore_errors=True)


def system_alarms(api, auth, uid, cls):
    r = api.get(f"/alarms/?container={uid}&level=0&class={cls}", auth=auth)
    assert r.status_code == 200, r.text
    return r.json()


def test_oom_kill_raises_a_system_alarm(mnode, host_distro, ssh_keys):
    api, auth = mnode.api, mnode.auth
    uid = launch(mnode, host_distro, ssh_keys)
    first = init_of(uid)
    r = api.post(f"/containers/{uid}", auth=auth, json={"memory": 64})
    assert r.status_code == 200, r.text
    wait_for(lambda: init_of(uid) not in (None, first), 10, "the restart at 64 MB")
    hog = "x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n"
    mnode.vassal(uid, "hog.ini", "[uwsgi]\nplugin = 0:python\npyrun = $(HOME)/hog.py\n",
                 files=[("hog.py", hog)])
    got = wait_for(lambda: system_alarms(api, auth, uid, "oom"), 30, "an OOM alarm",
                   interval=0.5)
    assert "OOM" in got[0]["msg"] and "64 MB" in got[0]["msg"], got
    assert got[0]["level"] == 0
    mnode.vassal(uid, "hog.ini", "[uwsgi]\nplugin = 0:python\n")  # calm it down


def test_crash_loop_raises_one_alarm(mnode, api, ssh_keys):
    missing = os.path.join(mnode.base, "distros", "nope")
    broken = api.new_distro(path=missing)
    uid = mnode.new_container()
    mnode.post(uid, {"distro": broken["id"]})
    mnode.post(uid, {"ssh_keys": [ssh_keys[0]]})
    # 5 failed starts: 1 + 2 + 4 + 8 s of backoff between them.
    got = wait_for(lambda: system_alarms(api, mnode.auth, uid, "crashloop"), 30,
                   "a crashloop alarm", interval=0.5)
    assert "failed 5 times in a row" in got[0]["msg"] and "missing" in got[0]["msg"], got
    time.sleep(17)  # the 6th failure (16 s later) does not alarm again
    assert len(system_alarms(api, mnode.auth, uid, "crashloop")) == 1
