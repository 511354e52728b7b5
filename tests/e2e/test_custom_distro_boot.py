"""Custom distros booted, ssh sessions that see mounts made after login, and
`nofollow` (issue 17; docs/NODE.md "Custom distros", "ssh sessions",
API.md "Custom distros").

A customer builds a minimal root filesystem over ssh in a storage
container's distros/ (copied from its own read-only root, which is the
host's: uwsgi, the libraries ldd lists, sh and cat, the mountpoints the
runtime needs, a marker file), registers it through the API, and a second
container of the same customer boots from it: the marker is at its /, its
root is read-only, and the node leaves no staging mount on the host.

Runs as root, with the real imperium-api, imperium-node and OpenSSH sshd
(sshutil.py)."""

import os
import re
import subprocess
import time

import pytest

from helpers import mount_lines, procs_of_uid, unique, wait_for
from nodeutil import NEEDS_CONTAINERS, init_of, running
from sshutil import SSHD, ok, open_shell, read_until

pytestmark = [*NEEDS_CONTAINERS,
              pytest.mark.skipif(not os.path.exists(SSHD), reason="needs openssh-server"),
              pytest.mark.usefixtures("subreaper")]

MARKER = "booted from the custom distro mini"

# Run over ssh in the storage container (its root is the host's, read-only).
BUILD = r'''set -e
d=$HOME/distros/mini
rm -rf "$d"
mkdir -p "$d"
cd "$d"
mkdir -p bin usr/bin etc proc dev run tmp var/tmp var/log usr/local containers
cp -L /usr/bin/uwsgi usr/bin/uwsgi
cp -L /bin/sh bin/sh
cp -L /bin/cat bin/cat
for f in $(for b in "$(readlink -f /usr/bin/uwsgi)" /bin/sh /bin/cat; do ldd "$b"; done |
           grep -o '/[^ ]*'); do
    mkdir -p ".${f%/*}"
    cp -L "$f" ".$f"
done
echo "MARKER" > imperium-marker
echo built-$(du -sm . | cut -f1)-MB
'''.replace("MARKER", MARKER)


def start(node, key, **body):
    """A container of node's customer with body (its distro), then key:
    startable."""
    uid = node.new_container()
    node.post(uid, body)
    node.post(uid, {"ssh_keys": [key]})
    return uid


def wait_running(uid, timeout=15, other_than=None):
    def ok_():
        got = running(uid)
        return got if got and got[0] != other_than else None
    return wait_for(ok_, timeout, f"container {uid} running", interval=0.05)


def staging_mounts(node):
    """Mounts of the node's staging directories (<state>/<uid>/distro) on
    the host."""
    return [line for line in mount_lines() if f"{node.state}/" in line and "/distro" in line]


def no_staging_left(node):
    """The staging mount is detached once the start returns, a moment
    after the Emperor shows up: wait that long, not more."""
    wait_for(lambda: not staging_mounts(node), 5, "no staging mount on the host",
             interval=0.05)


def last_error(node, uid):
    return node.status(uid).get("last_error") or ""


