"""ssh into containers (docs/SSH.md): a real OpenSSH sshd, configured with
the project's etc/ssh/sshd_config, the NSS module and imperium-enter, in
front of the real imperium-api and imperium-node daemon.

The test's sshd listens on a free port of 127.0.0.1 and runs in a mount
namespace of its own (unshare -m): /etc is an overlay there, carrying the
test's nsswitch.conf (`imperium` for passwd and group) and
/etc/imperium/ssh.conf (the node's directories), /run a tmpfs with sshd's
privilege separation directory; the NSS module is found through
LD_LIBRARY_PATH.  The host's /etc and its own sshd are left alone (checked).
imperium-enter is copied next to the node and made setuid root, as the
installation does.

Runs as root; needs openssh-server and openssh-client (ssh, scp, sftp)."""

import os
import subprocess
import time

import pytest

from conftest import BIN
from helpers import procs_of_uid, wait_for
from nodeutil import NEEDS_CONTAINERS, fresh_box, init_of, running
from sshutil import SSH_OPTS, SSHD, ok, open_shell, read_until

WALL = os.path.join(BIN, "imperium-wall")

pytestmark = [*NEEDS_CONTAINERS,
              pytest.mark.skipif(not os.path.exists(SSHD), reason="needs openssh-server"),
              pytest.mark.usefixtures("subreaper")]


def container_pids(uid):
    """Host pids of the container's processes."""
    return set(procs_of_uid(uid))


# ---- the tests -----------------------------------------------------------------

def test_a_command_runs_inside_the_container(node_sshd, host_distro, keypairs):
    node, sshd = node_sshd
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub)
    with open(os.path.join(node.home(uid), "etc", "hostname")) as f:
        hostname = f.read().strip()
    out = ok(sshd.ssh(key, uid, "id -u; hostname; ls /proc")).split("\n")
    assert out[0] == str(uid)
    assert out[1] == hostname
    pids = sorted(int(x) for x in out[2:] if x.isdigit())
    # Only the container's processes: its init is 1, and every process
    # is init, the Emperor or the session's own.
    assert pids[0] == 1 and len(pids) < 10, pids
    comms = ok(sshd.ssh(key, uid, "cat /proc/[0-9]*/comm")).split()
    assert set(comms) <= {"imperium-init", "uwsgi", "bash", "sh", "cat"}, comms
    assert comms.count("imperium-init") == 1
    # No capabilities, no new privileges, the container's cgroup namespace,
    # HOME and cwd = the home, gid = uid.
    out = ok(sshd.ssh(key, uid, "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; "
                                "cat /proc/self/cgroup; echo HOME=$HOME; pwd; id -g; id -G"))
    caps = dict(line.split(":\t") for line in out.splitlines() if line.startswith(("Cap", "NoNew")))
    assert {k: v for k, v in caps.items() if k.startswith("Cap")} == {
        "CapInh": "0" * 16, "CapPrm": "0" * 16, "CapEff": "0" * 16, "CapBnd": "0" * 16,
        "CapAmb": "0" * 16}
    assert caps["NoNewPrivs"] == "1"
    assert f"HOME=/containers/{uid}\n/containers/{uid}\n{uid}\n{uid}\n" in out
    assert any(line.endswith(":/") for line in out.splitlines() if "memory" in line), out
    # The session ran in the container's memory cgroup: its processes are in
    # cgroup.procs on the host while one runs.
    c = subprocess.Popen(sshd.ssh_args(key, uid) + ["exec sleep 30"], stdin=subprocess.DEVNULL)
    sshd.clients.append(c)
    st = node.status(uid)
    cg = st.get("cgroup") or ""

    def sleep_in_cgroup():
        for d in (cg, *[f"/sys/fs/cgroup/memory/{p}/{uid}" for p in os.listdir(
                "/sys/fs/cgroup/memory") if p.startswith("imperium-e2e-daemon-")]):
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        with open(f"/proc/{pid}/comm") as g:
                            if g.read().strip() == "sleep":
                                return True
            except (FileNotFoundError, ProcessLookupError):
                continue
        return False
    wait_for(sleep_in_cgroup, 10, "the session's sleep in the container's cgroup", interval=0.05)
    c.kill()
    c.wait()


