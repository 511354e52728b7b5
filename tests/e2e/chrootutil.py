"""A throw-away Debian root for the packages' test (test_packages.py): made by
debootstrap (minbase, from Debian's mirror) or unpacked from a cached tarball
of one, with /proc mounted inside while it is used as a chroot, and removed
at the end only once nothing is mounted under it any more (a recursive
removal that crossed into a /proc or a bind mount would delete the host's
files).  Then booted (Machine): systemd as its PID 1 under systemd-nspawn,
in a network namespace of its own, driven with systemctl as on a server.

Nothing here talks to anything but Debian's mirror (debootstrap, apt inside
the root before it boots) and the programs the test starts inside the root;
the booted machine has only its own loopback."""

import atexit
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from helpers import proc_status

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# The one thing cached outside temporary directories: a tarball of a fresh
# minbase root, reused while younger than CACHE_MAX_AGE (CI machines are fresh
# and simply debootstrap).  IMPERIUM_TEST_ROOT_CACHE='' turns the cache off.
CACHE_DIR = os.environ.get("IMPERIUM_TEST_ROOT_CACHE", "/var/cache/imperium-tests")
CACHE_MAX_AGE = 14 * 86400
# What the maintainer scripts see: no tty, no questions, C locale.
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LANG": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive",
       "DEBCONF_NONINTERACTIVE_SEEN": "true"}
ROOT_PREFIX = "imperium-root-"
# Refuses every service start (invoke-rc.d and deb-systemd-invoke ask it)
# while the root is a chroot sharing the host's network (apt installing
# systemd must start nothing there); removed before the boot.
POLICY_RC_D = "#!/bin/sh\n# imperium's packages test: no service starts in this root\nexit 101\n"


def _unescape(field):
    """A path of /proc/self/mounts, whose spaces etc. are octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path):
    """Mount points at or below path (deepest first), from /proc/self/mounts."""
    real = os.path.realpath(path)
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mp = _unescape(line.split()[1])
            if mp == real or mp.startswith(real + "/"):
                out.append(mp)
    return sorted(set(out), key=len, reverse=True)


def procs_in(path):
    """Pids of the processes whose root directory is path (what runs inside)."""
    real = os.path.realpath(path)
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{p}/root") == real:
                pids.append(int(p))
        except OSError:
            continue  # gone, or a kernel thread
    return pids


def sweep_stale(log=print, prefix=ROOT_PREFIX):
    """Unmount and remove the temporary directories `<prefix><pid>-*` of
    test runs that died (killed before their cleanup: their pid is gone),
    never one with a mount left; their machines and cgroups first."""
    _sweep_stale_cgroups(log)
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        pid = name[len(prefix):].split("-")[0]
        if not name.startswith(prefix) or not pid.isdigit() or \
                os.path.exists(f"/proc/{pid}"):
            continue
        parent = os.path.join(tmp, name)
        for _ in range(5):
            for mp in mounts_under(parent):
                subprocess.run(["umount", "-l", mp], capture_output=True, timeout=60)
        if mounts_under(parent):
            log(f"sweep: {parent} of a dead run still has mounts; left alone")
            continue
        log(f"sweep: removing {parent}, left by a dead run")
        shutil.rmtree(parent, ignore_errors=True)


def _run(cmd, where, timeout, check):
    """cmd (a host command running something inside `where`) with the
    maintainer scripts' environment: the CompletedProcess (text); check=True
    fails with its output when it exits non-zero."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode} in {where}:\n"
                             f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


