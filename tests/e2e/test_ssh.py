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

import hashlib
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import BIN, ROOT, free_port
# The node daemon's fixtures and helpers: the same node, the same cleanup.
from test_node_daemon import (host_distro, init_of, make_node, procs_of_uid,  # noqa: F401
                              running, subreaper, wait_for)

SSHD = "/usr/sbin/sshd"
# imperium-enter and the NSS module run inside sshd: never the sanitizer build.
SSH_BIN = os.environ.get("IMPERIUM_SSH_BIN") or (
    os.path.dirname(BIN) if os.path.basename(BIN.rstrip("/")) == "asan" else BIN)
WALL = os.path.join(BIN, "imperium-wall")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root"),
    pytest.mark.skipif(not os.path.exists(SSHD), reason="needs openssh-server"),
    pytest.mark.skipif(not os.path.exists("/usr/lib/uwsgi/plugins/python3_plugin.so"),
                       reason="needs uwsgi-core and uwsgi-plugin-python3"),
]

SSH_OPTS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]


def etc_fingerprint():
    h = hashlib.sha256()
    for path in ("/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/etc/ssh/sshd_config"):
        with open(path, "rb") as f:
            h.update(f.read())
    h.update(str(os.path.exists("/etc/imperium")).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def keypairs():
    """Four ed25519 key pairs: [(private path, public line)]."""
    d = tempfile.mkdtemp(prefix="imperium-ssh-keys-")
    out = []
    for i in range(4):
        path = os.path.join(d, f"k{i}")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"k{i}@test",
                        "-f", path], check=True)
        with open(path + ".pub") as f:
            out.append((path, f.read().strip()))
    yield out
    shutil.rmtree(d, ignore_errors=True)


def reap_sshd():
    """sshd's per-connection processes that outlive the listener are
    reparented to us (the node tests make this process a subreaper): wait
    for them to end and reap them."""
    me = str(os.getpid())

    def left():
        busy = False
        for p in os.listdir("/proc"):
            try:
                with open(f"/proc/{p}/status") as f:
                    st = dict(line.split(":", 1) for line in f if ":" in line)
            except (FileNotFoundError, ProcessLookupError, NotADirectoryError, PermissionError):
                continue
            if st.get("PPid", "").strip() != me or st["Name"].strip() != "sshd":
                continue
            if st["State"].strip()[0] == "Z":
                try:
                    os.waitpid(int(p), os.WNOHANG)
                except ChildProcessError:
                    pass
            else:
                busy = True
        return not busy
    try:
        wait_for(left, 10, "sshd's connection processes to end", interval=0.05)
    finally:
        left()