def test_a_container_boots_from_a_custom_distro_built_over_ssh(node_sshd, host_distro,
                                                               keypairs):
    node, sshd = node_sshd
    key, pub = keypairs[0]
    st = start(node, pub, distro=host_distro["id"], custom_distros_storage=True)
    wait_running(st)
    out = ok(sshd.ssh(key, st, BUILD, timeout=120))
    assert re.search(r"built-\d+-MB", out), out
    r = node.api.post(f"/custom_distros/{st}", auth=node.auth,
                      json={"name": unique("mini"), "path": "mini"})
    assert r.status_code == 201, r.text
    did = r.json()["id"]

    sib = start(node, pub, custom_distro=did)
    init, emperor = wait_running(sib)
    node.wait_status(sib, state="running", last_error=None)
    # The marker at its /, seen from the host and from an ssh session.
    with open(f"/proc/{init}/root/imperium-marker") as f:
        assert f.read() == MARKER + "\n"
    assert not os.path.exists(f"/proc/{init}/root/etc/os-release")  # not the host's root
    p = sshd.ssh(key, sib, "cat /imperium-marker; echo x > /imperium-probe")
    assert p.stdout == MARKER + "\n", (p.stdout, p.stderr)
    assert p.returncode != 0 and "Read-only file system" in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(node.home(st), "distros", "mini", "imperium-probe"))
    # Its root is a clone: nothing of the staging stays on the host.
    no_staging_left(node)

    # It boots while the holder is stopped too (its home image is mounted
    # for the start only).
    node.post(st, {"ssh_keys": []})
    wait_for(lambda: init_of(st) is None, 15, "the holder stopped")
    node.post(sib, {"reboot": True})
    init2, _ = wait_running(sib, other_than=init)
    with open(f"/proc/{init2}/root/imperium-marker") as f:
        assert f.read() == MARKER + "\n"
    no_staging_left(node)

    # A broken custom distro (its directory moved away) fails with a
    # message naming it, and does not hang.
    node.post(st, {"ssh_keys": [pub]})
    wait_running(st)
    ok(sshd.ssh(key, st, "mv ~/distros/mini ~/distros/mini.away"))
    t = node.post(sib, {"reboot": True})
    want = f"custom distro mini: directory distros/mini missing in the home of container {st}"
    wait_for(lambda: want in last_error(node, sib), 15, "the error in status.last_error")
    assert time.monotonic() - t < 15
    assert node.status(sib)["state"] == "failed"
    wait_for(lambda: not procs_of_uid(sib), 5, "nothing of the container left")
    assert want in node.log()

    # Without uWSGI in it: the Emperor cannot be exec'd, said as such.
    ok(sshd.ssh(key, st, "mv ~/distros/mini.away ~/distros/mini && "
                         "mv ~/distros/mini/usr/bin/uwsgi ~/uwsgi.away"))
    want = (f"booting custom distro mini of container {st}: exec the Emperor /usr/bin/uwsgi: "
            "No such file or directory")
    wait_for(lambda: want in last_error(node, sib), 40, "the exec error in status.last_error")
    assert node.status(sib)["state"] == "failed"
    # Repaired, it runs again at its next try (the restart backoff).
    ok(sshd.ssh(key, st, "mv ~/uwsgi.away ~/distros/mini/usr/bin/uwsgi"))
    wait_running(sib, timeout=40)
    node.wait_status(sib, timeout=5, state="running", last_error=None)
    no_staging_left(node)


def test_a_symlinked_custom_distro_is_refused(make_node, keypairs):
    """distros/<path> as a symlink to / is never booted, nor taken for the
    host's distro by a node with distro_host_ok = false (whose check would
    follow the customer's link): the message names the link.  The holder
    never ran, so its home is a plain directory, used in place."""
    node = make_node(host_ok=False)
    _, pub = keypairs[0]
    st = node.new_container()
    node.post(st, {"custom_distros_storage": True})
    os.makedirs(os.path.join(node.home(st), "distros"))
    os.symlink("/", os.path.join(node.home(st), "distros", "root"))
    r = node.api.post(f"/custom_distros/{st}", auth=node.auth,
                      json={"name": unique("root"), "path": "root"})
    assert r.status_code == 201, r.text
    sib = start(node, pub, custom_distro=r.json()["id"])
    want = (f"custom distro root: distros/root in the home of container {st} is (or goes "
            "through) a symbolic link")
    wait_for(lambda: want in last_error(node, sib), 15, "the refusal in status.last_error")
    assert "distro_host_ok" not in last_error(node, sib)
    assert not procs_of_uid(sib)
    no_staging_left(node)


