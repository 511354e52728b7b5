"""Issue 12, the node's side: what a customer can change (their home, a
distro tree they can write) never redirects what the node or the setuid
ssh helper does as root; a deleted container's home goes out of reach and
is never handed to another container; a custom distro of another customer
is refused.

Runs as root with the real daemon (tests/e2e/nodeutil.py's node, conftest.py's
make_node and cleanup).  Tests that start containers must hold
/tmp/imperium-node-e2e.lock when several people share the machine."""

import os
import shutil
import subprocess
import time

import pytest

from conftest import BIN, unique
from helpers import mount_lines, procs_of_uid, wait_for
from nodeutil import NEEDS_CONTAINERS, running
from sshutil import SSH_BIN

pytestmark = [*NEEDS_CONTAINERS, pytest.mark.usefixtures("subreaper")]


@pytest.fixture
def make_node(make_node):
    """Nodes with `quota = off`: these tests rearrange a stopped container's
    home on the host as its customer could, which with the default quota
    (an image, unmounted while stopped) is possible only from inside; the
    same checks (home.c) guard both, and test_quota.py covers the images'
    retirement and purge."""
    def make(*args, start=True, **kwargs):
        n = make_node(*args, start=False, **kwargs)
        with open(n.conf, "a") as f:
            f.write("quota = off\n")
        if start:
            n.start()
        return n
    return make


def host_dir(path, mode=0o750):
    """A root-owned directory standing for a host path a customer would
    like the node to act on."""
    os.makedirs(path)
    os.chmod(path, mode)
    st = os.stat(path)
    return (st.st_uid, st.st_gid, st.st_mode)


def same_dir(path, before):
    st = os.stat(path)
    return (st.st_uid, st.st_gid, st.st_mode) == before and not os.listdir(path)


def deleted_entries(node):
    d = os.path.join(node.containers, ".deleted")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


# ---- a home a customer made with symlinks to host paths ------------------------

def stopped_home(node, distro, key):
    """A container that ran once (its home is recorded as its own), then
    stopped (keys removed): its home is the customer's to rearrange."""
    uid = node.new_container()
    node.launch(uid, distro, key)
    node.post(uid, {"ssh_keys": []})
    wait_for(lambda: not procs_of_uid(uid), 15, "the container stopped")
    node.wait_status(uid, state="stopped")
    return uid, node.home(uid)


def plant_link(home, name, target):
    """As the customer would: the directory replaced by a link."""
    path = os.path.join(home, name)
    if os.path.isdir(path) and not os.path.islink(path):
        os.rename(path, path + ".moved")
    os.symlink(target, path)


@pytest.mark.parametrize("name", ["logs", "etc", ".ssh", "run", "tmp"])
def test_a_symlinked_home_directory_is_refused_not_followed(make_node, host_distro, ssh_keys,
                                                            name):
    node = make_node()
    uid, home = stopped_home(node, host_distro, ssh_keys[0])
    target = os.path.join(node.base, "host-target")
    before = host_dir(target)
    plant_link(home, name, target)
    mounts = mount_lines()
    node.post(uid, {"ssh_keys": [ssh_keys[1]]})
    st = node.wait_status(uid, state="failed")
    assert f"home: {name} is not a directory (a symbolic link)" in st["last_error"]
    assert not procs_of_uid(uid)
    assert same_dir(target, before), "the node acted on the symlink's target"
    assert not [m for m in mount_lines() - mounts if target in m]
    assert os.path.islink(os.path.join(home, name))


def test_lenient_symlinks_are_left_alone(make_node, host_distro, ssh_keys):
    node = make_node()
    uid, home = stopped_home(node, host_distro, ssh_keys[0])
    targets = {}
    for name in ("vassals", "distros"):
        t = os.path.join(node.base, f"host-{name}")
        targets[t] = host_dir(t)
        plant_link(home, name, t)
    mounts = mount_lines()
    node.post(uid, {"ssh_keys": [ssh_keys[1]]})
    wait_for(lambda: running(uid), 10, "the container running")
    for t, before in targets.items():
        assert same_dir(t, before), t
        assert not [m for m in mount_lines() - mounts if t in m]


