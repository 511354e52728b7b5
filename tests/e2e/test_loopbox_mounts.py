"""Loopboxes mounted for real (issue 17, docs/NODE.md "Loopboxes"): the seed's
zeus example done as the customer over ssh, the loopbox created through the
API, the ext4 image mounted in that container's mount namespace only, its
rules (ro, under 1 MB, symlinks, deleted, resized), its lines in
logs/emperor.log, restarts of the container and of the node, and a vassal
with wait-for-mountpoint.  Real node, real containers, real uWSGI, real ssh."""

import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from helpers import wait_for
from nodeutil import NEEDS_CONTAINERS, fresh_box, init_of, running
from sshutil import SSHD, ok, open_shell, read_until, sshd_in_front

pytestmark = [*NEEDS_CONTAINERS,
              pytest.mark.skipif(not os.path.exists(SSHD), reason="needs openssh-server"),
              pytest.mark.skipif(not os.path.exists("/sbin/mkfs.ext4"), reason="needs e2fsprogs"),
              pytest.mark.skipif(not shutil.which("debugfs", path="/sbin:/usr/sbin:/usr/bin"),
                                 reason="needs debugfs (e2fsprogs)"),
              pytest.mark.skipif(not shutil.which("losetup", path="/sbin:/usr/sbin:/usr/bin"),
                                 reason="needs losetup (util-linux)"),
              pytest.mark.usefixtures("subreaper")]

DELAY = 2  # loopbox_remount_delay of the test node
ZEUS = "dd if=/dev/zero of=zeus001 bs=512 count=200000 && mkfs.ext4 -q zeus001 && mkdir zeus"


@pytest.fixture
def lnode(make_node):
    """(node, sshd): a node with loopbox_remount_delay = DELAY and the test
    sshd in front of it; the host's /etc unchanged at the end."""
    node = make_node(conf=f"loopbox_remount_delay = {DELAY}\n")
    with sshd_in_front(node) as sshd:
        try:
            yield node, sshd
        finally:
            # Shown with a failure: what the node did about loopboxes.
            print("".join(line + "\n" for line in node.log().splitlines() if "loopbox" in line))


def sh(sshd, key, uid, command):
    """A command run as the customer, in the home, over ssh."""
    return ok(sshd.ssh(key, uid, f"cd ~ && {command}", timeout=120))


def new_loopbox(node, uid, filename="zeus001", mountpoint="zeus", **kw):
    r = node.api.post("/loopboxes", auth=node.auth,
                      json={"container": uid, "filename": filename, "mountpoint": mountpoint,
                            **kw})
    assert r.status_code == 201, r.text
    return r.json()["id"], time.monotonic()


def delete_loopbox(node, lid):
    r = node.api.delete(f"/loopboxes/{lid}", auth=node.auth)
    assert r.status_code == 200, r.text


def mounts(pid):
    """{mountpoint: (mount id, source, fs type, options)} of /proc/<pid>/mountinfo."""
    out = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            a, b = left.split(), right.split()
            out[a[4]] = (int(a[0]), b[1], b[0], a[5])
    return out


def mount_of(uid, mountpoint="zeus"):
    """The loopbox's mount in the container (its init's view), or None."""
    init = init_of(uid)
    return mounts(init).get(f"/containers/{uid}/{mountpoint}") if init else None


def wait_mounted(uid, mountpoint="zeus", timeout=10.0, since=None):
    m = wait_for(lambda: mount_of(uid, mountpoint), timeout, f"{mountpoint} mounted in {uid}",
                 interval=0.02)
    if since is not None:
        assert time.monotonic() - since <= timeout + 0.05
    return m


def wait_unmounted(uid, mountpoint="zeus", timeout=5.0):
    wait_for(lambda: mount_of(uid, mountpoint) is None, timeout,
             f"{mountpoint} unmounted in {uid}", interval=0.05)


