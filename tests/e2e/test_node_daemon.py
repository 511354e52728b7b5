"""The imperium-node daemon against the real imperium-api: a customer's API
calls start, restart, re-key and stop real containers (the `host` distro,
the node's own root read-only), and `status` says what runs.

Runs as root.  Every test has its own node directory under build/e2e-node/
(not /tmp: inside a container /tmp is the home's tmp/), its own server in
the API and its own daemon; the cleanup stops the daemon, runs `stop-all`,
kills whatever is left of the test's uids, removes their cgroups and checks
that no mount leaked onto the host, even when the test failed.

Timing bounds are the issue's ("within 1 second"), measured from the moment
the API call returned, polling rather than sleeping."""

import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

import conftest
from conftest import start_api, stop_api
from helpers import proc_status, procs_of_uid, wait_for
from nodeutil import (NEEDS_CONTAINERS, NODE, MiB, cgroup_dirs, init_of, memory_limit,
                      running)

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]


# ---- the tests -----------------------------------------------------------------

def test_distro_and_keys_start_an_isolated_container(make_node, host_distro, ssh_keys):
    node = make_node()
    a, b = node.new_container(memory=200), node.new_container()
    # Nothing runs before the container is startable.
    node.post(a, {"distro": host_distro["id"]})
    time.sleep(0.3)
    assert init_of(a) is None
    assert node.status(a)["state"] == "stopped"
    t = node.post(a, {"ssh_keys": [ssh_keys[0]]})
    init, emperor = wait_for(lambda: running(a), 1.0, "the Emperor within 1 s of the 2nd call")
    assert time.monotonic() - t <= 1.05

    # uid 30000+id everywhere, no capabilities, namespaces of its own.
    for pid in (init, emperor):
        s = proc_status(pid)
        assert s["Uid"].split() == [str(a)] * 4 and s["Gid"].split() == [str(a)] * 4
        assert int(s["CapEff"], 16) == 0 and int(s["CapBnd"], 16) == 0
    for ns in ("mnt", "pid", "uts", "ipc", "net", "cgroup"):
        assert os.readlink(f"/proc/{emperor}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    # The memory limit in its cgroup, the Emperor in it.
    limit, cg = memory_limit(a)
    assert limit == 200 * MiB
    with open(f"{cg}/cgroup.procs") as f:
        assert emperor in [int(x) for x in f.read().split()]
    node.wait_status(a, state="running", restarts=0, last_error=None)

    # A second container: its home must stay out of reach of the first.
    node.launch(b, host_distro, ssh_keys[1])
    with open(os.path.join(node.home(b), "secret.txt"), "w") as f:
        f.write("b's secret\n")
    os.chown(os.path.join(node.home(b), "secret.txt"), b, b)
    other = [node.home(b), f"/containers/{b}", os.path.join(node.state, str(b))]
    other_files = [os.path.join(node.home(b), "secret.txt"), f"/containers/{b}/secret.txt"]

    # A vassal dropped into vassals/ runs inside the container.
    r = node.deploy_probe(a, other, other_files)
    assert r["uid"] == a and r["gid"] == a and r["id_u"] == str(a)
    assert r["hostname"] == node.container(a)["hostname"]
    # The distro is / and read-only; the home is writable.
    assert r["write_usr"] == "EROFS" and r["write_root"] == "EROFS"
    assert "ro" in r["root_opts"].split(",")
    assert r["write_home"] == "ok"
    assert open(os.path.join(node.home(a), "probe-write")).read() == "x"
    # Only its own processes: no host process (pytest, the daemon, the API).
    assert 1 in r["pids"] and len(r["pids"]) < 12, r["pids"]
    assert set(r["comms"]) <= {"imperium-init", "uwsgi", "uwsgi-core", "id", "?"}, r["comms"]
    # Another container's home: neither listed nor readable.
    assert r["containers"] == [str(a)]
    assert all(v == "ENOENT" for v in r["other"].values()), r["other"]
    assert all(v == "ENOENT" for v in r["other_files"].values()), r["other_files"]
    log = open(os.path.join(node.home(a), "logs", "emperor.log")).read()
    assert "[emperor] vassal probe.ini has been spawned" in log


def test_reboot_memory_and_keys(make_node, host_distro, ssh_keys):
    node = make_node()
    uid = node.new_container(memory=200)
    init, _ = node.launch(uid, host_distro, ssh_keys[0])
    node.wait_status(uid, state="running")

    # reboot: a new init within 1 s.
    t = node.post(uid, {"reboot": 1})
    init2, _ = wait_for(lambda: (r := running(uid)) and r[0] != init and r, 1.0,
                        "the rebooted container within 1 s")
    assert time.monotonic() - t <= 1.05
    assert not os.path.exists(f"/proc/{init}") or proc_status(init)["State"][0] == "Z"
    assert memory_limit(uid)[0] == 200 * MiB

    # memory: restarted with the new limit.
    t = node.post(uid, {"memory": 300})
    init3, _ = wait_for(lambda: (r := running(uid)) and r[0] != init2 and r, 1.0,
                        "the restart for the new memory")
    assert memory_limit(uid)[0] == 300 * MiB
    st = node.wait_status(uid, state="running")
    assert st["restarts"] == 0  # restarts count deaths, not requested restarts

    # ssh_keys only: the keys are rewritten, the container keeps running.
    keys_file = os.path.join(node.home(uid), ".ssh", "uwsgi_authorized_keys")
    assert open(keys_file).read() == ssh_keys[0] + "\n"
    t = node.post(uid, {"ssh_keys": [ssh_keys[1], ssh_keys[2]]})
    want = ssh_keys[1] + "\n" + ssh_keys[2] + "\n"
    wait_for(lambda: open(keys_file).read() == want, 1.0, "the keys rewritten within 1 s")
    s = os.stat(keys_file)
    assert (s.st_uid, s.st_mode & 0o777) == (uid, 0o600)
    time.sleep(0.5)
    assert running(uid)[0] == init3
    assert "ssh keys rewritten" in node.log()


def test_removing_keys_or_deleting_stops_and_keeps_the_home(make_node, host_distro, ssh_keys):
    node = make_node()
    uid = node.new_container()
    node.launch(uid, host_distro, ssh_keys[0])
    node.deploy_probe(uid)
    home = node.home(uid)

    # No keys: not startable, stopped; the home stays.
    node.post(uid, {"ssh_keys": []})
    wait_for(lambda: not procs_of_uid(uid), 15, "every process of the container gone")
    # The node removes the cgroups as part of the stop, before it reports
    # "stopped" (the last process can be gone a moment before that).
    node.wait_status(uid, state="stopped")
    assert not any(os.path.exists(d) for d in cgroup_dirs(uid))
    # The home stays: in its disk image, unmounted while the container is
    # stopped (docs/NODE.md "Disk quota").
    assert not os.path.ismount(home)
    assert os.path.isfile(os.path.join(node.containers, ".images", f"{uid}.ext4"))

    # Keys again: it starts again, with the same home.
    t = node.post(uid, {"ssh_keys": [ssh_keys[1]]})
    wait_for(lambda: running(uid), 1.0, "the container back within 1 s")
    assert time.monotonic() - t <= 1.05
    node.wait_status(uid, state="running")
    assert os.path.exists(os.path.join(home, "probe.json"))
    assert os.path.exists(os.path.join(home, "vassals", "probe.ini"))

    # Deleted by the supplier: stopped, the home kept on disk but moved out
    # of reach (<containers>/.deleted/<uid>-<time>, test_security_node.py).
    node.api.admin("DELETE", f"/containers/{uid}", expect=200)
    wait_for(lambda: not procs_of_uid(uid), 15, "the deleted container stopped")
    # The home moves once the stop (cgroups included) is over.
    wait_for(lambda: not os.path.exists(home), 5, "the home moved away")
    assert not any(os.path.exists(d) for d in cgroup_dirs(uid))
    # Its disk image goes beside it (docs/NODE.md "Disk quota"), files in it.
    deleted = os.path.join(node.containers, ".deleted")
    entry, image = sorted(os.listdir(deleted))
    assert image == entry + ".ext4"
    ls = subprocess.run(["debugfs", "-R", "ls /", os.path.join(deleted, image)],
                        capture_output=True, text=True, timeout=30)
    assert "probe.json" in ls.stdout, ls
    assert "no longer wanted here" in node.log()


def test_kill_9_of_init_restarts_it(make_node, host_distro, ssh_keys):
    node = make_node()
    uid = node.new_container()
    init, _ = node.launch(uid, host_distro, ssh_keys[0])
    node.wait_status(uid, state="running", restarts=0)
    os.kill(init, signal.SIGKILL)
    new, _ = wait_for(lambda: (r := running(uid)) and r[0] != init and r, 10,
                      "the container back after kill -9")
    st = node.wait_status(uid, state="running", restarts=1)
    assert st["last_error"] is None
    log = node.log()
    assert f"init {init} was killed by signal 9" in log and "restarting it in 1 s" in log
    assert f"restarted after its init died (init pid {new}, restart 1)" in log


def test_restarting_the_daemon_adopts_running_containers(make_node, host_distro, ssh_keys):
    node = make_node()
    a, b = node.new_container(), node.new_container()
    node.launch(a, host_distro, ssh_keys[0])
    node.launch(b, host_distro, ssh_keys[1])
    before = {uid: running(uid) for uid in (a, b)}

    # stop-all is refused while the daemon runs (it would restart them).
    p = node.run("stop-all", "--config", node.conf)
    assert p.returncode == 1 and "daemon is running" in p.stderr, p.stderr

    # SIGTERM (again and again while it shuts down): the daemon exits 0,
    # the containers keep running.
    node.stop(again=True)
    assert "the containers keep running" in node.log()
    assert {uid: running(uid) for uid in (a, b)} == before
    node.start()
    assert "container %d: adopted (init pid %d" % (a, before[a][0]) in node.log()
    time.sleep(1.5)
    assert {uid: running(uid) for uid in (a, b)} == before
    node.wait_status(a, state="running", restarts=0)

    # The new daemon watches what it adopted: a change is applied, a death
    # of an init that is not its child is seen and repaired.
    keys_file = os.path.join(node.home(a), ".ssh", "uwsgi_authorized_keys")
    node.post(a, {"ssh_keys": [ssh_keys[2]]})
    wait_for(lambda: open(keys_file).read() == ssh_keys[2] + "\n", 1.0, "keys rewritten")
    assert running(a) == before[a]
    os.kill(before[b][0], signal.SIGKILL)
    wait_for(lambda: (r := running(b)) and r[0] != before[b][0], 10, "b back after kill -9")
    node.wait_status(b, state="running", restarts=1)
    assert running(a) == before[a]


def test_api_outage_keeps_containers_running(make_node, ssh_keys, monkeypatch):
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-outage-") as d:
        api = start_api(d)
        node = None
        try:
            distro = api.new_distro(path="/")
            node = make_node(api)
            uid = node.new_container()
            init, emperor = node.launch(uid, distro, ssh_keys[0])
            node.wait_status(uid, state="running")
            port = api.port
            stop_api(api)

            # Ten seconds without the API: nothing changes on the node.
            t_end = time.monotonic() + 10
            while time.monotonic() < t_end:
                assert running(uid) == (init, emperor)
                time.sleep(0.5)
            assert node.proc.poll() is None
            warnings = [l for l in node.log().splitlines() if "cannot get the node state" in l]
            assert len(warnings) == 1, warnings  # logged once per outage

            # The API returns (same port, same database): a change made right
            # away is applied within 1 s.
            monkeypatch.setattr(conftest, "free_port", lambda: port)
            api = start_api(d)
            node.api = api
            keys_file = os.path.join(node.home(uid), ".ssh", "uwsgi_authorized_keys")
            t = node.post(uid, {"ssh_keys": [ssh_keys[1]]})
            wait_for(lambda: open(keys_file).read() == ssh_keys[1] + "\n", 1.0,
                     "a change right after the API returned, applied within 1 s")
            assert time.monotonic() - t <= 1.05
            assert running(uid) == (init, emperor)
            node.wait_status(uid, state="running", restarts=0)
            assert "the API answers again" in node.log()
        finally:
            try:
                if node:
                    node.cleanup()  # the node before its API
            finally:
                stop_api(api)


def test_a_daemon_started_during_an_api_outage_follows_the_saved_state(make_node, ssh_keys):
    """The daemon saves every desired state: one restarted while the API is
    down adopts its containers and, after 2 s without an answer, follows the
    saved state, so a container that dies is restarted anyway."""
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-saved-") as d:
        api = start_api(d)
        node = None
        try:
            distro = api.new_distro(path="/")
            node = make_node(api)
            uid = node.new_container()
            init, _ = node.launch(uid, distro, ssh_keys[0])
            node.wait_status(uid, state="running")
            saved = os.path.join(node.state, "desired.json")
            assert oct(os.stat(saved).st_mode & 0o777) == "0o600"
            assert any(c["uid"] == uid for c in json.load(open(saved))["containers"])
            node.stop()
            stop_api(api)
            node.start()
            wait_for(lambda: "following the last one saved" in node.log(), 10,
                     "the daemon falling back on the saved state")
            os.kill(init, signal.SIGKILL)
            wait_for(lambda: (r := running(uid)) and r[0] != init, 10,
                     "the container restarted with the API still down")
            # The daemon logs the restart right after container_start returns,
            # which is after the new Emperor exists: wait for the line.
            wait_for(lambda: "restarted after its init died" in node.log(), 5,
                     "the daemon logging the restart")
        finally:
            try:
                if node:
                    node.cleanup()
            finally:
                stop_api(api)


def test_the_node_state_is_read_field_by_field(make_node, ssh_keys):
    """The node reads the API's state through its spec module (spec.c): a
    field it does not know is logged once by name (not once per container
    or per state) and ignored; a container whose field has the wrong type
    is refused with the field's name while the others are still used; a
    wrongly typed domain is dropped (logged once) and the rest applies."""
    node = make_node(start=False)
    bad, good = 39101, 39102
    missing = os.path.join(node.base, "distros", "nope")
    container = {"hostname": "h", "memory": 128, "generation": 1, "ssh_generation": 1,
                 "ssh_keys": [ssh_keys[0]], "customer": {"uuid": "customer-a"},
                 "rootfs": {"kind": "distro", "id": 1, "path": missing},
                 "ipv9": "a field of a newer API"}
    node.start_from_saved({
        "version": "test", "server": {"name": node.server["name"], "future": True},
        "containers": [{**container, "uid": bad, "uuid": "b", "memory": "big"},
                       {**container, "uid": good, "uuid": "g"}],
        "domains": [{"name": 5}], "portmappings": [], "legions": []})
    wait_for(lambda: f"container {good}: start: distro directory {missing} missing"
             in node.log(), 15, "the good container tried")
    log = node.log()
    assert (f"container {bad}: the API's description cannot be used: spec: memory must be "
            "an integer") in log
    assert f"container {bad}: start" not in log
    assert log.count("unknown field server.future ignored") == 1, log
    assert log.count("unknown field containers[].ipv9 ignored") == 1, log
    assert log.count("node state: domains[].name must be a string: that element is "
                     "dropped") == 1, log
    assert not procs_of_uid(bad) and not procs_of_uid(good)
    node.stop()


def test_status_says_why_a_container_cannot_start(make_node, host_distro, ssh_keys, api):
    node = make_node()
    missing = os.path.join(node.base, "distros", "nope")
    broken = api.new_distro(path=missing)
    uid = node.new_container()
    node.post(uid, {"distro": broken["id"]})
    node.post(uid, {"ssh_keys": [ssh_keys[0]]})
    st = node.wait_status(uid, state="failed")
    assert f"distro directory {missing} missing" in st["last_error"], st
    assert not procs_of_uid(uid)
    assert f"container {uid}: start: distro directory {missing} missing" in node.log()

    # Fixing the distro (a new generation) starts it at once.
    t = node.post(uid, {"distro": host_distro["id"]})
    wait_for(lambda: running(uid), 1.0, "the container with a good distro")
    assert time.monotonic() - t <= 1.05
    node.wait_status(uid, state="running", last_error=None)


def test_the_host_distro_needs_distro_host_ok(make_node, host_distro, ssh_keys):
    node = make_node(host_ok=False)
    uid = node.new_container()
    node.post(uid, {"distro": host_distro["id"]})
    node.post(uid, {"ssh_keys": [ssh_keys[0]]})
    st = node.wait_status(uid, state="failed")
    assert "distro_host_ok" in st["last_error"], st
    assert not procs_of_uid(uid)


def test_config_errors_are_reported(tmp_path):
    conf = tmp_path / "node.conf"
    good = ("api_url = http://127.0.0.1:1\nserver_name = s\nsecret = x\n"
            f"state_dir = {tmp_path}/state\ncontainers_dir = {tmp_path}/c\n")
    for text, msg in [(good + "colour = blue\n", "unknown setting 'colour'"),
                      (good.replace("secret = x\n", ""), "secret"),
                      (good.replace("http://", "ftp://"), "api_url"),
                      (good + "distro_host_ok = maybe\n", "distro_host_ok"),
                      (good.replace(f"state_dir = {tmp_path}", "state_dir = rel"), "absolute")]:
        conf.write_text(text)
        p = subprocess.run([NODE, "run", "--config", str(conf)], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 1 and msg in p.stderr, (text, p.stderr)
    p = subprocess.run([NODE, "run"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--config" in p.stderr