class Sshd:
    def __init__(self, node):
        self.node = node
        self.dir = os.path.join(node.base, "sshd")
        self.port = free_port()
        self.proc = None
        self.clients = []

    def start(self):
        d = self.dir
        for sub in ("etc-upper/imperium", "etc-work", "lib", "bin"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        enter = os.path.join(d, "bin", "imperium-enter")
        shutil.copy(os.path.join(SSH_BIN, "imperium-enter"), enter)
        os.chown(enter, 0, 0)
        os.chmod(enter, 0o4755)
        shutil.copy(os.path.join(SSH_BIN, "libnss_imperium.so.2"), os.path.join(d, "lib"))
        with open(os.path.join(d, "etc-upper", "nsswitch.conf"), "w") as f:
            f.write("passwd: files imperium\ngroup: files imperium\nshadow: files\n"
                    "hosts: files dns\n")
        conf = os.path.join(d, "etc-upper", "imperium", "ssh.conf")
        with open(conf, "w") as f:
            f.write(f"containers_dir = {self.node.containers}\nstate_dir = {self.node.state}\n"
                    f"shell = {enter}\n")
        os.chmod(conf, 0o644)
        hostkey = os.path.join(d, "host_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey], check=True)
        script = (f"set -e; mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/etc-upper,"
                  f"workdir={d}/etc-work /etc; mount -t tmpfs -o mode=0755 tmpfs /run; "
                  f"mkdir -m 0755 /run/sshd; "
                  f"LD_LIBRARY_PATH={d}/lib exec {SSHD} -D -e -f {ROOT}/etc/ssh/sshd_config "
                  f"-h {hostkey} -p {self.port} -o ListenAddress=127.0.0.1 -o PidFile=none")
        self.log = open(os.path.join(d, "sshd.log"), "w")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                      script], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def listening():
            assert self.proc.poll() is None, self.logtext()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(listening, 10, "sshd listening", interval=0.05)

    def logtext(self):
        with open(os.path.join(self.dir, "sshd.log"), errors="replace") as f:
            return f.read()

    def stop(self):
        for c in self.clients:
            if c.poll() is None:
                c.kill()
                c.wait()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            self.log.close()
        reap_sshd()


    # -- clients --
    def ssh_args(self, key, uid, *extra):
        return ["ssh", *SSH_OPTS, "-i", key, "-p", str(self.port), *extra, f"{uid}@127.0.0.1"]

    def ssh(self, key, uid, command, *extra, timeout=30):
        return subprocess.run(self.ssh_args(key, uid, *extra) + [command], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def node_sshd(make_node):  # noqa: F811
    before = etc_fingerprint()
    node = make_node()
    sshd = Sshd(node)
    try:
        sshd.start()
        yield node, sshd
    finally:
        sshd.stop()
        assert etc_fingerprint() == before, "the host's /etc changed"


def up(node, distro, key):
    # Other people's containers may run on this machine under small uids
    # (another API's ids): skip uids that already have processes.
    from conftest import unique
    while True:
        uid = node.api.new_container(node.auth[0], node.server["name"], name=unique("box"),
                                     memory=256)
        if not procs_of_uid(uid):
            break
    node.uids.append(uid)
    node.launch(uid, distro, key)
    return uid


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p.stdout


def container_pids(uid):
    """Host pids of the container's processes."""
    return set(procs_of_uid(uid))


# ---- the tests -----------------------------------------------------------------

def test_a_command_runs_inside_the_container(node_sshd, host_distro, keypairs):  # noqa: F811
    node, sshd = node_sshd
    key, pub = keypairs[0]
    uid = up(node, host_distro, pub)
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


def test_files_go_to_the_home_and_usr_is_read_only(node_sshd, host_distro, keypairs):  # noqa: F811
    node, sshd = node_sshd
    key, pub = keypairs[0]
    uid = up(node, host_distro, pub)
    p = sshd.ssh(key, uid, "echo made-over-ssh > ~/over-ssh.txt && touch /usr/imperium-ssh-probe")
    assert p.returncode != 0
    assert "Read-only file system" in p.stderr, p.stderr
    path = os.path.join(node.home(uid), "over-ssh.txt")
    with open(path) as f:
        assert f.read() == "made-over-ssh\n"
    assert os.stat(path).st_uid == uid and os.stat(path).st_gid == uid
    assert not os.path.exists("/usr/imperium-ssh-probe")


def test_wrong_key_password_and_other_containers_key_are_refused(node_sshd, host_distro,  # noqa: F811
                                                                  keypairs):
    node, sshd = node_sshd
    (k0, p0), (k1, p1), (k2, _) = keypairs[:3]
    a, b = up(node, host_distro, p0), up(node, host_distro, p1)
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


def test_a_stopped_container_refuses_with_a_clear_message(node_sshd, host_distro,  # noqa: F811
                                                          keypairs):
    node, sshd = node_sshd
    key, pub = keypairs[0]
    uid = up(node, host_distro, pub)
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


def test_a_key_change_takes_effect_within_1_second(node_sshd, host_distro, keypairs):  # noqa: F811
    node, sshd = node_sshd
    (old, p_old), (new, p_new) = keypairs[:2]
    uid = up(node, host_distro, p_old)
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


def test_scp_and_sftp(node_sshd, host_distro, keypairs, tmp_path):  # noqa: F811
    node, sshd = node_sshd
    key, pub = keypairs[0]
    uid = up(node, host_distro, pub)
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


def test_two_containers_cannot_see_or_signal_each_other(node_sshd, host_distro,  # noqa: F811
                                                        keypairs):
    node, sshd = node_sshd
    (ka, pa), (kb, pb) = keypairs[:2]
    a, b = up(node, host_distro, pa), up(node, host_distro, pb)
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


def read_until(proc, text, timeout):
    """Read proc's stdout until text appears; returns what was read."""
    buf = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while text.encode() not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {text!r}; got {buf!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"EOF waiting for {text!r}; got {buf!r}")
            buf += chunk
    return buf.decode(errors="replace")


def wall(node, uid, msg):
    p = subprocess.run([WALL, "--state-dir", node.state, str(uid), msg], capture_output=True,
                       text=True, timeout=30)
    assert "ERROR: AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    return p


def test_alarms_are_written_to_open_shells(node_sshd, host_distro, keypairs):  # noqa: F811
    node, sshd = node_sshd
    (ka, pa), (kb, pb) = keypairs[:2]
    a, b = up(node, host_distro, pa), up(node, host_distro, pb)
    # No shell open: nothing written.
    p = wall(node, a, "nobody listens")
    assert p.returncode == 0 and p.stdout.strip() == "0", p
    shells = []
    for key, uid in ((ka, a), (ka, a), (kb, b)):
        c = subprocess.Popen(sshd.ssh_args(key, uid, "-tt"), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sshd.clients.append(c)
        c.stdin.write(b"stty -echo; echo READY-$((6*7))\n")
        c.stdin.flush()
        read_until(c, "READY-42", 15)
        shells.append(c)
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
