"""The disk quota (issue 16, docs/NODE.md "Disk quota"): each home is an ext4
image of `storage` MB loop-mounted nosuid,nodev on <containers_dir>/<uid>.
Real containers (nodeutil), ssh through the test sshd (sshutil)."""

import hashlib
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from helpers import wait_for
from nodeutil import NEEDS_CONTAINERS, fresh_box, init_of, running
from sshutil import SSHD, Sshd, ok

pytestmark = [*NEEDS_CONTAINERS,
              pytest.mark.skipif(not os.path.exists(SSHD), reason="needs openssh-server"),
              pytest.mark.usefixtures("subreaper")]

MiB = 1024 * 1024


def image(node, uid):
    return os.path.join(node.containers, ".images", f"{uid}.ext4")


def loops_of(path):
    """`losetup -j IMAGE`: the loop devices backed by that file."""
    p = subprocess.run(["losetup", "-j", path], capture_output=True, text=True, timeout=10)
    return p.stdout.strip()


def mounts_on(path):
    """How many mounts sit on path in this (the host's) mount namespace."""
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] == path)


def fs_size(path):
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def set_conf(node, key, value):
    with open(node.conf) as f:
        lines = [line for line in f if not line.startswith(f"{key} =")]
    lines.append(f"{key} = {value}\n")
    with open(node.conf, "w") as f:
        f.writelines(lines)


def restart_generation(node, uid):
    return node.api.admin("GET", f"/containers/{uid}").json()["generation"]


def df_size_mb(text):
    """The Size column of `df -h`'s one line (e.g. 15M) in MB."""
    line = text.strip().splitlines()[-1].split()
    m = re.fullmatch(r"([0-9.]+)([KMG])", line[1])
    assert m, text
    return float(m.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024}[m.group(2)]


def test_writing_past_storage_fails_inside_only(node_sshd, host_distro, keypairs):
    node, sshd = node_sshd
    key, pub = keypairs[0]
    small = fresh_box(node, host_distro, pub, storage=24)
    other = fresh_box(node, host_distro, pub, storage=200)
    home = node.home(small)
    # The home is the image, mounted nosuid,nodev on the host.
    assert os.path.ismount(home)
    with open("/proc/self/mountinfo") as f:
        opts = next(line for line in f if line.split()[4] == home).split()[5]
    assert {"nosuid", "nodev"} <= set(opts.split(",")), opts
    assert loops_of(image(node, small))
    # dd past 24 MB: "No space left on device", inside the container.
    p = sshd.ssh(key, small, "dd if=/dev/zero of=$HOME/big bs=1M count=40")
    assert p.returncode != 0
    assert "No space left on device" in p.stderr, p.stderr
    # The other container on the node writes 30 MB without trouble.
    ok(sshd.ssh(key, other, "dd if=/dev/zero of=$HOME/big bs=1M count=30 && sync"))
    assert os.path.getsize(os.path.join(node.home(other), "big")) == 30 * MiB
    # quota -s shows the usage and the 24 MB limit; df -h ~ the home's size.
    out = ok(sshd.ssh(key, small, "quota -s"))
    assert f"Disk quotas for user {small} (uid {small}):" in out, out
    row = out.strip().splitlines()[-1].split()
    assert row[0] == f"/containers/{small}" and row[2] == "24M" and row[3] == "24M", out
    used = float(row[1].rstrip("KMG"))
    assert row[1].endswith("M") and 14 <= used <= 24, out
    df = ok(sshd.ssh(key, small, "df -h ~"))
    assert 12 <= df_size_mb(df) <= 24, df
    # A login shell's /etc/profile sets PATH anew: the command is still found.
    out = ok(sshd.ssh(key, small, "bash -lc 'command -v quota'"))
    assert out.strip() == "/run/imperium/bin/quota", out


def test_raising_storage_grows_the_home_across_the_restart(node_sshd, host_distro, keypairs):
    node, sshd = node_sshd
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub, storage=32)
    home = node.home(uid)
    ok(sshd.ssh(key, uid, "head -c 5000000 /dev/urandom > ~/keep && mkdir -p ~/d && "
                          "echo hi > ~/d/f"))
    digest = sha(os.path.join(home, "keep"))
    before = fs_size(home)
    assert before <= 32 * MiB
    gen = restart_generation(node, uid)
    node.post(uid, {"storage": 96})
    wait_for(lambda: restart_generation(node, uid) > gen, 5, "the generation bump")
    wait_for(lambda: running(uid) and os.path.ismount(home) and
             64 * MiB < fs_size(home) <= 96 * MiB, 30, "the restart on the grown home")
    assert os.path.getsize(image(node, uid)) == 96 * MiB
    assert sha(os.path.join(home, "keep")) == digest
    out = ok(sshd.ssh(key, uid, "cat ~/d/f; quota -s; df -h ~"))
    assert out.startswith("hi\n")
    assert " 96M " in out, out
    assert 80 <= df_size_mb(out) <= 96, out
    assert mounts_on(home) == 1