def emperor_log(node, uid):
    try:
        with open(os.path.join(node.home(uid), "logs", "emperor.log"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_log(node, uid, text, timeout=10):
    return wait_for(lambda: text in emperor_log(node, uid), timeout, f"{text!r} in emperor.log")


def backing(dev):
    """The file behind loop device dev, or None when it is free."""
    try:
        with open(f"/sys/block/{os.path.basename(dev)}/loop/backing_file") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def loops_of(path):
    p = subprocess.run(["losetup", "-j", path], capture_output=True, text=True, timeout=10)
    return p.stdout.strip()


def debugfs_cat(image, path):
    p = subprocess.run(["debugfs", "-R", f"cat {path}", image], capture_output=True,
                       text=True, timeout=30)
    return p.stdout


# ---- the tests ---------------------------------------------------------------------

def test_the_zeus_example(lnode, host_distro, keypairs):
    node, sshd = lnode
    key, pub = keypairs[0]
    uid, other = fresh_box(node, host_distro, pub), fresh_box(node, host_distro, pub)
    home = node.home(uid)
    # The seed's commands, as the customer, in the home.
    sh(sshd, key, uid, ZEUS)
    image = os.path.join(home, "zeus001")
    assert os.path.getsize(image) == 200000 * 512 and os.stat(image).st_uid == uid
    lid, t = new_loopbox(node, uid)
    # In the container's mount namespace within a second of the API call.
    mid, dev, fstype, opts = wait_mounted(uid, timeout=1.0, since=t)
    assert fstype == "ext4" and dev.startswith("/dev/loop"), (dev, fstype)
    assert {"rw", "nosuid", "nodev"} <= set(opts.split(",")), opts
    assert backing(dev) == image
    # Neither the host's (the test's and the node daemon's namespaces) nor
    # another container's mount table shows it.
    for host in (mounts("self"), mounts(node.proc.pid)):
        assert all(src != dev for _, src, _, _ in host.values())
        assert not any(p.endswith("/zeus") for p in host)
    assert all(src != dev for _, src, _, _ in mounts(init_of(other)).values())
    assert not any(p.endswith("/zeus") for p in mounts(init_of(other)))
    line = f"imperium loopbox {lid}: zeus001 mounted on zeus (read-write)"
    wait_log(node, uid, line, timeout=2)
    # The customer writes there; the root is theirs, lost+found root's.
    out = sh(sshd, key, uid, "echo written-in-zeus > zeus/hello.txt && "
                             "stat -c '%u %n' zeus zeus/lost+found && grep ' /containers/' "
                             "/proc/self/mountinfo | grep -c zeus")
    assert f"{uid} zeus\n0 zeus/lost+found\n1\n" == out, out
    assert not os.path.exists(os.path.join(home, "zeus", "hello.txt"))  # not on the home
    # Deleting the loopbox unmounts it; the image stays, with the file in it.
    size = os.path.getsize(image)
    delete_loopbox(node, lid)
    wait_unmounted(uid, timeout=2)
    wait_log(node, uid, f"loopbox {lid}: zeus001 unmounted: the loopbox was deleted "
                        "(the image is untouched)", timeout=2)
    assert os.path.getsize(image) == size
    wait_for(lambda: backing(dev) != image, 5, "the loop device freed")
    assert not loops_of(image)
    assert debugfs_cat(image, "/hello.txt") == "written-in-zeus\n"
    assert emperor_log(node, uid).count(line) == 1


def test_read_only_small_and_symlinked_images(lnode, host_distro, keypairs):
    node, sshd = lnode
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub)
    sh(sshd, key, uid, "dd if=/dev/zero of=ro.img bs=1M count=4 && mkfs.ext4 -q ro.img && "
                       "dd if=/dev/zero of=tiny.img bs=1k count=512 && "
                       "dd if=/dev/zero of=junk.img bs=1M count=2 && "
                       "cp ro.img ok.img && ln -s /usr out && ln -s ro.img link.img")
    ro, t = new_loopbox(node, uid, "ro.img", "data/ro", ro=True)
    _, dev, _, opts = wait_mounted(uid, "data/ro", timeout=1.0, since=t)
    assert "ro" in opts.split(","), opts
    wait_log(node, uid, f"loopbox {ro}: ro.img mounted on data/ro (read-only)")
    p = sshd.ssh(key, uid, "touch ~/data/ro/x")
    assert p.returncode != 0 and "Read-only file system" in p.stderr, p.stderr
    # The mountpoint was made, the container's.
    assert os.stat(os.path.join(node.home(uid), "data")).st_uid == uid
    tiny, _ = new_loopbox(node, uid, "tiny.img", "tiny")
    link, _ = new_loopbox(node, uid, "link.img", "link")
    wait_log(node, uid, f"loopbox {tiny}: tiny.img not mounted: ")
    wait_log(node, uid, f"loopbox {link}: link.img not mounted: ")
    log = emperor_log(node, uid)
    small = re.search(rf"loopbox {tiny}: tiny.img not mounted: (.*)", log).group(1)
    assert "1 MB" in small and "512 KB" in small, small
    sym = re.search(rf"loopbox {link}: link.img not mounted: (.*)", log).group(1)
    assert "symbolic link" in sym, sym
    # No filesystem in it: e2fsck says so; a mountpoint through a symlink (to
    # the host's /usr, were it followed) is refused.
    junk, _ = new_loopbox(node, uid, "junk.img", "junk")
    wait_log(node, uid, f"loopbox {junk}: junk.img not mounted: e2fsck -n found errors: ")
    out, _ = new_loopbox(node, uid, "ok.img", "out/x")
    wait_log(node, uid, f"loopbox {out}: ok.img not mounted: ")
    time.sleep(2.5)  # a few rounds of the watch: refused once, logged once
    log = emperor_log(node, uid)
    for lid, name in ((tiny, "tiny"), (link, "link"), (junk, "junk"), (out, "ok")):
        assert log.count(f"loopbox {lid}: {name}.img not mounted") == 1, log
    assert "symbolic link" in re.search(rf"loopbox {out}: ok.img not mounted: (.*)", log).group(1)
    assert all(mount_of(uid, p) is None for p in ("tiny", "link", "junk", "out/x"))
    assert not os.path.exists("/usr/x")
    inside = mounts(init_of(uid))
    home_dev = inside[f"/containers/{uid}"][1]
    boxes = {p for p, (_, src, _, _) in inside.items()
             if src.startswith("/dev/loop") and src != home_dev}
    assert boxes == {f"/containers/{uid}/data/ro"}, boxes


def test_a_resized_image_comes_back_after_the_delay_a_deleted_one_goes(lnode, host_distro,
                                                                       keypairs):
    node, sshd = lnode
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub)
    sh(sshd, key, uid, ZEUS)
    lid, t = new_loopbox(node, uid)
    first = wait_mounted(uid, timeout=1.0, since=t)
    sh(sshd, key, uid, "truncate -s 120M zeus001")
    t = time.monotonic()
    wait_unmounted(uid, timeout=2.5)
    wait_log(node, uid, f"loopbox {lid}: zeus001 unmounted: the image was resized; mounted "
                        f"again in {DELAY} s if its filesystem is sound", timeout=2)
    # Not before the delay, and back after it.
    again = wait_mounted(uid, timeout=DELAY + 4)
    assert time.monotonic() - t >= DELAY - 0.2
    assert again[1] == first[1] or backing(first[1]) != os.path.join(node.home(uid), "zeus001")
    # The container is told right after the mount: the line may lag it.
    wait_for(lambda: emperor_log(node, uid).count(f"loopbox {lid}: zeus001 mounted on zeus") == 2,
             3, "the second mount in emperor.log")
    # Deleting the image unmounts it.
    sh(sshd, key, uid, "rm zeus001")
    wait_unmounted(uid, timeout=2.5)
    wait_log(node, uid, f"loopbox {lid}: zeus001 unmounted: the image was deleted", timeout=2)