# ---- deleted containers: homes out of reach, never adopted ----------------------

def test_deleting_moves_the_home_out_of_reach_until_purged(make_node, host_distro,
                                                           ssh_keys):
    node = make_node()
    uid = node.new_container()
    node.launch(uid, host_distro, ssh_keys[0])
    home = node.home(uid)
    with open(os.path.join(home, "secret.txt"), "w") as f:
        f.write("customer data")
    owner = os.path.join(node.containers, ".owners", str(uid))
    with open(owner) as f:
        assert f.read().strip() == node.container(uid)["uuid"]
    assert os.stat(os.path.dirname(owner)).st_mode & 0o777 == 0o700

    # No keys: stopped, not deleted: the home stays where it is.
    node.post(uid, {"ssh_keys": []})
    wait_for(lambda: not procs_of_uid(uid), 15, "the container stopped")
    node.wait_status(uid, state="stopped")
    time.sleep(0.5)
    assert os.path.exists(os.path.join(home, "secret.txt"))
    assert deleted_entries(node) == []

    # Deleted: the home moves to .deleted/<uid>-<time>, root-only.
    t0 = int(time.time())
    node.api.admin("DELETE", f"/containers/{uid}", expect=200)
    wait_for(lambda: not os.path.exists(home), 10, "the home moved away")
    (entry,) = deleted_entries(node)
    name, when = entry.split("-")
    assert name == str(uid) and t0 - 1 <= int(when) <= time.time() + 1
    d = os.path.join(node.containers, ".deleted")
    st = os.stat(d)
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o700)
    with open(os.path.join(d, entry, "secret.txt")) as f:
        assert f.read() == "customer data"
    assert not os.path.exists(owner)
    wait_for(lambda: "its home moved to" in node.log(), 5, "the move logged")
    # Out of reach for the uid (and for every customer): .deleted is 0700 root.
    p = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                        "ls", os.path.join(d, entry)], capture_output=True, text=True)
    assert p.returncode != 0 and "Permission denied" in p.stderr

    # A customer's symlink inside the retired home is removed, not followed.
    outside = os.path.join(node.base, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "keep"), "w") as f:
        f.write("x")
    os.symlink(outside, os.path.join(d, entry, "link"))
    os.makedirs(os.path.join(d, entry, *["deep"] * 100))
    time.sleep(1.1)  # the purge takes what was retired strictly before now
    node.api.admin("POST", f"/servers/{node.server['name']}/purge_deleted",
                   {"older_than": 0}, expect=200)
    try:
        wait_for(lambda: deleted_entries(node) == [], 10, "the deleted home purged")
    except AssertionError:
        raise AssertionError(node.log()[-3000:] + str(deleted_entries(node)))
    assert os.path.exists(os.path.join(outside, "keep"))


def test_a_home_of_another_or_of_nobody_is_never_adopted(make_node, host_distro,
                                                         ssh_keys):
    node = make_node()
    uid = node.new_container()
    node.post(uid, {"distro": host_distro["id"]})
    home = node.home(uid)
    # Left over from an earlier container of this uid, unknown to the node.
    os.makedirs(os.path.join(home, "vassals"))
    with open(os.path.join(home, "old-data.txt"), "w") as f:
        f.write("someone else's")
    os.chown(home, uid, uid)
    node.post(uid, {"ssh_keys": [ssh_keys[0]]})
    wait_for(lambda: running(uid), 10, "the container running")
    assert not os.path.exists(os.path.join(home, "old-data.txt"))
    (entry,) = deleted_entries(node)
    assert os.path.exists(os.path.join(node.containers, ".deleted", entry, "old-data.txt"))
    assert "was not container" in node.log()

    # A record naming another container: moved aside too, at the next start.
    with open(os.path.join(home, "mine.txt"), "w") as f:
        f.write("x")
    with open(os.path.join(node.containers, ".owners", str(uid)), "w") as f:
        f.write("00000000-0000-4000-8000-000000000000\n")
    node.post(uid, {"memory": 300})  # a new generation: restarted
    wait_for(lambda: len(deleted_entries(node)) == 2, 15, "the second home moved aside")
    wait_for(lambda: running(uid), 10, "the container running again")
    assert not os.path.exists(os.path.join(home, "mine.txt"))