def test_a_plain_home_is_converted_on_first_start(make_node, host_distro, keypairs):
    node = make_node(start=False)
    set_conf(node, "quota", "off")
    node.start()
    _, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub, storage=64)
    home = node.home(uid)
    # quota = off: the home is a plain directory, as before issue 16.
    assert not os.path.ismount(home)
    assert not os.path.exists(os.path.join(node.containers, ".images"))
    files = os.path.join(home, "files")
    os.mkdir(files, 0o751)
    with open(os.path.join(files, "data"), "wb") as f:
        f.write(os.urandom(3 * MiB))
    os.chmod(os.path.join(files, "data"), 0o640)
    os.link(os.path.join(files, "data"), os.path.join(files, "hard"))
    os.symlink("data", os.path.join(files, "soft"))
    with open(os.path.join(files, "sparse"), "wb") as f:
        f.truncate(200 * MiB)  # a hole bigger than the quota stays a hole
        f.seek(100 * MiB)
        f.write(b"middle")
    for p in ("", "/data", "/soft", "/sparse"):
        os.lchown(files + p, uid, uid)
    digest = sha(os.path.join(files, "data"))
    # The node goes, everything stops; then it comes back with quota = loop.
    node.stop()
    assert node.run("stop-all", "--config", node.conf).returncode == 0
    set_conf(node, "quota", "loop")
    node.start()
    wait_for(lambda: running(uid), 30, "the container on the converted home")
    assert os.path.ismount(home)
    assert loops_of(image(node, uid))
    st = os.stat(os.path.join(files, "data"))
    assert st.st_nlink == 2 and st.st_ino == os.stat(os.path.join(files, "hard")).st_ino
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (uid, uid)
    assert stat.S_IMODE(os.stat(files).st_mode) == 0o751
    assert os.readlink(os.path.join(files, "soft")) == "data"
    assert sha(os.path.join(files, "data")) == digest
    sp = os.stat(os.path.join(files, "sparse"))
    assert sp.st_size == 200 * MiB and sp.st_blocks * 512 < 8 * MiB
    with open(os.path.join(files, "sparse"), "rb") as f:
        f.seek(100 * MiB)
        assert f.read(6) == b"middle"
    # The home's root is the container's, and the old tree is kept root-only.
    hs = os.stat(home)
    assert (hs.st_uid, stat.S_IMODE(hs.st_mode)) == (uid, 0o700)
    deleted = os.path.join(node.containers, ".deleted")
    assert any(n.startswith(f"{uid}-") and n.endswith(".converted") for n in os.listdir(deleted))
    assert stat.S_IMODE(os.stat(deleted).st_mode) == 0o700


def test_stop_frees_the_loop_device_and_a_restart_adopts(make_node, host_distro, keypairs):
    node = make_node()
    _, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub, storage=48)
    home, img = node.home(uid), image(node, uid)
    with open(os.path.join(home, "mine"), "w") as f:
        f.write("kept")
    init = init_of(uid)
    assert loops_of(img) and mounts_on(home) == 1
    # kill -9 of the daemon, then a new one: it adopts the container, whose
    # home stays mounted once (not twice), files and loop device as they were.
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait()
    node.start()
    wait_for(lambda: "adopted" in node.log(), 10, "the adoption")
    assert init_of(uid) == init
    assert mounts_on(home) == 1 and loops_of(img)
    with open(os.path.join(home, "mine")) as f:
        assert f.read() == "kept"
    # A clean daemon stop, a new daemon: the same.
    node.stop()
    node.start()
    assert init_of(uid) == init and mounts_on(home) == 1
    # stop-all: no mount on the home, no loop device on the image, the
    # containers directory's own bind gone; the image stays.
    node.stop()
    assert node.run("stop-all", "--config", node.conf).returncode == 0
    assert mounts_on(home) == 0
    assert loops_of(img) == ""
    assert mounts_on(node.containers) == 0
    assert os.path.getsize(img) == 48 * MiB


