"""The database backend of an end-to-end run (IMPERIUM_TEST_DB: sqlite, the
default, or postgresql) and, for PostgreSQL, one throwaway cluster for the
whole session, started and removed by scripts/pgtmp.sh (the one place that
starts PostgreSQL).  Each API start gets a database of its own
(`new_database()`), so a fresh API is still an empty one."""

import atexit
import itertools
import os
import subprocess
import tempfile

from helpers import ROOT, free_port

BACKEND = os.environ.get("IMPERIUM_TEST_DB", "sqlite")
if BACKEND not in ("sqlite", "postgresql"):
    raise RuntimeError(f"IMPERIUM_TEST_DB must be sqlite or postgresql, not {BACKEND!r}")
PG = BACKEND == "postgresql"
PGTMP = os.path.join(ROOT, "scripts", "pgtmp.sh")


def pgtmp(*args):
    """pgtmp.sh's stdout; its stderr in the error when it fails."""
    p = subprocess.run([PGTMP, *args], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"scripts/pgtmp.sh {' '.join(args)} failed:\n{p.stderr}")
    return p.stdout.strip()


class Cluster:
    """A running throwaway cluster: a free loopback port, a directory of its own
    under the temporary directory (the server's user must reach it)."""

    def __init__(self):
        self.port = free_port()
        parent = tempfile.mkdtemp(prefix="imperium-pg-")
        os.chmod(parent, 0o755)  # as root the server runs as `postgres`
        self.dir = os.path.join(parent, "pg")
        self._parent = parent
        self._names = itertools.count(1)
        atexit.register(self.destroy)  # even if the session dies half-way
        self.url = pgtmp("start", self.dir, str(self.port))

    def new_database(self):
        """A new, empty database (C collation); its URL."""
        name = f"imperium_{os.getpid()}_{next(self._names)}"
        return pgtmp("createdb", self.dir, str(self.port), name)

    def destroy(self):
        if self._parent is None:
            return
        parent, self._parent = self._parent, None  # once, even if it fails
        pgtmp("destroy", self.dir)
        os.rmdir(parent)


_cluster = None


def cluster():
    """The session's cluster, started on first use (PostgreSQL runs only)."""
    global _cluster
    assert PG, "a PostgreSQL cluster is only started when IMPERIUM_TEST_DB=postgresql"
    if _cluster is None:
        _cluster = Cluster()
    return _cluster


def new_database():
    return cluster().new_database()


def shutdown():
    """Called at the session's end (conftest): stop and remove the cluster."""
    global _cluster
    if _cluster is not None:
        _cluster.destroy()
        _cluster = None