def test_a_home_from_before_the_records_is_kept_on_upgrade(make_node, host_distro,
                                                           ssh_keys):
    node = make_node()
    uid = node.new_container()
    node.launch(uid, host_distro, ssh_keys[0])
    home = node.home(uid)
    with open(os.path.join(home, "data.txt"), "w") as f:
        f.write("keep me")
    # As a node from before this change left it: no record.
    os.unlink(os.path.join(node.containers, ".owners", str(uid)))
    node.post(uid, {"memory": 300})
    wait_for(lambda: os.path.exists(os.path.join(node.containers, ".owners", str(uid))), 15,
             "the home recorded")
    wait_for(lambda: running(uid), 10, "the container running again")
    assert os.path.exists(os.path.join(home, "data.txt"))
    assert deleted_entries(node) == []
    assert "home from before ownership records" in node.log()


# ---- custom distros: only the same customer's, on this server --------------------

def test_a_custom_distro_of_another_customer_is_refused(make_node, host_distro, ssh_keys):
    """The API never sends such a state; the node checks anyway (a state
    from a compromised or buggy API, or saved before a holder was deleted).
    The daemon is fed the state through its saved desired state, with the
    API unreachable."""
    node = make_node(start=False)
    holder, booter = 39001, 39002
    distro = os.path.join(node.containers, str(holder), "distros", "x")
    os.makedirs(distro)
    state = {
        "version": "test",
        "server": {"name": node.server["name"], "all_containers": [
            {"uid": holder, "uuid": "h", "customer": "customer-a"},
            {"uid": booter, "uuid": "b", "customer": "customer-b"}]},
        "containers": [{
            "uid": booter, "uuid": "b", "hostname": "b", "memory": 128, "generation": 1,
            "ssh_generation": 1, "ssh_keys": [ssh_keys[0]],
            "customer": {"uuid": "customer-b"},
            "rootfs": {"kind": "custom", "id": 7, "holder_uid": holder, "path": "x",
                       "holder_customer": "customer-a"}}],
        "domains": [], "portmappings": [], "legions": []}
    node.start_from_saved(state)
    wait_for(lambda: "refusing to boot it" in node.log(), 15, "the refusal")
    assert "container 39001, is not a container of the same customer" in node.log()
    time.sleep(0.5)
    assert not procs_of_uid(booter)
    assert not os.path.exists(os.path.join(node.containers, str(booter)))
    node.stop()


# ---- imperium-enter: the session's /run cannot be swapped under it ----------------

MERGED = ("/bin/", "/sbin/", "/lib/", "/lib64/")