def test_mounts_follow_restarts_and_a_stop_frees_the_device(lnode, host_distro, keypairs):
    node, sshd = lnode
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub)
    home = node.home(uid)
    sh(sshd, key, uid, ZEUS)
    lid, t = new_loopbox(node, uid)
    wait_mounted(uid, timeout=1.0, since=t)
    sh(sshd, key, uid, "echo before-reboot > zeus/f")
    mounted = f"loopbox {lid}: zeus001 mounted on zeus"
    # A container restart: a new namespace, the loopbox mounted again in it.
    init = init_of(uid)
    node.post(uid, {"reboot": True})
    wait_for(lambda: init_of(uid) not in (None, init) and running(uid), 30, "the restart")
    mid2, dev2, _, _ = wait_mounted(uid, timeout=5)
    assert sh(sshd, key, uid, "cat zeus/f") == "before-reboot\n"
    assert emperor_log(node, uid).count(mounted) == 2
    # The record the next daemon adopts from (root's only).
    record = os.path.join(node.state, str(uid), "loopboxes.json")
    with open(record) as f:
        rec = json.load(f)
    assert rec["pid"] == init_of(uid) and os.stat(record).st_mode & 0o777 == 0o600
    assert [(b["id"], b["mnt_id"], b["dev"]) for b in rec["loopboxes"]] == [(lid, mid2, dev2)]
    # A node restart adopts the mount: same mount id, no new "mounted" line.
    node.stop()
    node.start()
    time.sleep(2.5)
    assert mount_of(uid)[:2] == (mid2, dev2)
    assert emperor_log(node, uid).count(mounted) == 2
    assert "adopted" in node.log()
    # Still followed after the adoption: deleting the loopbox unmounts it.
    delete_loopbox(node, lid)
    wait_unmounted(uid, timeout=2)
    _, t = new_loopbox(node, uid)
    _, dev3, _, _ = wait_mounted(uid, timeout=1.0, since=t)
    # A stop takes the mount with the namespace and frees the loop device.
    image = os.path.join(home, "zeus001")
    assert backing(dev3) == image
    node.stop()
    assert node.run("stop-all", "--config", node.conf).returncode == 0
    wait_for(lambda: backing(dev3) != image, 5, "the loopbox's loop device freed")
    assert not loops_of(os.path.join(node.containers, ".images", f"{uid}.ext4"))


