"""`imperium admin distro build NAME`: a Debian rootfs made with debootstrap,
registered through the admin API.

The fast tests cover everything the CLI itself decides: usage errors (exit 2),
root, a missing debootstrap, a target directory that must not be touched, the
API checked before the build starts, and what happens when debootstrap fails
(its exit status reported, the half-built directory removed only when the
command created it, never following a symlink out of it, mounts left behind
detached).  Only that failure test puts a fake `debootstrap` first in PATH: it
stands in for the external tool to exercise our error handling, not
debootstrap.

The real build (debootstrap from the Debian mirror, about a minute and 80 MB
of downloads) runs when IMPERIUM_SLOW_TESTS=1, or when a package cache of an
earlier build exists (build/distro-cache, or IMPERIUM_DISTRO_CACHE): it checks
the rootfs from the inside with chroot and the registration through a real
imperium-api."""

import calendar
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import BIN, ROOT, free_port, unique

CLI = os.path.join(BIN, "imperium")
SANITIZER_MARKERS = ("LeakSanitizer", "AddressSanitizer", "runtime error:")
BUILD_DIR = os.path.join(ROOT, "build")
CACHE = os.environ.get("IMPERIUM_DISTRO_CACHE", os.path.join(BUILD_DIR, "distro-cache"))
BOOKWORM_PACKAGES = ("uwsgi-core,uwsgi-plugin-python3,uwsgi-plugin-psgi,python3,"
                     "ca-certificates,uwsgi-plugin-rack-ruby3.1,ruby-rack")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="building a distro needs root")


def cli_env(api=None, path=None, **extra):
    env = dict(os.environ)
    for k in ("IMPERIUM_ADMIN_TOKEN", "IMPERIUM_CONFIG", "IMPERIUM_USER", "IMPERIUM_PASSWORD"):
        env.pop(k, None)
    if api:
        env["IMPERIUM_API"] = api.base
        env["IMPERIUM_ADMIN_TOKEN_FILE"] = api.token_file
    else:
        # Nothing listens there: a test that must not reach an API cannot.
        env["IMPERIUM_API"] = f"http://127.0.0.1:{free_port()}"
        env["IMPERIUM_ADMIN_TOKEN_FILE"] = "/nonexistent/admin.token"
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    if path is not None:
        env["PATH"] = path
    env.update(extra)
    return env


def build(*args, api=None, path=None, timeout=60, prefix=(), **extra):
    """Run `imperium admin distro build ...`; no sanitizer report allowed."""
    p = subprocess.run([*prefix, CLI, "admin", "distro", "build", *args], capture_output=True,
                       text=True, timeout=timeout, env=cli_env(api, path, **extra))
    for marker in SANITIZER_MARKERS:
        assert marker not in p.stderr, f"{marker} in distro build {args}:\n{p.stderr}"
    return p


def fails(code, *args, **kw):
    p = build(*args, **kw)
    assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
    assert "imperium: " in p.stderr, p.stderr
    assert p.stdout == "", p.stdout
    return p.stderr


@pytest.fixture
def work(tmp_path):
    """A scratch directory on the same filesystem as the builds."""
    os.makedirs(BUILD_DIR, exist_ok=True)
    d = tempfile.mkdtemp(prefix="distro-test-", dir=BUILD_DIR)
    try:
        yield d
    finally:
        _umount_below(d)
        shutil.rmtree(d, ignore_errors=True)


def _mounts_below(path):
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return [p for p in points if p == path or p.startswith(path + "/")]


def _umount_below(path):
    for p in reversed(_mounts_below(path)):
        subprocess.run(["umount", "-l", p], capture_output=True)


# ---- usage (exit 2): nothing runs, nothing is created ----

