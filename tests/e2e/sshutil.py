"""ssh into a test node (docs/SSH.md): a real OpenSSH sshd with the project's
etc/ssh/sshd_config, the NSS module and imperium-enter, listening on a free
port of 127.0.0.1 in a mount namespace of its own (see test_ssh.py for what
it overlays).  The keypairs fixture is in conftest.py."""

import contextlib
import hashlib
import os
import select
import shutil
import signal
import socket
import subprocess
import time

from helpers import BIN, ROOT, free_port, proc_status, wait_for

SSHD = "/usr/sbin/sshd"
# imperium-enter and the NSS module run inside sshd (setuid root once
# installed): never the sanitizer build.
SSH_BIN = os.environ.get("IMPERIUM_SSH_BIN") or (
    os.path.dirname(BIN) if os.path.basename(BIN.rstrip("/")) == "asan" else BIN)

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


def reap_sshd():
    """sshd's per-connection processes that outlive the listener are
    reparented to us (the node tests make this process a subreaper): wait
    for them to end and reap them."""
    me = str(os.getpid())

    def left():
        busy = False
        for p in os.listdir("/proc"):
            try:
                st = proc_status(p)
            except OSError:
                continue
            if st.get("PPid", "") != me or st["Name"] != "sshd":
                continue
            if st["State"][0] == "Z":
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
    """The test sshd in front of node's containers."""

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
        # slave: the homes the node mounts later (quota = loop: each is an
        # image on the shared containers directory) appear here too.
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "slave", "sh", "-c",
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


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p.stdout


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


def open_shell(sshd, key, uid):
    """An interactive ssh session (a tty) into container uid, ready for
    input; closed with the sshd fixture."""
    c = subprocess.Popen(sshd.ssh_args(key, uid, "-tt"), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sshd.clients.append(c)
    c.stdin.write(b"stty -echo; echo READY-$((6*7))\n")
    c.stdin.flush()
    read_until(c, "READY-42", 15)
    return c


@contextlib.contextmanager
def sshd_in_front(node):
    """A started test sshd (Sshd) in front of node; the host's /etc must be
    unchanged at the end."""
    before = etc_fingerprint()
    sshd = Sshd(node)
    try:
        sshd.start()
        yield sshd
    finally:
        sshd.stop()
        assert etc_fingerprint() == before, "the host's /etc changed"
