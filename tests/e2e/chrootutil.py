"""A throw-away Debian root for the packages' test (test_packages.py): made by
debootstrap (minbase, from Debian's mirror) or unpacked from a cached tarball
of one, with /proc mounted inside while it is used, and removed at the end
only once nothing is mounted under it any more (a recursive removal that
crossed into a /proc or a bind mount would delete the host's files).

Nothing here talks to anything but Debian's mirror (debootstrap, apt inside
the root) and the programs the test starts inside the root."""

import atexit
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

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
# Refuses every service start (invoke-rc.d and deb-systemd-invoke ask it):
# openssh-server's postinst would otherwise start an sshd on the host's
# port 22, the chroot sharing the host's network.
ROOT_PREFIX = "imperium-root-"
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
    never one with a mount left."""
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
        self.started = []  # Popen objects of the programs started inside
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

    def bind_cgroups(self):
        """The host's cgroup hierarchy (v1 or v2, as mounted) at the same
        place inside, for a node's containers; a slave: the host's changes
        reach it, its unmount at the end does not reach the host."""
        os.makedirs(self.host_path("/sys/fs/cgroup"), exist_ok=True)
        self.mount("--rbind", "/sys/fs/cgroup", at="/sys/fs/cgroup")
        subprocess.run(["mount", "--make-rslave", self.host_path("/sys/fs/cgroup")],
                       check=True, timeout=30)

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

    def cmd(self, *argv, user=None, group=None, cwd=None, binds=()):
        """The host command running argv inside the root (as user:group if
        given, in cwd inside the root if given).  binds: (source, target)
        paths inside the root, each bound read-only over its target in a
        mount namespace of the command's own (a unit's BindReadOnlyPaths:
        private, so neither the host nor the rest of the root sees them, and
        gone with the namespace's last process)."""
        spec = [f"--userspec={user}:{group or user}"] if user else []
        chdir = ["/usr/bin/env", f"--chdir={cwd}"] if cwd else []
        inner = ["chroot", *spec, self.path, *chdir, *argv]
        if not binds:
            return inner
        script = "set -e; " + "".join(
            f"mount --bind -o ro {shlex.quote(self.host_path(src))} "
            f"{shlex.quote(self.host_path(dst))}; " for src, dst in binds) + 'exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                *inner]

    def run(self, *argv, timeout=120, check=True, user=None, env=None, binds=()):
        """argv inside the root: the CompletedProcess (text); check=True
        fails with its output when it exits non-zero."""
        p = subprocess.run(self.cmd(*argv, user=user, binds=binds), capture_output=True, text=True,
                           timeout=timeout, env={**ENV, **(env or {})},
                           stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {p.returncode} in the root:\n"
                                 f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
        return p

    def start(self, *argv, logpath, user=None, group=None, cwd=None, env=None, umask=-1,
              binds=()):
        """argv inside the root in the background, output to logpath (host)."""
        with open(logpath, "ab") as log:
            p = subprocess.Popen(self.cmd(*argv, user=user, group=group, cwd=cwd, binds=binds),
                                 stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**ENV, **(env or {})}, umask=umask)
        self.started.append(p)
        return p

    # ---- removing it ----
    def _kill_inside(self):
        for p in self.started:
            if p.poll() is None:
                p.terminate()
        for p in self.started:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        # Whatever our programs left running inside (their children: the root
        # is ours, so is everything whose root it is).
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
