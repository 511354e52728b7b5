"""The database setting is a URL whose scheme picks the storage backend
(src/common/db_common.c): sqlite:/path, sqlite:///path and a plain path are
the same SQLite file; postgresql: (issue 20) whose server does not answer is
refused clearly, never naming its password; any other scheme is refused naming
the known ones.  A refused URL creates nothing."""

import os
import subprocess
import tempfile

import pytest

import pgutil
from conftest import BIN, PG_ONLY, free_port, start_api, stop_api
from helpers import SANITIZER_MARKERS, unique


def run_api(workdir, database):
    """imperium-api on `database`, expected to stop at once: (exit, output)."""
    p = subprocess.run([os.path.join(BIN, "imperium-api"), "--port", str(free_port()),
                        "--database", database,
                        "--admin-token-file", os.path.join(workdir, "admin.token")],
                       capture_output=True, text=True, timeout=30, cwd=workdir)
    out = p.stdout + p.stderr
    for marker in SANITIZER_MARKERS:
        assert marker not in out, out
    return p.returncode, out


# A loopback port nothing listens on: the server cannot be reached.
CLOSED = free_port()
UNREACHABLE = ["connect"]


@pytest.mark.parametrize("url,says", [
    (f"postgresql://imperium:hunter2@127.0.0.1:{CLOSED}/imperium", UNREACHABLE),
    (f"postgres://127.0.0.1:{CLOSED}/imperium?sslmode=disable", UNREACHABLE),
    (f"PostgreSQL://127.0.0.1:{CLOSED}/imperium", UNREACHABLE),
    # Any other scheme: refused naming it and the known ones.
    ("mysql://127.0.0.1/imperium", ['"mysql:"', "sqlite:, postgresql:, postgres:"]),
    # A SQLite URL names a local file, never a host.
    ("sqlite://db.example/imperium.db", ["names a host"]),
])
def test_a_database_url_it_cannot_open_is_refused_creating_nothing(url, says):
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        rc, out = run_api(d, url)
        assert rc != 0
        for text in says:
            assert text in out.lower(), out
        assert "hunter2" not in out, out  # a URL's password is never shown
        # Not a SQLite file named after the URL, beside the API or anywhere.
        assert os.listdir(d) == [], os.listdir(d)


def test_sqlite_urls_and_a_plain_path_are_one_database():
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        db = os.path.join(d, "imperium.db")
        a = start_api(d, database="sqlite:" + db)  # whatever IMPERIUM_TEST_DB says
        try:
            auth, _ = a.new_customer()
        finally:
            stop_api(a)
        for url in ("sqlite://" + db, db):
            a = start_api(d, ("--database", url))
            try:
                assert url in a.log()  # the URL given is the one used
                assert a.get("/me/", auth=auth).status_code == 200
            finally:
                stop_api(a)


@PG_ONLY
def test_a_database_not_in_byte_order_is_said_in_the_log():
    """docs/OPERATING.md asks for a C collation (lists by name in SQLite's
    byte order); a database made with ICU's en-US still works, and the API
    says why its lists may come out in another order.  The C one: no word."""
    import psycopg2  # python3-psycopg2 (scripts/packages.txt)
    cluster = pgutil.cluster()
    name = unique("icu").replace("-", "_")
    admin = psycopg2.connect(cluster.url + "postgres")  # the URL names no database
    admin.autocommit = True
    try:
        admin.cursor().execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE 'C' "
                               "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
        url = cluster.url + name
        for database, said in ((url, True), (pgutil.new_database(), False)):
            with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
                a = start_api(d, database=database)
                try:
                    assert a.get("/news/").status_code == 200
                    log = a.log()
                finally:
                    stop_api(a)
                assert ("collation is ICU, not C" in log) == said, log
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