class Chroot:
    """A Debian root in a new temporary directory; use as a context manager
    (or call close()): whatever happens, what runs inside is killed, what is
    mounted inside is unmounted, and only then is the directory removed."""

    def __init__(self, log=print):
        self.log = log
        sweep_stale(log)
        # The pid in the name: sweep_stale() knows a root whose test died.
        self.parent = tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-")
        atexit.register(self.close)  # a session that ends half-way
        self.path = os.path.join(self.parent, "root")
        try:
            self._make()
            self._prepare()
        except BaseException:
            self.close()
            raise

    # ---- making it ----
    def _cache_file(self):
        if not CACHE_DIR:
            return None
        arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        return os.path.join(CACHE_DIR, f"{SUITE}-minbase-{arch}.tar")

    def _make(self):
        cache = self._cache_file()
        if cache and os.path.exists(cache) and time.time() - os.path.getmtime(cache) < CACHE_MAX_AGE:
            self.log(f"root: unpacking the cached {cache}")
            os.mkdir(self.path)
            subprocess.run(["tar", "-xpf", cache, "--numeric-owner", "-C", self.path],
                           check=True, timeout=300)
            return
        self.log(f"root: debootstrap --variant=minbase {SUITE} from {MIRROR}")
        t0 = time.monotonic()
        p = subprocess.run(["debootstrap", "--variant=minbase", SUITE, self.path, MIRROR],
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({p.returncode}):\n{p.stdout[-3000:]}"
                               f"\n{p.stderr[-3000:]}")
        self.log(f"root: debootstrap took {time.monotonic() - t0:.0f} s")
        if cache:
            self._save(cache)

    def _save(self, cache):
        """Tar the fresh root into the cache, atomically (a half-written
        tarball is never found); a failure only costs the next run time."""
        tmp = f"{cache}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            subprocess.run(["tar", "-cpf", tmp, "--numeric-owner", "-C", self.path, "."],
                           check=True, timeout=300)
            os.replace(tmp, cache)
        except (OSError, subprocess.SubprocessError) as e:
            self.log(f"root: not cached ({e})")
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _prepare(self):
        self.write("/usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)
        # The host's resolver, for apt (debootstrap copied it once; a cached
        # root may come from another network).
        shutil.copyfile("/etc/resolv.conf", self.host_path("/etc/resolv.conf"))
        # The root a mount point of its own (pivot_root, which a node's
        # containers start with, refuses a chroot's root that is not one),
        # private: nothing mounted below it propagates to the host's mounts,
        # and no unmount at the end either.
        subprocess.run(["mount", "--bind", self.path, self.path], check=True, timeout=30)
        subprocess.run(["mount", "--make-private", self.path], check=True, timeout=30)
        self.mount("-t", "proc", "proc", at="/proc")

    def mount(self, *args, at):
        """`mount ARGS HOST_PATH_OF(at)`; close() unmounts it."""
        subprocess.run(["mount", *args, self.host_path(at)], check=True, timeout=30)

    # ---- using it ----
    def host_path(self, path):
        """The host's path of path inside the root."""
        return os.path.join(self.path, path.lstrip("/"))

    def read(self, path):
        with open(self.host_path(path)) as f:
            return f.read()

    def write(self, path, text, mode=0o644):
        with open(self.host_path(path), "w") as f:
            f.write(text)
        os.chmod(self.host_path(path), mode)

    def cmd(self, *argv):
        """The host command running argv inside the root."""
        return ["chroot", self.path, *argv]

    def run(self, *argv, timeout=120, check=True):
        """argv inside the root (as root): the CompletedProcess (text);
        check=True fails with its output when it exits non-zero."""
        return _run(self.cmd(*argv), "the root", timeout, check)

    # ---- removing it ----
    def _kill_inside(self):
        """Whatever a command left running inside (a maintainer script's
        daemon, were policy-rc.d ignored): the root is ours, so is
        everything whose root it is."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = procs_in(self.path)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while procs_in(self.path) and time.monotonic() < deadline:
                time.sleep(0.1)

    def close(self):
        """Kill, unmount (lazily, deepest first), check that nothing is
        mounted under the root any more, and only then remove it."""
        if self.parent is None:
            return
        if os.path.isdir(self.path):
            self._kill_inside()
            # Rounds: a mount point may hold several mounts stacked.
            for _ in range(5):
                for mp in mounts_under(self.parent):
                    subprocess.run(["umount", "-l", mp], capture_output=True, timeout=60)
            left = mounts_under(self.parent)
            if left:
                raise RuntimeError(f"still mounted under {self.parent}: {left}; "
                                   "not removing it (unmount them, then remove it by hand)")
        shutil.rmtree(self.parent)
        self.parent = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- the root booted: systemd as its PID 1 (systemd-nspawn) --------------------------

# This run's cgroups on the host: `<prefix><pid>-nspawn` holds nspawn and the
# machine (name=systemd and cgroup2 hierarchies), `<prefix><pid>` the node's
# containers (its cgroup_parent, in the v1 controllers).
CGROUP_PREFIX = "imperium-pkgtest-"
MACHINE_PREFIX = "imptest"  # + the run's pid: the machine's name
PROPAGATE = "/run/systemd/nspawn/propagate"  # nspawn's, per machine; left on a non-tmpfs /run
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "blkio")  # the node's (cgroup.h)


def _cgroup_hierarchies():
    """{key: mount point} of the host's cgroup hierarchies: each v1
    controller by name, "name=systemd", and "" for cgroup2."""
    out = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mp, fstype, opts = line.split()[:4]
            if fstype == "cgroup2":
                out.setdefault("", _unescape(mp))
            elif fstype == "cgroup":
                for o in opts.split(","):
                    if o in V1_CONTROLLERS or o == "name=systemd":
                        out.setdefault(o, _unescape(mp))
    return out


def _own_cgroup(key):
    """This process's cgroup path in hierarchy key ("" for cgroup2)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            if key in names.split(",") or (key == "" and names == ""):
                return path
    return "/"


def _own_cgroup_dirs():
    """This process's cgroup in each hierarchy: {key: host path}."""
    return {k: os.path.normpath(mp + _own_cgroup(k)) for k, mp in _cgroup_hierarchies().items()}


def _cgroup_dirs(name):
    """Where a cgroup `name` made beside this process's lands in each
    hierarchy: {key: host path}."""
    return {k: os.path.join(d, name) for k, d in _own_cgroup_dirs().items()}


def _remove_cgroup_tree(path, kill=False):
    """rmdir a cgroup and its children, deepest first (SIGKILL to what is
    still in them first if kill); what cannot be removed is left."""
    if not os.path.isdir(path):
        return
    for _ in range(50 if kill else 1):
        for d, _, _ in sorted(os.walk(path), key=lambda w: len(w[0]), reverse=True):
            if kill:
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        for pid in f.read().split():
                            os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            try:
                os.rmdir(d)
            except OSError:
                pass
        if not os.path.isdir(path):
            return
        time.sleep(0.1)


def _sweep_stale_cgroups(log):
    """The cgroups of runs that died: their machine killed, then removed."""
    for base in _own_cgroup_dirs().values():
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            pid = name[len(CGROUP_PREFIX):].split("-")[0]
            if name.startswith(CGROUP_PREFIX) and pid.isdigit() and \
                    not os.path.exists(f"/proc/{pid}"):
                log(f"sweep: removing cgroup {base}/{name}, left by a dead run")
                _remove_cgroup_tree(os.path.join(base, name), kill=True)
    for name in os.listdir(PROPAGATE) if os.path.isdir(PROPAGATE) else ():
        pid = name[len(MACHINE_PREFIX):]
        path = os.path.join(PROPAGATE, name)
        if name.startswith(MACHINE_PREFIX) and pid.isdigit() and \
                not os.path.exists(f"/proc/{pid}") and not mounts_under(path):
            shutil.rmtree(path, ignore_errors=True)


class Machine:
    """A Chroot booted: `systemd-nspawn --boot`, systemd as its PID 1, in a
    network namespace of its own (its loopback only: nothing it runs reaches
    the host's network or anything else), in a cgroup of this run's.  The
    cgroup v1 controllers a node needs, which nspawn mounts read-only inside,
    are made writable (a server's are).  Commands run inside with nsenter
    (all its namespaces), HTTP from a thread inside its network namespace.
    close() powers it off as a server shuts down (SIGTERM to nspawn: systemd
    stops every unit), SIGKILL to the whole machine if that hangs."""

    def __init__(self, root, logpath, log=print):
        self.root, self.log = root, log
        self.name = f"{MACHINE_PREFIX}{os.getpid()}"
        self.cgroup_parent = f"{CGROUP_PREFIX}{os.getpid()}"
        self.proc, self.leader, self.returncode = None, None, None
        self.own = _cgroup_dirs(f"{self.cgroup_parent}-nspawn")
        atexit.register(self.close)  # before the root's own close (LIFO)
        # Services start here as on a server (the chroot's policy refused
        # them); the machine mounts its own /proc.
        os.unlink(root.host_path("/usr/sbin/policy-rc.d"))
        subprocess.run(["umount", root.host_path("/proc")], check=True, timeout=30)
        dirs = [d for k, d in self.own.items() if k in ("", "name=systemd")]
        for d in dirs:
            os.makedirs(d)

        def enter_cgroup():  # in the child, before exec: nspawn's payload lands below
            for d in dirs:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write("0")
        argv = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--private-network",
                f"--machine={self.name}", f"--directory={root.path}"]
        # /proc/sys/net writable: the settings of the machine's own network
        # namespace (a node turns ip_forward on there); the rest of /proc/sys,
        # the host's, stays read-only.
        env = {**ENV, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
        with open(logpath, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         preexec_fn=enter_cgroup)
        try:
            self._boot(logpath)
        except BaseException:
            self.close()
            raise

    def _boot(self, logpath):
        t0 = time.monotonic()
        while self.leader is None:
            if self.proc.poll() is not None or time.monotonic() - t0 > 60:
                with open(logpath, errors="replace") as f:
                    raise RuntimeError(f"systemd-nspawn did not boot the root:\n{f.read()[-4000:]}")
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    kids = f.read().split()
                for k in kids:
                    with open(f"/proc/{k}/comm") as f:
                        if f.read().strip() == "systemd":
                            self.leader = int(k)
            except OSError:
                pass
            time.sleep(0.1)
        # Until systemd has its socket, systemctl cannot connect and says
        # nothing; then --wait waits for the boot's end.
        while True:
            p = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=180)
            state = p.stdout.strip()
            if state or time.monotonic() - t0 > 120:
                break
            time.sleep(0.2)
        if state != "running":
            failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
            with open(logpath, errors="replace") as f:
                console = f.read()[-4000:]
            raise RuntimeError(f"the machine booted {state!r} ({p.stderr.strip()}); failed "
                               f"units:\n{failed}\nits console:\n{console}")
        self.log(f"machine {self.name}: systemd running in {time.monotonic() - t0:.1f} s")
        with open(f"/proc/{self.leader}/mounts") as f:
            for line in f:
                _, mp, fstype, opts = line.split()[:4]
                if fstype == "cgroup" and "ro" in opts.split(",") and \
                        set(opts.split(",")) & set(V1_CONTROLLERS):
                    subprocess.run(["nsenter", "-t", str(self.leader), "-m", "mount", "-o",
                                    "remount,bind,rw", _unescape(mp)], check=True, timeout=30)

    # ---- using it ----
    def cmd(self, *argv):
        return ["nsenter", "-t", str(self.leader), "-a", *argv]

    def run(self, *argv, timeout=120, check=True):
        """argv inside the machine (as root, its namespaces): the
        CompletedProcess (text); check=True fails with its output."""
        return _run(self.cmd(*argv), "the machine", timeout, check)

    def netns(self):
        """Its network namespace (for helpers.in_netns, nsenter --net)."""
        return f"/proc/{self.leader}/ns/net"

    def show(self, unit, *props):
        """`systemctl show` of unit: {property: value}."""
        out = self.run("systemctl", "show", unit, *[f"--property={p}" for p in props]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit, since=None):
        """The unit's journal (since a `journalctl --show-cursor` cursor)."""
        args = ["journalctl", "--no-pager", "-o", "cat", "-u", unit]
        return self.run(*args, *([f"--after-cursor={since}"] if since else [])).stdout

    def cursor(self):
        """The journal's current end, for journal(since=...)."""
        out = self.run("journalctl", "--no-pager", "-n", "0", "--show-cursor").stdout
        return re.search(r"^-- cursor: (\S+)", out, re.M).group(1)

    def host_pid(self, pid):
        """The host's pid of the machine's process pid."""
        ns = os.readlink(f"/proc/{self.leader}/ns/pid")
        for p in os.listdir("/proc"):
            try:
                if not p.isdigit() or os.readlink(f"/proc/{p}/ns/pid") != ns:
                    continue
                if proc_status(p)["NSpid"].split()[-1] == str(pid):
                    return int(p)
            except OSError:
                continue
        raise AssertionError(f"no process {pid} in the machine")

    # ---- removing it ----
    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # nspawn: systemd's shutdown inside
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.log(f"machine {self.name}: no shutdown in 90 s, killed")
                if self.leader:
                    os.kill(self.leader, signal.SIGKILL)  # the whole pid namespace
                self.proc.kill()
                self.proc.wait(timeout=30)
        if self.proc is not None and self.returncode is None:
            self.returncode = self.proc.returncode
        for d in self.own.values():
            _remove_cgroup_tree(d, kill=True)
        for k, d in _cgroup_dirs(self.cgroup_parent).items():
            if k in V1_CONTROLLERS:
                _remove_cgroup_tree(d)
        propagate = os.path.join(PROPAGATE, self.name)
        if os.path.isdir(propagate) and not mounts_under(propagate):
            shutil.rmtree(propagate, ignore_errors=True)