def serve(path, timeout=1.0):
    """GET / over the vassal's HTTP unix socket: its body, or None."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.split(b"\r\n\r\n", 1)[1].decode() if b"\r\n\r\n" in data else None
    except OSError:
        return None


APP = '''import os
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    zeus = os.path.join(os.environ["HOME"], "zeus")
    return [("serving mounted=%s" % os.path.ismount(zeus)).encode()]
'''


def zeus_vassal(node, uid, wait):
    """The seed's zeus vassal, suspended by `wait` until zeus is mounted."""
    home = node.home(uid)
    with open(os.path.join(home, "zeus.py"), "w") as f:
        f.write(APP)
    tmp = os.path.join(home, "vassals", ".zeus.tmp")
    with open(tmp, "w") as f:
        f.write(f"[uwsgi]\n{wait}\nplugin = 0:python\nwsgi-file = $(HOME)/zeus.py\n"
                "http-socket = $(HOME)/run/zeus.sock\n")
    os.chown(tmp, uid, uid)
    os.rename(tmp, os.path.join(home, "vassals", "zeus.ini"))
    return os.path.join(home, "run", "zeus.sock")


def vassal_waits(lnode, host_distro, keypairs, wait, path, before_bind=True):
    """The vassal with `wait` says it waits for path (inside the container)
    and serves nothing until the loopbox is mounted, then serves from it;
    before_bind: it waits before binding its socket (a pre-app hook waits
    after)."""
    node, sshd = lnode
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub)
    sh(sshd, key, uid, ZEUS)
    sock = zeus_vassal(node, uid, wait)
    # uWSGI's own line: "waiting for <path> (max 60 seconds) ..."
    waiting = f"waiting for /containers/{uid}/{path} (max "
    wait_log(node, uid, waiting, timeout=20)
    time.sleep(1)
    assert serve(sock) is None, "the vassal served before its loopbox was mounted"
    if before_bind:
        assert not os.path.exists(sock)
    lid, t = new_loopbox(node, uid)
    wait_mounted(uid, timeout=1.0, since=t)
    body = wait_for(lambda: serve(sock), 15, "the vassal serving", interval=0.2)
    assert body == "serving mounted=True", body


def test_a_vassal_waits_for_its_mountpoint(lnode, host_distro, keypairs):
    """The seed's line as written (the platform's after.ini turns it into a hook
    that runs as the container's uid: uWSGI itself honours it only as root)."""
    vassal_waits(lnode, host_distro, keypairs, "wait-for-mountpoint = $(HOME)/zeus", "zeus")


def test_a_vassal_waits_for_a_directory_of_its_loopbox(lnode, host_distro, keypairs):
    """What works as the customer's uid: a pre-app hook waiting for lost+found,
    which only the mounted filesystem has (docs/NODE.md, Loopboxes)."""
    vassal_waits(lnode, host_distro, keypairs,
                 "hook-pre-app = wait_for_dir:$(HOME)/zeus/lost+found", "zeus/lost+found",
                 before_bind=False)


