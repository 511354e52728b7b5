"""Plain helpers of the end-to-end tests and of bench/bench.py: where the
binaries are, free ports, unique names, polling, and the host's view of
processes and mounts.  No pytest here, so the bench can import it (with
tests/e2e on sys.path); fixtures live in conftest.py, the node in nodeutil.py."""

import itertools
import os
import signal
import socket
import subprocess
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
