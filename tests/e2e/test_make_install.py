"""`make install` (issue 21): the layout the Debian packages ship, with its
modes; the installed binaries run; the installed units pass
`systemd-analyze verify`; the installed node finds its helpers in
PREFIX/lib/imperium with no setting; and the daemons tell systemd they are
ready (sd_notify READY=1 over $NOTIFY_SOCKET, Type=notify units) only once
they are: the API when its port answers, the node when its first state is
applied.  As root, the installed API also runs under its unit's sandbox
rebuilt by hand (systemd is not PID 1 here) and still does its job.

make install builds the plain (non-sanitized) binaries: the build directory
is IMPERIUM_BIN's parent when IMPERIUM_BIN is a sanitizer build (build/asan
-> build), so a tree built by `make all asan` installs without a rebuild.
The readiness tests start the sanitizer build, like every other test."""

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import free_port
from helpers import BIN, ROOT, SANITIZER_MARKERS, NotifySocket, stop_proc, unit_service_settings

PLAIN_BIN = os.path.dirname(BIN) if os.path.basename(BIN) == "asan" else BIN
MULTIARCH = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                           text=True).stdout.strip()

# The contract's table (docs/design/issue21/CONTRACT.md) with PREFIX=/usr:
# path -> mode (S_IMODE).
LAYOUT = {
    "usr/bin/imperium": 0o755,
    "usr/sbin/imperium-api": 0o755,
    "usr/sbin/imperium-node": 0o755,
    "usr/lib/imperium/imperium-init": 0o755,
    "usr/lib/imperium/imperium-acme-hook": 0o755,
    "usr/lib/imperium/imperium-legion-hook": 0o755,
    "usr/lib/imperium/imperium-wall": 0o755,
    "usr/lib/imperium/imperium-enter": 0o4755,
    "usr/lib/imperium/imperium_http_plugin.so": 0o644,
    "usr/lib/imperium/imperium_corerouter_plugin.so": 0o644,
    "usr/lib/imperium/imperium_fastrouter_plugin.so": 0o644,
    f"usr/lib/{MULTIARCH}/libnss_imperium.so.2": 0o644,
    "usr/share/imperium/shortcuts.ini": 0o644,
    "etc/imperium/api.conf": 0o640,
    "etc/imperium/node.conf": 0o640,
    "etc/imperium/sshd_config": 0o644,
    "etc/imperium/ssh.conf": 0o644,
    "etc/imperium/nsswitch.conf": 0o644,
    "lib/systemd/system/imperium-api.service": 0o644,
    "lib/systemd/system/imperium-node.service": 0o644,
    "lib/systemd/system/imperium-sshd.service": 0o644,
    "var/lib/imperium": 0o750,
    "var/lib/imperium-node/state": 0o700,
    "var/lib/imperium-node/containers": 0o755,
}
UNITS = ("imperium-api.service", "imperium-node.service", "imperium-sshd.service")