def test_files_go_to_the_home_and_usr_is_read_only(node_sshd, host_distro, keypairs):
    node, sshd = node_sshd
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub)
    p = sshd.ssh(key, uid, "echo made-over-ssh > ~/over-ssh.txt && touch /usr/imperium-ssh-probe")
    assert p.returncode != 0
    assert "Read-only file system" in p.stderr, p.stderr
    path = os.path.join(node.home(uid), "over-ssh.txt")
    with open(path) as f:
        assert f.read() == "made-over-ssh\n"
    assert os.stat(path).st_uid == uid and os.stat(path).st_gid == uid
    assert not os.path.exists("/usr/imperium-ssh-probe")


def test_wrong_key_password_and_other_containers_key_are_refused(node_sshd, host_distro,
                                                                  keypairs):
    node, sshd = node_sshd
    (k0, p0), (k1, p1), (k2, _) = keypairs[:3]
    a, b = fresh_box(node, host_distro, p0), fresh_box(node, host_distro, p1)
    ok(sshd.ssh(k0, a, "true"))
    ok(sshd.ssh(k1, b, "true"))
    for key, uid in ((k2, a), (k1, a), (k0, b)):
        p = sshd.ssh(key, uid, "true")
        assert p.returncode == 255 and "Permission denied (publickey)" in p.stderr, p.stderr
    # A password attempt: the server offers publickey only.
    p = sshd.ssh(k0, a, "true", "-o", "PubkeyAuthentication=no",
                 "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert p.returncode == 255 and "Permission denied (publickey)" in p.stderr, p.stderr
    # Host users and root do not get in either.
    for user in ("root", "nobody"):
        p = subprocess.run(["ssh", *SSH_OPTS, "-i", k0, "-p", str(sshd.port),
                            f"{user}@127.0.0.1", "true"], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        assert p.returncode == 255, p
    assert "Accepted password" not in sshd.logtext()


def test_a_stopped_container_refuses_with_a_clear_message(node_sshd, host_distro,
                                                          keypairs):
    node, sshd = node_sshd
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub)
    ok(sshd.ssh(key, uid, "true"))
    # Stop the daemon (containers keep running), then every container: the
    # keys file stays, so the key is accepted but nothing runs to enter.
    node.stop()
    p = node.run("stop-all", "--config", node.conf)
    assert p.returncode == 0, p.stderr
    assert init_of(uid) is None
    p = sshd.ssh(key, uid, "echo should-not-run")
    assert p.returncode == 1
    assert f"container {uid} is not running" in p.stderr
    assert "should-not-run" not in p.stdout


def test_a_key_change_takes_effect_within_1_second(node_sshd, host_distro, keypairs):
    node, sshd = node_sshd
    (old, p_old), (new, p_new) = keypairs[:2]
    uid = fresh_box(node, host_distro, p_old)
    init = init_of(uid)
    ok(sshd.ssh(old, uid, "true"))
    assert sshd.ssh(new, uid, "true").returncode == 255
    t = node.post(uid, {"ssh_keys": [p_new]})
    keys = os.path.join(node.home(uid), ".ssh", "uwsgi_authorized_keys")

    def rewritten():
        with open(keys) as f:
            return p_new in f.read()
    wait_for(rewritten, 1.0, "the keys file rewritten within 1 s")
    assert time.monotonic() - t <= 1.0
    ok(sshd.ssh(new, uid, "true"))
    p = sshd.ssh(old, uid, "true")
    assert p.returncode == 255 and "Permission denied" in p.stderr
    assert init_of(uid) == init  # not restarted


def test_scp_and_sftp(node_sshd, host_distro, keypairs, tmp_path):
    node, sshd = node_sshd
    key, pub = keypairs[0]
    uid = fresh_box(node, host_distro, pub)
    src = tmp_path / "payload.txt"
    src.write_text("copied with scp\n")
    common = [*SSH_OPTS, "-i", key, "-P", str(sshd.port)]
    p = subprocess.run(["scp", *common, str(src), f"{uid}@127.0.0.1:payload.txt"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr + sshd.logtext()[-3000:]
    dst = os.path.join(node.home(uid), "payload.txt")
    with open(dst) as f:
        assert f.read() == "copied with scp\n"
    assert os.stat(dst).st_uid == uid
    # Legacy scp protocol too (scp -O runs `scp -t` through the shell).
    p = subprocess.run(["scp", "-O", *common, str(src), f"{uid}@127.0.0.1:/containers/{uid}/o.txt"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert os.path.exists(os.path.join(node.home(uid), "o.txt"))
    # sftp: the container's sftp-server, inside (it sees /containers/<uid>).
    p = subprocess.run(["sftp", *common, "-b", "-", f"{uid}@127.0.0.1"],
                       input="pwd\nls\nls /containers\n", capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert "payload.txt" in p.stdout and "o.txt" in p.stdout
    assert f"Remote working directory: /containers/{uid}" in p.stdout
    p = subprocess.run(["sftp", *common, "-b", "-", f"{uid}@127.0.0.1"],
                       input="put /etc/hostname /usr/imperium-sftp-probe\n", capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0
    assert not os.path.exists("/usr/imperium-sftp-probe")


def test_two_containers_cannot_see_or_signal_each_other(node_sshd, host_distro,
                                                        keypairs):
    node, sshd = node_sshd
    (ka, pa), (kb, pb) = keypairs[:2]
    a, b = fresh_box(node, host_distro, pa), fresh_box(node, host_distro, pb)
    b_init, b_emperor = running(b)
    # A long session in b, so b has a shell too.
    c = subprocess.Popen(sshd.ssh_args(kb, b) + ["exec sleep 60"], stdin=subprocess.DEVNULL)
    sshd.clients.append(c)
    wait_for(lambda: any(n == "sleep" for n in procs_of_uid(b).values()), 10, "b's session")
    b_pids = set(procs_of_uid(b))
    out = ok(sshd.ssh(ka, a, "ls /proc; echo ---; ls /containers; echo ---; "
                             "cat /proc/*/status 2>/dev/null | grep ^Uid: | sort -u; echo ---; "
                             + "; ".join(f"kill -9 {p} 2>&1 || echo refused-{p}"
                                         for p in sorted(b_pids))))
    procs, homes, uids, kills = out.split("---\n")
    assert homes.split() == [str(a)]
    assert {line.split()[1] for line in uids.splitlines()} == {str(a)}
    for p in b_pids:
        assert f"refused-{p}" in kills
    # b is untouched.
    assert running(b) == (b_init, b_emperor)
    assert c.poll() is None
    assert b_pids <= set(procs_of_uid(b))
    c.kill()
    c.wait()


def wall(node, uid, msg):
    p = subprocess.run([WALL, "--state-dir", node.state, str(uid), msg], capture_output=True,
                       text=True, timeout=30)
    assert "ERROR: AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    return p


def test_alarms_are_written_to_open_shells(node_sshd, host_distro, keypairs):
    node, sshd = node_sshd
    (ka, pa), (kb, pb) = keypairs[:2]
    a, b = fresh_box(node, host_distro, pa), fresh_box(node, host_distro, pb)
    # No shell open: nothing written.
    p = wall(node, a, "nobody listens")
    assert p.returncode == 0 and p.stdout.strip() == "0", p
    shells = []
    for key, uid in ((ka, a), (ka, a), (kb, b)):
        shells.append(open_shell(sshd, key, uid))
    p = wall(node, a, "memory limit reached\nby vassal x\x1b[31m")
    assert p.returncode == 0 and p.stdout.strip() == "2", (p.stdout, p.stderr)
    for c in shells[:2]:
        got = read_until(c, "by vassal x[31m", 5)
        assert "[imperium] memory limit reached\nby vassal x[31m\n" in got.replace("\r", "")
        assert "x\x1b" not in got  # control characters are dropped
    # The other container's shell got nothing.
    c = shells[2]
    c.stdin.write(b"echo MARK-$((1+1))\n")
    c.stdin.flush()
    assert "memory limit" not in read_until(c, "MARK-2", 10)
    for c in shells:
        c.stdin.write(b"exit\n")
        c.stdin.flush()
        c.wait(timeout=10)
    # A stopped container is an error.
    node.stop()
    assert node.run("stop-all", "--config", node.conf).returncode == 0
    p = wall(node, a, "x")
    assert p.returncode == 1 and f"container {a} is not running" in p.stderr