def test_ssh_sessions_see_mounts_made_under_the_home_after_login(node_sshd, host_distro,
                                                                 keypairs):
    node, sshd = node_sshd
    key, pub = keypairs[0]
    uid = start(node, pub, distro=host_distro["id"])
    init, _ = wait_running(uid)
    sh = open_shell(sshd, key, uid)
    target = f"/containers/{uid}/x"

    def count():
        sh.stdin.write(f"echo COUNT-$(grep -c ' {target} ' /proc/self/mountinfo)-END\n".encode())
        sh.stdin.flush()
        return int(re.findall(r"COUNT-(\d+)-END", read_until(sh, "-END", 10))[-1])

    sh.stdin.write(b"mkdir -p ~/x; echo MADE-$((2+3))\n")
    sh.stdin.flush()
    read_until(sh, "MADE-5", 10)
    assert count() == 0
    # Mounted from the container's mount namespace, after the login.
    subprocess.run(["nsenter", "-t", str(init), "-m", "mount", "-t", "tmpfs", "-o", "size=1m",
                    "tmpfs", target], check=True, timeout=30)
    try:
        assert count() == 1
        host = [line for line in mount_lines()
                if f" {target} " in line or f" {node.home(uid)}/x " in line]
        assert not host, host
    finally:
        subprocess.run(["nsenter", "-t", str(init), "-m", "umount", target], check=True,
                       timeout=30)
    # The unmount reaches the session too.
    assert count() == 0
    sh.stdin.write(b"exit\n")
    sh.stdin.flush()
    sh.wait(timeout=10)


NOFOLLOW_VASSAL = """[uwsgi]
master = true
socket = $(HOME)/tmp/nofollow.sock
"""


@pytest.mark.parametrize("nofollow", [False, True])
def test_nofollow_stops_a_symlinked_vassal_reloading_on_its_target(make_node, host_distro,
                                                                    keypairs, nofollow):
    """vassals/nf.ini is a symlink to apps/nf.ini: touching the target
    reloads the vassal, unless the container has `nofollow` (the Emperor's
    --emperor-nofollow), where only touching the link itself does."""
    node = make_node()
    _, pub = keypairs[0]
    uid = start(node, pub, distro=host_distro["id"], nofollow=nofollow)
    init, emperor = wait_running(uid)
    with open(f"/proc/{emperor}/cmdline") as f:
        assert ("--emperor-nofollow" in f.read().split("\0")) == nofollow
    home = node.home(uid)
    os.makedirs(os.path.join(home, "apps"), exist_ok=True)
    target = os.path.join(home, "apps", "nf.ini")
    with open(target, "w") as f:
        f.write(NOFOLLOW_VASSAL)
    link = os.path.join(home, "vassals", "nf.ini")
    os.symlink("../apps/nf.ini", link)
    for path in (os.path.dirname(target), target, link):
        os.lchown(path, uid, uid)
    log = os.path.join(home, "logs", "emperor.log")

    def text():
        with open(log, errors="replace") as f:
            return f.read()
    wait_for(lambda: "vassal nf.ini is ready to accept requests" in text(), 20,
             "the vassal running")
    reloads = lambda: text().count("reload the uwsgi instance nf.ini")  # noqa: E731
    before = reloads()
    later = time.time() + 20  # a new mtime even within one second
    os.utime(target, (later, later))
    if nofollow:
        time.sleep(3.5)  # the Emperor looks every second
        assert reloads() == before, text()[-2000:]
        # Touching the link itself still reloads it.
        os.utime(link, (later, later), follow_symlinks=False)
    wait_for(lambda: reloads() == before + 1, 10, "the vassal reloaded")
    if not nofollow:
        # Turning it on through the API restarts the container with it.
        node.post(uid, {"nofollow": True})
        _, emperor2 = wait_running(uid, other_than=init)
        with open(f"/proc/{emperor2}/cmdline") as f:
            assert "--emperor-nofollow" in f.read().split("\0")