@pytest.mark.parametrize("args, says", [
    ((), "missing NAME"),
    (("a", "b"), "unexpected argument 'b'"),
    (("a", "--register", "--no-register"), "contradict"),
    (("a", "--packages", "Not_A_Package"), "'Not_A_Package' is not a Debian package name"),
    (("a", "--packages", "curl,../x"), "'../x' is not a Debian package name"),
    (("a/b",), "give --dir DIR"),
    (("..",), "give --dir DIR"),
    (("Debian 12",), "give --dir DIR"),
    (("",), "NAME must be a non-empty line"),
    (("a\nb", "--dir", "/nonexistent/x"), "NAME must be a non-empty line"),
    (("a", "--suite", "Bookworm;rm"), "is not a Debian suite name"),
    (("a", "--mirror", "ftp.debian.org"), "--mirror needs a URL"),
    (("a", "--frobnicate"), "unknown option '--frobnicate'"),
    (("a", "--dir"), "option --dir needs a value"),
    (("a", "--force=yes"), "takes no value"),
])
def test_usage_errors(work, args, says):
    err = fails(2, "--cache-dir", os.path.join(work, "cache"), *args)
    assert says in err, err
    assert os.listdir(work) == []


def test_help_lists_the_command():
    p = subprocess.run([CLI, "admin", "distro", "build", "--help"], capture_output=True,
                       text=True, timeout=30, env=cli_env())
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: imperium admin distro build NAME [--dir DIR]")
    for opt in ("--suite SUITE", "--mirror URL", "--packages P1,P2", "--cache-dir DIR",
                "--force", "--no-register", "debootstrap", "/var/lib/imperium/distros/NAME"):
        assert opt in p.stdout, opt
    p = subprocess.run([CLI, "admin", "--help"], capture_output=True, text=True, timeout=30,
                       env=cli_env())
    assert "imperium admin distro build NAME" in p.stdout


# ---- checks before anything is built (exit 1) ----

@needs_root
def test_refuses_a_non_empty_directory(work):
    target = os.path.join(work, "full")
    os.mkdir(target)
    with open(os.path.join(target, "precious"), "w") as f:
        f.write("keep me\n")
    err = fails(1, "x", "--dir", target, "--no-register")
    assert f"{target} exists and is not empty" in err and "--force" in err, err
    assert open(os.path.join(target, "precious")).read() == "keep me\n"
    # A file is no directory.
    err = fails(1, "x", "--dir", os.path.join(target, "precious"), "--no-register")
    assert "is not a directory" in err, err


@needs_root
@pytest.mark.parametrize("target", ["/", "/.", "/tmp/.."])
def test_refuses_the_root(target):
    err = fails(1, "x", "--dir", target, "--force", "--no-register")
    assert "refusing to build a distro in /" in err, err