def test_an_open_shell_sees_a_mount_made_after_login(lnode, host_distro, keypairs):
    """ssh sessions are slaves of the home (stage C of issue 17)."""
    node, sshd = lnode
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub)
    sh(sshd, key, uid, ZEUS)
    shell = open_shell(sshd, key, uid)
    lid, t = new_loopbox(node, uid)
    wait_mounted(uid, timeout=1.0, since=t)
    shell.stdin.write(b"grep -c ' /containers/[0-9]*/zeus ' /proc/self/mountinfo; "
                      b"echo DONE-$((6*7))\n")
    shell.stdin.flush()
    out = read_until(shell, "DONE-42", 10)
    assert re.search(r"^1\r?$", out, re.M), out
    delete_loopbox(node, lid)
    wait_unmounted(uid, timeout=2)
    shell.stdin.write(b"grep -c ' /containers/[0-9]*/zeus ' /proc/self/mountinfo; "
                      b"echo GONE-$((6*7))\n")
    shell.stdin.flush()
    out = read_until(shell, "GONE-42", 10)
    assert re.search(r"^0\r?$", out, re.M), out


def test_loopbox_max_bounds_the_mounts_of_a_container(make_node, host_distro, keypairs):
    """loopbox_max = 2: a third loopbox waits, said once, and is mounted
    when one of the others goes."""
    node = make_node(conf=f"loopbox_remount_delay = {DELAY}\nloopbox_max = 2\n")
    key, pub = keypairs[0]
    with sshd_in_front(node) as sshd:
        uid = fresh_box(node, host_distro, pub)
        sh(sshd, key, uid, "dd if=/dev/zero of=a.img bs=1M count=2 && mkfs.ext4 -q a.img && "
                           "cp a.img b.img && cp a.img c.img")
        a, t = new_loopbox(node, uid, "a.img", "a")
        wait_mounted(uid, "a", timeout=1.0, since=t)
        b, t = new_loopbox(node, uid, "b.img", "b")
        wait_mounted(uid, "b", timeout=1.0, since=t)
        c, _ = new_loopbox(node, uid, "c.img", "c")
        line = (f"loopbox {c}: c.img not mounted: the container has 2 loopboxes on loop "
                "devices already, this node's limit (loopbox_max)")
        wait_log(node, uid, line, timeout=3)
        time.sleep(2.5)  # more passes: still waiting, said once
        assert mount_of(uid, "c") is None
        assert emperor_log(node, uid).count(line) == 1
        delete_loopbox(node, a)
        wait_unmounted(uid, "a", timeout=2)
        wait_mounted(uid, "c", timeout=5)
        wait_log(node, uid, f"loopbox {c}: c.img mounted on c (read-write)", timeout=2)
        assert mount_of(uid, "b") is not None


def test_an_image_still_held_waits_said_once(lnode, host_distro, keypairs):
    """A shell inside the detached mount keeps its loop device: the loopbox
    created again waits (one line), and is mounted once the shell lets go."""
    node, sshd = lnode
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub)
    sh(sshd, key, uid, ZEUS)
    lid, t = new_loopbox(node, uid)
    _, dev, _, _ = wait_mounted(uid, timeout=1.0, since=t)
    shell = open_shell(sshd, key, uid)
    shell.stdin.write(b"cd ~/zeus && echo IN-$((6*7))\n")
    shell.stdin.flush()
    read_until(shell, "IN-42", 10)
    delete_loopbox(node, lid)
    wait_unmounted(uid, timeout=2)
    assert backing(dev) == os.path.join(node.home(uid), "zeus001")  # the shell holds it
    again, _ = new_loopbox(node, uid)
    line = f"loopbox {again}: zeus001 not mounted: the image is still in use ({dev} backs it"
    wait_log(node, uid, line, timeout=3)
    time.sleep(2.5)
    assert mount_of(uid) is None and emperor_log(node, uid).count(line) == 1
    shell.stdin.write(b"cd / && echo OUT-$((6*7))\n")
    shell.stdin.flush()
    read_until(shell, "OUT-42", 10)
    wait_mounted(uid, timeout=5)
    wait_log(node, uid, f"loopbox {again}: zeus001 mounted on zeus", timeout=2)
