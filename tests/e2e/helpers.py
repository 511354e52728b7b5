"""Plain helpers of the end-to-end tests and of bench/bench.py: where the
binaries are, free ports, unique names, polling, and the host's view of
processes and mounts.  No pytest here, so the bench can import it (with
tests/e2e on sys.path); fixtures live in conftest.py, the node in nodeutil.py."""

import ctypes
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("IMPERIUM_BIN", os.path.join(ROOT, "build", "asan"))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

_names = itertools.count(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix):
    return f"{prefix}{os.getpid()}x{next(_names)}"


def next_number():
    """The counter behind unique(), for values that must differ too (addresses)."""
    return next(_names)


def wait_for(fn, timeout, what="condition", interval=0.02, error=AssertionError):
    """fn()'s first true value, polling every interval; error after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stop_proc(p, sig=signal.SIGTERM, timeout=20):
    """Stop Popen p with sig, SIGKILL after timeout s; False if it took the kill."""
    if p.poll() is not None:
        return True
    try:
        p.send_signal(sig)
        p.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return False


# ---- the host's view ----------------------------------------------------------

def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict((k, v.strip()) for k, v in (line.split(":", 1) for line in f if ":" in line))


def procs_of_uid(uid, ppids=False):
    """{pid: comm} (or {pid: (comm, ppid)}) of the live processes running as uid."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            st = proc_status(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if st["Uid"].split()[0] == str(uid) and st["State"][0] != "Z":
            out[int(p)] = (st["Name"], int(st["PPid"])) if ppids else st["Name"]
    return out


def mount_lines():
    with open("/proc/self/mountinfo") as f:
        return set(f.read().splitlines())


def reap_orphans(name="imperium-init"):
    """Inits outlive the daemon that started them and are then reparented
    to us (the subreaper): collect the dead ones.  Only zombies of that
    name, so the Popen objects of the API and the daemon keep theirs."""
    me = str(os.getpid())
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            st = proc_status(p)
        except OSError:
            continue
        if st.get("PPid") == me and st.get("State", " ")[0] == "Z" and st.get("Name") == name:
            try:
                os.waitpid(int(p), os.WNOHANG)
            except ChildProcessError:
                pass


# ---- network namespaces of a test run (issue 15; nodeutil.NetNode, the bench) -------

NETNS_DIR = "/run/netns"
NETNS_PREFIX = f"imp-{os.getpid()}-"
_netns_numbers = iter(range(1, 1 << 30))
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sweep_stale_netns():
    """Delete the `imp-<pid>-<n>` namespaces of test runs that died (their
    pid is gone): run once at session start."""
    if os.geteuid() != 0 or not os.path.isdir(NETNS_DIR):
        return
    for name in os.listdir(NETNS_DIR):
        parts = name.split("-")
        if len(parts) != 3 or parts[0] != "imp" or not parts[1].isdigit():
            continue
        if not os.path.exists(f"/proc/{parts[1]}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def in_netns(path, fn, *args, **kw):
    """fn(*args, **kw) called by a short-lived thread inside the network
    namespace at `path`: its result, or its exception raised here.  The
    caller's namespace is untouched; sockets fn makes keep the namespace
    they were made in (requests.get(...) talks to that namespace's lo)."""
    out = {}

    def work():
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                out["err"] = OSError(ctypes.get_errno(), f"setns {path}")
                return
            out["v"] = fn(*args, **kw)
        except BaseException as e:  # raised again in the caller's thread
            out["err"] = e
        finally:
            # Back home, or the thread must not live on (it dies here anyway).
            assert _libc.setns(own, CLONE_NEWNET) == 0
            os.close(own)
            os.close(target)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "err" in out:
        raise out["err"]
    return out["v"]


def socket_in_netns(path, *args):
    """A socket made inside the network namespace at `path`."""
    return in_netns(path, socket.socket, *args)


class Netns:
    """A network namespace of this test run, `imp-<pid>-<n>`, lo up;
    close() (or the with block's end) deletes it, also after a failure."""

    def __init__(self):
        self.name = f"{NETNS_PREFIX}{next(_netns_numbers)}"
        self.path = os.path.join(NETNS_DIR, self.name)
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True,
                       timeout=30)
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def nsenter(self):
        """The command prefix that runs a program in this namespace (only the
        network namespace changes, unlike `ip netns exec`)."""
        return ["nsenter", f"--net={self.path}"]

    def run(self, *cmd, check=False, timeout=30):
        """cmd inside the namespace: the CompletedProcess (text)."""
        p = subprocess.run([*self.nsenter(), *cmd], capture_output=True, text=True,
                           timeout=timeout)
        if check:
            assert p.returncode == 0, (cmd, p.stdout, p.stderr)
        return p

    def ip(self, *args):
        """`ip -n NAME ARGS`, which must succeed: its stdout."""
        p = subprocess.run(["ip", "-n", self.name, *args], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0, (args, p.stderr)
        return p.stdout

    def ip_json(self, *args):
        """`ip -j ARGS` in the namespace, parsed."""
        out = self.ip("-j", *args).strip()
        return json.loads(out) if out else []

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Relay:
    """127.0.0.1:port inside a namespace relayed to 127.0.0.1:port here (the
    API stays on the host's loopback).  close() stops listening."""

    def __init__(self, ns, port):
        self.port = port
        self.ls = socket_in_netns(ns.path)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while (d := a.recv(65536)):
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s, how in ((b, socket.SHUT_WR), (a, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return  # closed
            try:
                u = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def close(self):
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ls.close()


def unit_service_settings(text):
    """A systemd unit file's [Service] section: key -> its values in order
    (a repeated key such as SystemCallFilter keeps every line; a setting
    that takes one value is its last)."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith(("#", ";")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


class NotifySocket:
    """A unix datagram socket like systemd's $NOTIFY_SOCKET, `notify` in
    directory, for the daemons' sd_notify (READY=1, STOPPING=1)."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def recv(self, timeout):
        """The next message's lines (None after timeout seconds)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode().splitlines()
        except socket.timeout:
            return None

    def close(self):
        self.sock.close()