@needs_root
def test_needs_root(work):
    """As nobody: refused before anything happens."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is missing")
    os.chmod(work, 0o777)
    target = os.path.join(work, "x")
    err = fails(1, "x", "--dir", target, "--no-register",
                prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
    assert "building a distro needs root" in err, err
    assert not os.path.exists(target)


@needs_root
def test_debootstrap_missing(work):
    empty = os.path.join(work, "bin")
    os.mkdir(empty)
    target = os.path.join(work, "x")
    err = fails(1, "x", "--dir", target, "--no-register", path=empty)
    assert "debootstrap not found in PATH: install the debootstrap package" in err, err
    assert not os.path.exists(target)


# ---- a debootstrap that fails ----

FAKE_DEBOOTSTRAP = r"""#!/bin/sh
# Stands in for debootstrap to exercise the CLI's failure handling only.
echo "fake debootstrap: $*"
touch "$MARKER"
eval target=\${$(($# - 1))}
mkdir -p "$target/etc" "$target/usr/lib" "$target/proc"
echo half > "$target/etc/half-built"
ln -s "$OUTSIDE" "$target/escape"
ln -s "$OUTSIDE/keep.txt" "$target/escape-file"
case "$MODE" in
mount) mount -t tmpfs fake-proc "$target/proc" || exit 9
       touch "$target/proc/inside-mount"
       echo "E: fake failure after a mount" >&2; exit 3 ;;
kill)  kill -KILL $$ ;;
*)     echo "E: fake failure" >&2; exit 3 ;;
esac
"""


@pytest.fixture
def fake(work):
    """A failing `debootstrap` first in PATH, and a directory outside the
    target that the cleanup must not touch (the target links to it)."""
    bindir = os.path.join(work, "bin")
    os.mkdir(bindir)
    exe = os.path.join(bindir, "debootstrap")
    with open(exe, "w") as f:
        f.write(FAKE_DEBOOTSTRAP)
    os.chmod(exe, 0o755)
    outside = os.path.join(work, "outside")
    os.mkdir(outside)
    with open(os.path.join(outside, "keep.txt"), "w") as f:
        f.write("not the distro's\n")
    return {"path": bindir + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "outside": outside, "marker": os.path.join(work, "ran"),
            "env": {"OUTSIDE": outside, "MARKER": os.path.join(work, "ran")}}


def _outside_intact(fake):
    with open(os.path.join(fake["outside"], "keep.txt")) as f:
        assert f.read() == "not the distro's\n"


@needs_root
@pytest.mark.parametrize("mode", ["exit", "mount"])
def test_failing_debootstrap_removes_what_it_created(api, work, fake, mode):
    before = api.admin("GET", "/distros", expect=200).json()
    target = os.path.join(work, "new", "distros", "d1")  # parents missing too
    name = unique("distro")
    err = fails(1, name, "--dir", target, "--packages", "curl,git", "--packages", "less",
                api=api, path=fake["path"], MODE=mode, **fake["env"])
    # debootstrap's output, streamed with a prefix; our arguments to it.
    assert (f"debootstrap: fake debootstrap: --variant=minbase --include={BOOKWORM_PACKAGES}"
            f",curl,git,less bookworm {target} http://deb.debian.org/debian\n") in err, err
    assert "debootstrap: E: fake failure" in err, err
    assert "debootstrap failed (exit status 3)" in err, err
    assert f"removed the half-built {target}" in err, err
    assert not os.path.exists(target)
    assert os.path.isdir(os.path.dirname(target))  # only DIR itself is removed
    assert _mounts_below(work) == []
    _outside_intact(fake)
    # Nothing was registered.
    assert api.admin("GET", "/distros", expect=200).json() == before


@needs_root
def test_debootstrap_killed_by_a_signal(work, fake):
    target = os.path.join(work, "d2")
    err = fails(1, "d2", "--dir", target, "--no-register", "--suite", "bookworm",
                "--mirror", "http://127.0.0.1:9/debian", path=fake["path"], MODE="kill",
                **fake["env"])
    assert f"bookworm {target} http://127.0.0.1:9/debian\n" in err, err
    assert "debootstrap was killed by signal 9" in err, err
    assert not os.path.exists(target)
    _outside_intact(fake)


@needs_root
def test_failure_empties_a_directory_it_did_not_create(work, fake):
    """An existing empty DIR (perhaps a mount point of its own) is emptied
    again, not removed."""
    target = os.path.join(work, "existing")
    os.mkdir(target)
    subprocess.run(["mount", "-t", "tmpfs", "distro-test", target], check=True)
    try:
        err = fails(1, "x", "--dir", target, "--no-register", MODE="mount",
                    path=fake["path"], **fake["env"])
        assert "debootstrap failed (exit status 3)" in err, err
        assert f"emptied {target} again (it existed before, so it stays)" in err, err
        assert os.path.isdir(target) and os.listdir(target) == []
        assert _mounts_below(target) == [target]  # its own mount stays
        _outside_intact(fake)
    finally:
        _umount_below(target)


@needs_root
def test_force_empties_a_non_empty_directory_first(work, fake):
    target = os.path.join(work, "old")
    os.makedirs(os.path.join(target, "sub", "mnt"))
    with open(os.path.join(target, "sub", "old-file"), "w") as f:
        f.write("old\n")
    os.symlink(fake["outside"], os.path.join(target, "escape"))
    subprocess.run(["mount", "-t", "tmpfs", "left-over", os.path.join(target, "sub", "mnt")],
                   check=True)
    err = fails(1, "x", "--dir", target, "--no-register", "--force", path=fake["path"],
                **fake["env"])
    assert f"--force: emptying {target}" in err, err
    assert os.path.exists(fake["marker"])  # debootstrap ran after that
    assert f"emptied {target} again" in err, err
    assert os.listdir(target) == [] and _mounts_below(target) == []
    _outside_intact(fake)


@needs_root
def test_suite_without_a_known_rack_package(work, fake):
    target = os.path.join(work, "d3")
    err = fails(1, "d3", "--dir", target, "--no-register", "--suite", "trixie",
                path=fake["path"], **fake["env"])
    assert "--include=uwsgi-core,uwsgi-plugin-python3,uwsgi-plugin-psgi,python3," \
           "ca-certificates trixie" in err, err
    assert "add it with --packages" in err, err


# ---- registration is checked before the build ----

@needs_root
def test_unreachable_api_fails_before_building(work, fake):
    target = os.path.join(work, "d4")
    err = fails(1, "d4", "--dir", target, path=fake["path"], **fake["env"])
    assert "cannot read the admin token file /nonexistent/admin.token" in err, err
    assert "checked before building" in err and "--no-register" in err, err
    err = fails(1, "d4", "--dir", target, path=fake["path"], IMPERIUM_ADMIN_TOKEN="x",
                **fake["env"])
    assert "cannot reach the API" in err and "--no-register" in err, err
    assert not os.path.exists(target) and not os.path.exists(fake["marker"])


@needs_root
def test_wrong_token_fails_before_building(api, work, fake):
    target = os.path.join(work, "d5")
    tok = os.path.join(work, "wrong.token")
    with open(tok, "w") as f:
        f.write("not-the-token\n")
    err = fails(1, "d5", "--dir", target, api=api, path=fake["path"],
                IMPERIUM_ADMIN_TOKEN_FILE=tok, **fake["env"])
    assert "refused the admin token" in err, err
    assert not os.path.exists(target) and not os.path.exists(fake["marker"])


# ---- the real build ----

def _cache_has_packages():
    try:
        return any(n.endswith(".deb") for n in os.listdir(CACHE))
    except OSError:
        return False


def _in_root(root, *cmd, timeout=60):
    return subprocess.run(["chroot", root, *cmd], capture_output=True, text=True,
                          timeout=timeout)


def _serves(root, plugin, app_opts, want):
    """Start `uwsgi --need-plugin 0:<plugin>` inside the rootfs (chroot) on
    an HTTP socket and fetch one page."""
    port = free_port()
    proc = subprocess.Popen(["chroot", root, "uwsgi", "--need-plugin", "0:" + plugin,
                             *app_opts, "--http-socket", f"127.0.0.1:{port}",
                             "--die-on-term", "--master", "--processes", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                r = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                assert r.status_code == 200 and r.text == want, (plugin, r.status_code, r.text)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        pytest.fail(f"uwsgi with {plugin} did not answer")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@needs_root
@pytest.mark.skipif(os.environ.get("IMPERIUM_SLOW_TESTS") != "1" and not _cache_has_packages(),
                    reason="the real debootstrap build takes a minute or more and "
                           "downloads ~80 MB: set IMPERIUM_SLOW_TESTS=1 (a package cache in "
                           f"{CACHE} from an earlier run also enables it)")
def test_real_build(api, work):
    target = os.path.join(work, "bookworm")
    name = unique("bookworm")
    t0 = time.time()
    p = build(name, "--dir", target, "--cache-dir", CACHE, api=api, timeout=1800)
    took = time.time() - t0
    assert p.returncode == 0, p.stderr[-6000:]
    print(f"\ndistro build took {took:.0f} s")
    assert "debootstrap: I: Base system installed successfully." in p.stderr, p.stderr[-4000:]

    # Registered through the API: the id printed, the canonical path.
    did = int(p.stdout.strip())
    assert {"id": did, "name": name, "path": os.path.realpath(target)} in \
        api.admin("GET", "/distros", expect=200).json()

    usr = os.path.join(target, "usr")
    plugins = os.path.join(usr, "lib", "uwsgi", "plugins")
    assert os.path.lexists(os.path.join(usr, "bin", "uwsgi"))
    # Every path resolved inside the rootfs (Debian's links are absolute:
    # /usr/bin/uwsgi -> /etc/alternatives/uwsgi -> /usr/bin/uwsgi-core).
    for link, real in (("/usr/bin/uwsgi", "/usr/bin/uwsgi-core"),
                       ("/usr/lib/uwsgi/plugins/python3_plugin.so",
                        "/usr/lib/uwsgi/plugins/python311_plugin.so"),
                       ("/usr/lib/uwsgi/plugins/python_plugin.so",
                        "/usr/lib/uwsgi/plugins/python311_plugin.so"),
                       ("/usr/lib/uwsgi/plugins/psgi_plugin.so",
                        "/usr/lib/uwsgi/plugins/psgi_plugin.so"),
                       ("/usr/lib/uwsgi/plugins/rack_plugin.so",
                        "/usr/lib/uwsgi/plugins/rack_ruby31_plugin.so")):
        r = _in_root(target, "readlink", "-e", link)
        assert r.returncode == 0 and r.stdout.strip() == real, (link, r.stdout, r.stderr)
        assert stat.S_ISREG(os.lstat(target + real).st_mode), real
    # The alias is relative and points at the plugin file itself, so it
    # resolves from the host too, inside the rootfs.
    alias = os.path.join(plugins, "python_plugin.so")
    assert os.readlink(alias) == "python311_plugin.so"
    assert os.path.realpath(alias) == os.path.join(os.path.realpath(plugins),
                                                   "python311_plugin.so")

    # uWSGI inside finds `0:python` without any plugins-dir of the node's,
    # from a working directory other than the plugins directory (chroot
    # starts in /): uWSGI derives the plugin's symbol by following the
    # links relative to its working directory.
    r = _in_root(target, "uwsgi", "--need-plugin", "0:python", "--python-version")
    assert r.returncode == 0 and r.stdout.startswith("3.11"), (r.stdout, r.stderr)
    for plugin in ("psgi", "rack"):
        r = _in_root(target, "uwsgi", "--need-plugin", "0:" + plugin, "--version")
        assert r.returncode == 0 and r.stdout.startswith("2.0"), (plugin, r.stdout, r.stderr)
    # ... and serves an app of each language.
    tmp = os.path.join(target, "tmp")
    with open(os.path.join(tmp, "app.py"), "w") as f:
        f.write("def application(env, start_response):\n"
                "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                "    return [b'python ok']\n")
    with open(os.path.join(tmp, "app.psgi"), "w") as f:
        f.write("my $app = sub { [200, ['Content-Type' => 'text/plain'], ['psgi ok']] };\n")
    with open(os.path.join(tmp, "config.ru"), "w") as f:
        f.write("run lambda { |env| [200, {'content-type' => 'text/plain'}, ['rack ok']] }\n")
    _serves(target, "python", ["--wsgi-file", "/tmp/app.py"], "python ok")
    _serves(target, "psgi", ["--psgi", "/tmp/app.psgi"], "psgi ok")
    _serves(target, "rack", ["--rack", "/tmp/config.ru"], "rack ok")

    # What the node needs and the stamp.
    etc = os.path.join(target, "etc")
    assert stat.S_ISREG(os.lstat(os.path.join(etc, "hosts")).st_mode)
    assert stat.S_ISREG(os.lstat(os.path.join(etc, "resolv.conf")).st_mode)
    assert open(os.path.join(etc, "hostname")).read() == "localhost\n"
    stamp = dict(line.split(" = ", 1) for line in
                 open(os.path.join(etc, "imperium-distro")).read().splitlines()
                 if not line.startswith("#"))
    assert stamp["name"] == name and stamp["suite"] == "bookworm"
    assert stamp["packages"] == BOOKWORM_PACKAGES
    built = calendar.timegm(time.strptime(stamp["built"], "%Y-%m-%dT%H:%M:%SZ"))
    assert t0 - 60 < built < time.time() + 60, stamp
    # apt's downloads and lists are gone; the rootfs is readable by anyone.
    assert [n for n in os.listdir(os.path.join(target, "var/cache/apt/archives"))
            if n.endswith(".deb")] == []
    assert [n for n in os.listdir(os.path.join(target, "var/lib/apt/lists"))
            if os.path.isfile(os.path.join(target, "var/lib/apt/lists", n)) and n != "lock"] == []
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
    assert _mounts_below(target) == []
    size = int(subprocess.run(["du", "-sm", target], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    print(f"distro size {size} MB")

    # A second build into it is refused; --force --no-register empties it and
    # builds it again (from the cache).
    err = fails(1, name, "--dir", target, api=api)
    assert "exists and is not empty" in err
    p = build(name, "--dir", target, "--cache-dir", CACHE, "--force", "--no-register",
              "--json", timeout=1800)
    assert p.returncode == 0, p.stderr[-4000:]
    assert json.loads(p.stdout) == {"name": name, "path": os.path.realpath(target)}
    assert os.readlink(alias) == "python311_plugin.so"