def test_a_home_left_mounted_by_a_crash_is_unmounted_at_node_start(make_node, host_distro,
                                                                   keypairs):
    node = make_node()
    _, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub, storage=48)
    home, img = node.home(uid), image(node, uid)
    # The daemon dies, then the container's init: nothing unmounts the home.
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait()
    os.kill(init_of(uid), signal.SIGKILL)
    wait_for(lambda: not running(uid), 10, "the init's death")
    assert mounts_on(home) == 1
    # The new daemon unmounts it at its start (said in its log), then
    # starts the container again on a fresh mount.
    offset = len(node.log())
    node.start()
    assert f"container {uid}: its home, left mounted" in node.log()[offset:], node.log()[offset:]
    wait_for(lambda: running(uid), 30, "the container started again")
    assert mounts_on(home) == 1 and len(loops_of(img).splitlines()) == 1


def test_deleting_the_container_retires_its_image(make_node, host_distro, keypairs):
    node = make_node()
    _, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub, storage=40)
    home, img = node.home(uid), image(node, uid)
    node.api.admin("DELETE", f"/containers/{uid}", expect=200)
    deleted = os.path.join(node.containers, ".deleted")
    wait_for(lambda: not os.path.exists(img), 30, "the image retired")
    assert mounts_on(home) == 0 and not os.path.exists(home)
    names = os.listdir(deleted)
    assert any(n.startswith(f"{uid}-") and n.endswith(".ext4") for n in names), names
    assert any(n.startswith(f"{uid}-") and not n.endswith(".ext4") for n in names), names
    assert stat.S_IMODE(os.stat(deleted).st_mode) == 0o700
    # purge-deleted removes the image with the tree.
    retired = max(int(n.split("-")[1].split(".")[0]) for n in names)
    wait_for(lambda: time.time() > retired + 1, 3, "the retirement's second to pass")
    node.api.admin("POST", f"/servers/{node.server['name']}/purge_deleted",
                   {"older_than": 0}, expect=200)
    wait_for(lambda: not os.listdir(deleted), 10, "the retired home and image purged")


def test_quota_off_keeps_plain_homes(make_node, host_distro, keypairs):
    node = make_node(start=False)
    set_conf(node, "quota", "off")
    node.start()
    sshd = Sshd(node)
    key, pub = keypairs[0]
    try:
        sshd.start()
        uid = fresh_box(node, host_distro, pub, storage=24)
        assert not os.path.ismount(node.home(uid))
        assert mounts_on(node.containers) == 0
        ok(sshd.ssh(key, uid, "dd if=/dev/zero of=$HOME/big bs=1M count=30"))
        out = ok(sshd.ssh(key, uid, "quota -s"))
        assert out.strip() == f"Disk quotas for user {uid} (uid {uid}): none", out
    finally:
        sshd.stop()


def test_a_bad_quota_setting_stops_the_node_with_a_clear_error(make_node):
    node = make_node(start=False)
    set_conf(node, "quota", "zfs")
    p = node.run("run", "--config", node.conf)
    assert p.returncode != 0
    assert "quota must be loop, project or off" in p.stderr, p.stderr
    # project: this kernel has no quota format, which the node says at start.
    set_conf(node, "quota", "project")
    p = node.run("run", "--config", node.conf)
    assert p.returncode != 0
    assert "quota = project: the kernel keeps no project quotas" in p.stdout + p.stderr


def test_an_image_still_mounted_elsewhere_is_never_attached_twice(make_node, host_distro,
                                                                   keypairs):
    """A mount of a home can outlive the host's (a container booted from a
    custom distro kept in that home holds a clone of it): the next start
    mounts the same loop device again, never a second one on the image."""
    node = make_node()
    _, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub, storage=48)
    home, img = node.home(uid), image(node, uid)
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "60"])
    try:
        wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/mnt") !=
                 os.readlink("/proc/self/ns/mnt"), 5, "the other namespace")
        gen = restart_generation(node, uid)
        node.post(uid, {"memory": 300})  # a restart: the host's mount goes and comes back
        wait_for(lambda: restart_generation(node, uid) > gen, 5, "the generation bump")
        started = f"container {uid}: started (init pid"
        wait_for(lambda: node.log().count(started) >= 2 and running(uid), 30, "the restart")
        assert os.path.ismount(home)
        assert len(loops_of(img).splitlines()) == 1, loops_of(img)
    finally:
        holder.kill()
        holder.wait()
    node.stop()
    assert node.run("stop-all", "--config", node.conf).returncode == 0
    wait_for(lambda: loops_of(img) == "", 5, "the loop device freed")


def test_a_failed_start_leaves_no_bind_of_the_containers_directory(make_node):
    node = make_node(start=False)
    # Refused after the containers directory was made a shared mount.
    set_conf(node, "router_http", "127.0.0.1:1")
    set_conf(node, "router_user", "nosuch-router")
    p = node.run("run", "--config", node.conf)
    assert p.returncode == 1 and "router_user nosuch-router does not exist" in p.stderr, p.stderr
    assert mounts_on(node.containers) == 0