def make_install(*assignments):
    p = subprocess.run(["make", "-C", ROOT, f"B={PLAIN_BIN}", f"BA={BIN}", "install",
                        *assignments], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def destdir():
    """make install DESTDIR=<tmp> PREFIX=/usr: what the packages ship."""
    d = tempfile.mkdtemp(prefix="imperium-install-")
    try:
        make_install(f"DESTDIR={d}", "PREFIX=/usr")
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def prefixed():
    """make install with every prefix under one temporary directory, so that
    the paths inside the units and configs (sed'ed to the prefixes) exist on
    this machine: what systemd-analyze verify and the helper lookup need."""
    d = tempfile.mkdtemp(prefix="imperium-prefix-")
    os.chmod(d, 0o755)  # test_installed_node_finds_its_init runs it as nobody
    try:
        make_install(f"PREFIX={d}/usr", f"SYSCONFDIR={d}/etc", f"LOCALSTATEDIR={d}/var",
                     f"UNITDIR={d}/units")
        yield d
    finally:
        shutil.rmtree(d)


def test_layout_and_modes(destdir):
    wrong = {}
    for path, mode in LAYOUT.items():
        full = os.path.join(destdir, path)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            wrong[path] = "missing"
            continue
        if stat.S_IMODE(st.st_mode) != mode:
            wrong[path] = oct(stat.S_IMODE(st.st_mode))
    assert wrong == {}, wrong
    enter = os.stat(os.path.join(destdir, "usr/lib/imperium/imperium-enter"))
    assert enter.st_mode & stat.S_ISUID
    if os.geteuid() == 0:
        assert (enter.st_uid, enter.st_gid) == (0, 0)
    # The CLI's default token file is the one the API writes.
    assert os.readlink(os.path.join(destdir, "etc/imperium/admin.token")) == \
        "/var/lib/imperium/admin.token"
    # Nothing else is installed: every file is in the table.
    found = set()
    for top, _, files in os.walk(destdir):
        for f in files:
            found.add(os.path.relpath(os.path.join(top, f), destdir))
    assert found == {p for p in LAYOUT if not p.startswith("var/")} | {"etc/imperium/admin.token"}


def test_installed_binaries_are_the_plain_build(destdir):
    for prog in ("usr/sbin/imperium-api", "usr/sbin/imperium-node", "usr/bin/imperium"):
        with open(os.path.join(destdir, prog), "rb") as f:
            assert b"AddressSanitizer" not in f.read(), prog
    # imperium-init runs inside any distro: static.
    p = subprocess.run(["file", "-b", os.path.join(destdir, "usr/lib/imperium/imperium-init")],
                       capture_output=True, text=True)
    if p.returncode == 0:
        assert "statically linked" in p.stdout or "static-pie" in p.stdout, p.stdout


def test_installed_help_runs(destdir):
    api = subprocess.run([os.path.join(destdir, "usr/sbin/imperium-api"), "--help"],
                         capture_output=True, text=True, timeout=30)
    assert api.returncode == 0 and "usage: imperium-api" in api.stdout, api.stdout + api.stderr
    cli = subprocess.run([os.path.join(destdir, "usr/bin/imperium"), "--help"],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0 and "imperium" in cli.stdout, cli.stdout + cli.stderr


def test_shipped_configs(destdir):
    api = open(os.path.join(destdir, "etc/imperium/api.conf")).read()
    for line in ("listen = 127.0.0.1", "port = 8080",
                 "database = sqlite:/var/lib/imperium/imperium.db",
                 "admin_token_file = /var/lib/imperium/admin.token"):
        assert line in api.splitlines()
    node = open(os.path.join(destdir, "etc/imperium/node.conf")).read().splitlines()
    for line in ("secret_file = /etc/imperium/node.secret",
                 "state_dir = /var/lib/imperium-node/state",
                 "containers_dir = /var/lib/imperium-node/containers",
                 "shortcuts = /usr/share/imperium/shortcuts.ini"):
        assert line in node
    # Not complete: the supplier fills in the API and the server.
    assert not [x for x in node if x.startswith(("api_url", "server_name"))]
    ssh = open(os.path.join(destdir, "etc/imperium/ssh.conf")).read().splitlines()
    assert "shell = /usr/lib/imperium/imperium-enter" in ssh
    assert "containers_dir = /var/lib/imperium-node/containers" in ssh
    sshd = open(os.path.join(destdir, "etc/imperium/sshd_config")).read().splitlines()
    assert "HostKey /etc/imperium/ssh_host_ed25519_key" in sshd
    assert "PidFile none" in sshd
    nss = open(os.path.join(destdir, "etc/imperium/nsswitch.conf")).read().splitlines()
    assert "passwd: files imperium" in nss


def test_installed_configs_are_kept(prefixed):
    """A second make install never overwrites a config the supplier changed."""
    conf = os.path.join(prefixed, "etc/imperium/api.conf")
    with open(conf, "a") as f:
        f.write("workers = 3\n")
    p = make_install(f"PREFIX={prefixed}/usr", f"SYSCONFDIR={prefixed}/etc",
                     f"LOCALSTATEDIR={prefixed}/var", f"UNITDIR={prefixed}/units")
    assert "api.conf exists: kept" in p.stdout
    assert open(conf).read().endswith("workers = 3\n")


def test_units_and_configs_follow_the_prefixes(prefixed):
    api = open(os.path.join(prefixed, "units/imperium-api.service")).read().splitlines()
    assert (f"ExecStart={prefixed}/usr/sbin/imperium-api -c {prefixed}/etc/imperium/api.conf"
            in api)
    assert f"ReadWritePaths={prefixed}/var/lib/imperium" in api
    node = open(os.path.join(prefixed, "etc/imperium/node.conf")).read().splitlines()
    assert f"shortcuts = {prefixed}/usr/share/imperium/shortcuts.ini" in node


@pytest.mark.skipif(not shutil.which("systemd-analyze"),
                    reason="needs systemd-analyze (systemd, scripts/packages.txt)")
@pytest.mark.parametrize("unit", UNITS)
def test_units_verify(prefixed, unit):
    """No warning either: systemd-analyze exits 0 on an unknown key."""
    p = subprocess.run(["systemd-analyze", "verify", unit], cwd=os.path.join(prefixed, "units"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr


def test_units_say_what_the_contract_says(destdir):
    def unit(name):
        return open(os.path.join(destdir, "lib/systemd/system", name)).read().splitlines()
    api = unit("imperium-api.service")
    for line in ("Type=notify", "User=imperium", "Restart=on-failure",
                 "ExecStart=/usr/sbin/imperium-api -c /etc/imperium/api.conf",
                 "ProtectSystem=strict", "ReadWritePaths=/var/lib/imperium", "PrivateTmp=yes",
                 "NoNewPrivileges=yes", "CapabilityBoundingSet=",
                 "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes"):
        assert line in api, line
    node = unit("imperium-node.service")
    for line in ("Type=notify", "KillMode=process", "Restart=on-failure",
                 "ConditionPathExists=/etc/imperium/node.secret",
                 "ExecStart=/usr/sbin/imperium-node run -c /etc/imperium/node.conf"):
        assert line in node, line
    sshd = unit("imperium-sshd.service")
    for line in ("ConditionPathExists=/etc/imperium/node.secret",
                 "ExecStart=/usr/sbin/sshd -D -e -f /etc/imperium/sshd_config",
                 "BindReadOnlyPaths=/etc/imperium/nsswitch.conf:/etc/nsswitch.conf"):
        assert line in sshd, line


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux)")
def test_installed_node_finds_its_init(prefixed):
    """No `init =` setting: the installed imperium-node takes
    PREFIX/lib/imperium/imperium-init (it is not beside it in sbin/).  Run as
    nobody, the start fails later (the home's owner), never on the init;
    with the init moved away it fails on it."""
    work = tempfile.mkdtemp(prefix="imperium-helper-")
    try:
        os.chmod(work, 0o777)
        rootfs = os.path.join(work, "rootfs")
        os.mkdir(rootfs)
        spec = os.path.join(work, "spec.json")
        with open(spec, "w") as f:
            f.write('{"uid": 30009, "memory": 64, "hostname": "p", "rootfs": "%s"}' % rootfs)

        def start():
            return subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 os.path.join(prefixed, "usr/sbin/imperium-node"), "container", "start",
                 "--spec", spec, "--state-dir", os.path.join(work, "state"),
                 "--containers-dir", os.path.join(work, "homes")],
                capture_output=True, text=True, timeout=60)
        p = start()
        assert p.returncode == 1 and "container init" not in p.stderr, p.stderr
        init = os.path.join(prefixed, "usr/lib/imperium/imperium-init")
        os.rename(init, init + ".away")
        try:
            p = start()
        finally:
            os.rename(init + ".away", init)
        assert f"the container init {prefixed}/usr/sbin/imperium-init: No such file" in p.stderr
    finally:
        shutil.rmtree(work)


# ---- readiness: sd_notify over a socket the test binds, as systemd does ----------

def test_api_ready_once_it_listens():
    with tempfile.TemporaryDirectory(prefix="imperium-notify-") as d:
        ns = NotifySocket(d)
        port = free_port()
        env = dict(os.environ, NOTIFY_SOCKET=ns.path)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        logpath = os.path.join(d, "api.log")
        with open(logpath, "w") as log:
            proc = subprocess.Popen(
                [os.path.join(BIN, "imperium-api"), "--port", str(port),
                 "--database", "sqlite:" + os.path.join(d, "imperium.db"),
                 "--admin-token-file", os.path.join(d, "admin.token")],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=d)
        try:
            msg = ns.recv(timeout=30)
            assert msg is not None, "no READY=1 in 30 s:\n" + open(logpath).read()
            assert "READY=1" in msg, msg
            # Ready means answering: no retry here.
            r = requests.get(f"http://127.0.0.1:{port}/api/news/", timeout=5)
            assert r.status_code == 200, r.text
            assert os.path.exists(os.path.join(d, "admin.token"))
            proc.send_signal(signal.SIGTERM)
            assert "STOPPING=1" in (ns.recv(timeout=20) or [])
            assert stop_proc(proc), "imperium-api did not stop on SIGTERM"
            assert proc.returncode == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            ns.close()
        log = open(logpath).read()
        for marker in SANITIZER_MARKERS:
            assert marker not in log, log[-6000:]


def test_api_without_notify_socket_is_unchanged(fresh_api):
    """No $NOTIFY_SOCKET (every other test): sd_notify is a no-op."""
    assert fresh_api.get("/news/").status_code == 200


@pytest.mark.usefixtures("subreaper")
@pytest.mark.skipif(os.geteuid() != 0, reason="the node daemon needs root")
@pytest.mark.skipif(not os.path.exists("/usr/lib/uwsgi/plugins/python3_plugin.so"),
                    reason="needs uwsgi-core and uwsgi-plugin-python3")
def test_node_ready_after_its_first_state(make_node, monkeypatch):
    """READY=1 once the first state from the API is applied (a container the
    API wants is being started by then), not at start-up; STOPPING=1 on
    SIGTERM.  Starts a real node daemon (root)."""
    with tempfile.TemporaryDirectory(prefix="imperium-notify-") as d:
        ns = NotifySocket(d)
        try:
            node = make_node(start=False)
            monkeypatch.setenv("NOTIFY_SOCKET", ns.path)
            node.start()  # returns once the log says the state was received
            msg = ns.recv(timeout=20)
            assert msg is not None and "READY=1" in msg, node.log()[-3000:]
            assert "node state received" in node.log()
            # Once only: a second state (a new container) sends nothing.
            node.new_container()
            assert ns.recv(timeout=3) is None
            node.proc.send_signal(signal.SIGTERM)
            assert "STOPPING=1" in (ns.recv(timeout=20) or [])
            # Its own exit, not a second SIGTERM from node.stop() racing it.
            assert node.proc.wait(timeout=30) == 0, node.log()[-3000:]
            node.stop()
        finally:
            ns.close()



# ---- the API under its unit's sandbox, without systemd ----------------------------
# systemd is not PID 1 on the test machines: the installed imperium-api.service's
# sandbox is rebuilt by hand from the unit file itself: ProtectSystem=strict (/
# read-only but ReadWritePaths), ProtectProc=invisible + ProcSubset=pid,
# PrivateDevices (a /dev of pseudo devices), NoNewPrivileges, no capabilities,
# SystemCallFilter (the lines' sets, expanded by systemd-analyze, EPERM),
# RestrictAddressFamilies and MemoryDenyWriteExecute (seccomp, as systemd does
# them).  Not rebuilt: PrivateTmp (the installed tree is under /tmp), the user
# (imperium does not exist here: nobody), ProtectKernel*, ProtectClock,
# RestrictNamespaces, RestrictRealtime, LockPersonality.

SANDBOX_C = r'''
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* sandbox SYSCALLS-FILE FAMILY,... PROGRAM ARGS...: EPERM for every system
 * call not in the file, EAFNOSUPPORT for sockets of other families, no
 * memory both writable and executable; then exec. */
int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    scmp_filter_ctx c = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    FILE *f = fopen(argv[1], "r");
    char name[128];
    while (c && f && fscanf(f, "%127s", name) == 1) {
        int nr = seccomp_syscall_resolve_name(name);
        if (nr == __NR_SCMP_ERROR || !strcmp(name, "socket") || !strcmp(name, "mmap") ||
            !strcmp(name, "mprotect") || !strcmp(name, "pkey_mprotect"))
            continue;
        seccomp_rule_add(c, SCMP_ACT_ALLOW, nr, 0);
    }
    int allowed[64] = {0};
    for (char *s = strtok(argv[2], ","); s; s = strtok(NULL, ","))
        if (atoi(s) >= 0 && atoi(s) < 64)
            allowed[atoi(s)] = 1;
    for (int fam = 0; fam < 64; fam++)
        seccomp_rule_add(c, allowed[fam] ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(EAFNOSUPPORT),
                         SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, fam));
    int wx = PROT_WRITE | PROT_EXEC;
    seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, wx, 0));
    seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
                     SCMP_A2(SCMP_CMP_MASKED_EQ, wx, PROT_WRITE));
    seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
                     SCMP_A2(SCMP_CMP_MASKED_EQ, wx, PROT_EXEC));
    seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
                     SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(pkey_mprotect), 1,
                     SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    if (!c || !f || seccomp_load(c) < 0) {
        fprintf(stderr, "sandbox: cannot load the filter\n");
        return 1;
    }
    execv(argv[3], argv + 3);
    perror("sandbox: exec");
    return 1;
}
'''

SANDBOX_SH = r'''set -e
mount --make-rprivate /
mount --bind "$RW" "$RW"
mkdir -p "$WORK/dev"
mount -t tmpfs -o mode=755 tmpfs "$WORK/dev"
for d in null zero full random urandom; do
    touch "$WORK/dev/$d"; mount --bind "/dev/$d" "$WORK/dev/$d"
done
mount -o remount,bind,ro /
mount -t proc -o subset=pid,hidepid=invisible proc /proc
mount --move "$WORK/dev" /dev 2>/dev/null || test -e /dev/urandom
cd "$RW"
exec setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs \
    --bounding-set=-all --inh-caps=-all "$WORK/sandbox" "$WORK/syscalls" "$FAMILIES" "$@"
'''


def expand_syscalls(name, cache={}):
    """A system call or a @set (systemd-analyze syscall-filter), expanded."""
    if not name.startswith("@"):
        return {name}
    if name not in cache:
        p = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        calls = set()
        for line in p.stdout.splitlines()[1:]:
            line = line.strip()
            if line and not line.startswith("#"):
                calls |= expand_syscalls(line)
        cache[name] = calls
    return cache[name]


def allowed_syscalls(filters):
    """systemd's SystemCallFilter lines: an allow list, `~` lines take away."""
    allowed = set()
    for value in filters:
        deny = value.startswith("~")
        names = set()
        for word in value.lstrip("~").split():
            names |= expand_syscalls(word)
        allowed = allowed - names if deny else allowed | names
    return allowed


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's mounts need root")
@pytest.mark.skipif(not shutil.which("systemd-analyze") or not shutil.which("gcc"),
                    reason="needs systemd-analyze and gcc")
def test_api_runs_under_its_units_sandbox(prefixed):
    with open(os.path.join(prefixed, "units/imperium-api.service")) as f:
        unit = unit_service_settings(f.read())
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["MemoryDenyWriteExecute"] == ["yes"] and unit["CapabilityBoundingSet"] == [""]
    families = [getattr(socket, f) for v in unit["RestrictAddressFamilies"] for f in v.split()]
    syscalls = allowed_syscalls(unit["SystemCallFilter"])
    assert "execve" in syscalls and "mount" not in syscalls
    (rw,) = unit["ReadWritePaths"]
    exec_start = unit["ExecStart"][0].split()
    work = tempfile.mkdtemp(prefix="imperium-sandbox-")
    proc = None
    try:
        with open(os.path.join(work, "sandbox.c"), "w") as f:
            f.write(SANDBOX_C)
        cc = subprocess.run(["gcc", "-O1", "-o", os.path.join(work, "sandbox"),
                             os.path.join(work, "sandbox.c"), "-lseccomp"],
                            capture_output=True, text=True, timeout=120)
        assert cc.returncode == 0, cc.stderr
        with open(os.path.join(work, "syscalls"), "w") as f:
            f.write("\n".join(sorted(syscalls)) + "\n")
        os.chmod(work, 0o755)
        # What the postinst does for the user imperium (here: nobody), and
        # what a supplier does to api.conf: another port.
        os.chown(rw, 65534, 65534)
        conf = exec_start[exec_start.index("-c") + 1]
        port = free_port()
        text = open(conf).read().replace("\nport = 8080\n", f"\nport = {port}\n")
        assert f"port = {port}" in text
        with open(conf, "w") as f:
            f.write(text)
        os.chmod(conf, 0o644)
        env = dict(os.environ, RW=rw, WORK=work,
                   FAMILIES=",".join(str(int(f)) for f in families))
        logpath = os.path.join(work, "api.log")
        with open(logpath, "w") as log:
            proc = subprocess.Popen(["unshare", "-m", "-p", "-f", "--kill-child", "sh", "-c",
                                     SANDBOX_SH, "sandbox", *exec_start],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"

        def answers():
            assert proc.poll() is None, open(logpath).read()
            try:
                return requests.get(base + "/api/news/", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False
        deadline = time.monotonic() + 30
        while not answers():
            assert time.monotonic() < deadline, open(logpath).read()
            time.sleep(0.1)
        # The supplier's CLI creates a customer; its password (argon2) works.
        cli = subprocess.run([os.path.join(prefixed, "usr/bin/imperium"), "admin", "customer",
                              "add", "sandboxed", "--password", "secret123"],
                             env=dict(os.environ, IMPERIUM_API=base,
                                      IMPERIUM_ADMIN_TOKEN_FILE=os.path.join(rw, "admin.token")),
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr + open(logpath).read()
        r = requests.get(base + "/api/me/", auth=("sandboxed", "secret123"), timeout=10)
        assert r.status_code == 200, r.text
        assert os.stat(os.path.join(rw, "imperium.db")).st_uid == 65534
        # systemd's stop: SIGTERM to the API (unshare's child, exec'd into it);
        # unshare exits with its status.
        api_pid = sandboxed_pid(proc)
        os.kill(api_pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, open(logpath).read()
        log = open(logpath).read()
        assert "Operation not permitted" not in log and "not supported" not in log, log
    finally:
        if proc and proc.poll() is None:
            # The API changed its credentials: unshare's --kill-child no
            # longer reaches it (the parent-death signal is cleared).
            try:
                os.kill(sandboxed_pid(proc), signal.SIGKILL)
            except (OSError, AssertionError):
                pass
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(work)


def sandboxed_pid(proc):
    """The pid of unshare's one child (the sandboxed program)."""
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        pids = f.read().split()
    assert len(pids) == 1, pids
    return int(pids[0])