def small_distro(path, uid):
    """A distro of hard links to the host's files (sh, bash, cat, id,
    uwsgi and their libraries), whose top directory belongs to the
    container's uid: like a custom distro, the customer can rename and
    replace its entries (`run`) at any moment."""
    files = set()
    # imperium-init is exec'd from the node's file, but its libraries are
    # looked up in the distro.
    init = [os.path.join(BIN, "imperium-init")] if os.path.exists(
        os.path.join(BIN, "imperium-init")) else []
    for b in ("/bin/sh", "/bin/bash", "/bin/cat", "/bin/grep", "/usr/bin/id", "/usr/bin/true",
              "/usr/bin/uwsgi", *init):
        if b not in init:
            files.add(b)
        out = subprocess.run(["ldd", os.path.realpath(b)], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            for word in line.split():
                if word.startswith("/"):
                    files.add(word)
    for f in files:
        inside = "/usr" + f if f.startswith(MERGED) else f
        dest = path + inside
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not os.path.exists(dest):
            os.link(os.path.realpath(f), dest)
    for d in ("bin", "sbin", "lib", "lib64"):
        os.makedirs(os.path.join(path, "usr", d), exist_ok=True)
        os.symlink(f"usr/{d}", os.path.join(path, d))
    for d in ("etc", "run", "proc", "dev", "tmp", "var/tmp", "var/log", "usr/local",
              "containers"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")
    os.chown(path, uid, uid)
    os.chmod(path, 0o755)


def racer(path, uid, stop):
    """As the uid: swap the distro's run/ for a symlink to /proc (the
    container's own proc: a remount that follows it shows, and harms no
    host filesystem) and back, as fast as possible, until told to stop."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            run, real = os.path.join(path, "run"), os.path.join(path, "run.real")
            deadline = time.monotonic() + 60
            while not os.path.exists(stop) and time.monotonic() < deadline:
                try:
                    os.rename(run, real)
                    os.symlink("proc", run)
                    time.sleep(0.0001)
                    os.unlink(run)
                    os.rename(real, run)
                    time.sleep(0.0001)
                except OSError:
                    pass
        finally:
            os._exit(0)
    return pid


def super_options(pid):
    """mount point -> superblock options, as process pid sees its mounts."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return {line.split()[4]: line.split(" - ")[1].split()[2] for line in f}


def test_sessions_racing_a_swapped_run_remount_nothing(make_node, ssh_keys, api, tmp_path):
    node = make_node()
    uid = node.new_container()
    distro_dir = os.path.join(node.base, "racy-distro")
    small_distro(distro_dir, uid)
    distro = api.new_distro(unique("racy-"), path=distro_dir)
    node.post(uid, {"distro": distro["id"]})
    node.post(uid, {"ssh_keys": [ssh_keys[0]]})
    try:
        init = wait_for(lambda: running(uid), 10, "the container running")[0]
    except AssertionError:
        raise AssertionError(str(node.status(uid)) + node.log()[-2000:])

    # imperium-enter as installed (setuid root) with its config file, in a
    # mount namespace of our own where /etc is an overlay (the host's /etc
    # is left alone).
    d = os.path.join(node.base, "enter")
    for sub in ("etc-upper/imperium", "etc-work", "bin"):
        os.makedirs(os.path.join(d, sub))
    enter = os.path.join(d, "bin", "imperium-enter")
    shutil.copy(os.path.join(SSH_BIN, "imperium-enter"), enter)
    os.chown(enter, 0, 0)
    os.chmod(enter, 0o4755)
    with open(os.path.join(d, "etc-upper", "imperium", "ssh.conf"), "w") as f:
        f.write(f"containers_dir = {node.containers}\nstate_dir = {node.state}\n")
    sessions = 80
    script = (f"set -e; mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/etc-upper,"
              f"workdir={d}/etc-work /etc; set +e; i=0; while [ $i -lt {sessions} ]; do "
              f"setpriv --reuid={uid} --regid={uid} --clear-groups {enter} -c "
              f"'cat /etc/passwd | grep -c ^{uid}: ; id -un' > {d}/out.$i 2>&1; "
              f"echo $? >> {d}/rc; i=$((i+1)); done")

    host_before = mount_lines()
    container_before = super_options(init)
    stop = os.path.join(str(tmp_path), "stop")
    pid = racer(distro_dir, uid, stop)
    try:
        p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                           capture_output=True, text=True, timeout=300)
    finally:
        open(stop, "w").close()
        os.waitpid(pid, 0)
    assert p.returncode == 0, p.stderr

    # No filesystem was remounted: the host's mounts are the same lines,
    # and so are the superblock options the container sees (its /proc
    # included, where the symlink pointed).
    assert mount_lines() == host_before
    assert super_options(init) == container_before
    assert super_options(init)["/proc"].startswith("rw")

    # Every session either worked (its passwd line, its name) or failed
    # cleanly with a message.
    with open(os.path.join(d, "rc")) as f:
        rcs = [int(x) for x in f.read().split()]
    assert len(rcs) == sessions
    worked = 0
    for i, rc in enumerate(rcs):
        with open(os.path.join(d, f"out.{i}")) as f:
            out = f.read()
        if rc == 0:
            assert out.split() == ["1", str(uid)], out
            worked += 1
        else:
            assert "imperium-enter:" in out or "not running" in out, out
    assert worked > 0
    assert running(uid)
