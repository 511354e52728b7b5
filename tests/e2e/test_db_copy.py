"""`imperium admin db migrate` and `imperium admin db copy` (src/cli/db.c): a
database copied keeps every id, every container's uid and every id table's
high mark (a deleted newest container's uid is not handed out again), and the
API on the copy answers a customer exactly as before.  SQLite -> SQLite always;
SQLite -> PostgreSQL -> SQLite when PostgreSQL is installed (a cluster of
scripts/pgtmp.sh: the session's in a PostgreSQL run, else one of this
module's own).  Refused input changes no target."""

import glob
import os
import sqlite3
import subprocess
import tempfile
import urllib.parse

import pytest

import pgutil
from conftest import BIN, start_api, stop_api, unique
from helpers import SANITIZER_MARKERS



def cli(*args):
    """`imperium admin db ...`: (exit code, stdout, stderr), sanitizer-clean."""
    p = subprocess.run([os.path.join(BIN, "imperium"), "admin", "db", *args],
                       capture_output=True, text=True, timeout=300)
    for marker in SANITIZER_MARKERS:
        assert marker not in p.stdout + p.stderr, p.stdout + p.stderr
    return p.returncode, p.stdout, p.stderr


def copy_ok(src, dst):
    rc, out, err = cli("copy", src, dst)
    assert rc == 0, (rc, out, err)
    return out


def rows(path):
    """Every table's rows of a SQLite file, sorted: what "unchanged" means."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    finally:
        con.close()


def high_marks(path):
    """sqlite_sequence: the highest id each table ever handed out."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT name, seq FROM sqlite_sequence"))
    finally:
        con.close()


def fill(api):
    """A customer with containers, tags, a domain, news; the newest
    container deleted (its uid must stay retired)."""
    auth, _ = api.new_customer(company="Copy S.r.l.", vat="01234567890")
    server = api.new_server()
    api.new_distro()
    uids = [api.new_container(auth[0], server["name"], name=f"c{i}") for i in range(3)]
    assert api.post("/tags/", auth=auth, json={"name": "web", "note": "front"}).status_code == 201
    r = api.post(f"/containers/{uids[0]}", auth=auth, json={"tags": ["web"], "note": "n1"})
    assert r.status_code == 200, r.text
    api.admin("POST", "/domains", {"name": unique("d") + ".example.com",
                                   "customer": auth[0]}, expect=201)
    api.admin("POST", "/news", {"content": "hello", "public": True}, expect=201)
    api.admin("DELETE", f"/containers/{uids[2]}", expect=200)
    return {"auth": auth, "server": server, "uids": uids[:2], "deleted": uids[2]}


def views(api, auth, uids):
    """What the customer sees: the bodies, byte for byte."""
    out = {}
    for path in ("/me/", "/containers/", *(f"/containers/{u}" for u in uids)):
        r = api.get(path, auth=auth)
        assert r.status_code == 200, (path, r.status_code, r.text)
        out[path] = r.text
    return out


def check_copy(database, data, before):
    """The API on `database` answers as before and retires the deleted uid."""
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        api = start_api(d, ("--database", database))
        try:
            assert views(api, data["auth"], data["uids"]) == before
            uid = api.new_container(data["auth"][0], data["server"]["name"], name="after")
            assert uid == data["deleted"] + 1, (uid, data["deleted"])
            api.admin("DELETE", f"/containers/{uid}", expect=200)
        finally:
            stop_api(api)


@pytest.fixture(scope="module")
def source():
    """A filled SQLite database no API runs on (a copy claims its source)
    and what the customer saw of it."""
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        path = os.path.join(d, "imperium.db")
        api = start_api(d, ("--database", "sqlite:" + path))  # SQLite in any run
        try:
            data = fill(api)
            data["views"] = views(api, data["auth"], data["uids"])
        finally:
            stop_api(api)
        data["path"] = path
        yield data


def test_migrate_prints_the_versions(tmp_path):
    url = f"sqlite:{tmp_path}/m.db"
    rc, out, err = cli("migrate", "--database", url)
    assert rc == 0, err
    assert out.startswith(f"{url}: schema version 0 -> "), out
    rc, again, err = cli("migrate", "--database", url)
    assert rc == 0 and "nothing to do" in again, (again, err)
    rc, out, err = cli("migrate")
    assert rc == 2 and "--database" in err, err
    rc, out, err = cli("--help")
    assert rc == 0 and "imperium admin db migrate --database URL" in out and \
        "imperium admin db copy FROM_URL TO_URL" in out, out


def test_sqlite_to_sqlite_keeps_ids_uids_and_high_marks(source, tmp_path):
    dst = str(tmp_path / "copy.db")
    before = rows(source["path"])
    out = copy_ok("sqlite:" + source["path"], "sqlite:" + dst)
    assert "  containers         2 rows" in out and "  customers          1 row\n" in out, out
    assert rows(source["path"]) == before  # the source is only read
    copied = rows(dst)
    assert {t: v for t, v in copied.items() if t != "sqlite_sequence"} == \
        {t: v for t, v in before.items() if t != "sqlite_sequence"}
    assert high_marks(dst) == high_marks(source["path"])
    assert high_marks(dst)["containers"] == source["deleted"] - 30000
    check_copy("sqlite:" + dst, source, source["views"])


def test_a_freshly_migrated_target_is_accepted(source, tmp_path):
    dst = f"sqlite:{tmp_path}/migrated.db"
    assert cli("migrate", "--database", dst)[0] == 0
    copy_ok("sqlite:" + source["path"], dst)


def test_a_non_empty_target_is_refused_unchanged(source, tmp_path):
    dst = str(tmp_path / "full.db")
    copy_ok("sqlite:" + source["path"], "sqlite:" + dst)
    before = rows(dst)
    rc, out, err = cli("copy", "sqlite:" + source["path"], "sqlite:" + dst)
    assert rc == 1, (rc, out, err)
    assert "is not empty (table customers has 1 row)" in err and "nothing was changed" in err
    assert rows(dst) == before


@pytest.mark.parametrize("side", ["from", "to"])
def test_an_unknown_scheme_is_refused(source, tmp_path, side):
    bad = "mysql://127.0.0.1/imperium"
    dst = str(tmp_path / "never.db")
    args = (bad, "sqlite:" + dst) if side == "from" else ("sqlite:" + source["path"], bad)
    rc, out, err = cli("copy", *args)
    assert rc == 2, (rc, out, err)
    assert f'{side.upper()} {bad}: unknown database URL scheme "mysql:"' in err, err
    assert not os.path.exists(dst)


def test_a_missing_source_is_refused_the_target_untouched(source, tmp_path):
    dst = str(tmp_path / "untouched.db")
    copy_ok("sqlite:" + source["path"], "sqlite:" + dst)
    before = rows(dst)
    rc, out, err = cli("copy", f"sqlite:{tmp_path}/missing.db", "sqlite:" + dst)
    assert rc == 2, (rc, out, err)
    assert "holds no Imperium database" in err, err
    assert rows(dst) == before
    rc, out, err = cli("copy", f"sqlite:{tmp_path}/missing2.db", f"sqlite:{tmp_path}/new.db")
    assert rc == 2 and not os.path.exists(tmp_path / "new.db"), (rc, err)


def test_a_database_at_another_schema_version_is_refused(source, tmp_path):
    """A FROM behind this binary must be migrated first (the copy never
    writes its source); a TO at another version is neither new nor ready."""
    old = str(tmp_path / "old.db")
    assert cli("migrate", "--database", "sqlite:" + old)[0] == 0
    con = sqlite3.connect(old)
    con.execute("DELETE FROM schema_version WHERE version = (SELECT MAX(version) "
                "FROM schema_version)")
    con.commit()
    con.close()
    before = rows(old)
    rc, out, err = cli("copy", "sqlite:" + old, f"sqlite:{tmp_path}/new.db")
    assert rc == 1 and "migrate it first" in err, (rc, err)
    assert not os.path.exists(tmp_path / "new.db")
    rc, out, err = cli("copy", "sqlite:" + source["path"], "sqlite:" + old)
    assert rc == 1 and "the copy goes only into an empty database" in err, (rc, err)
    assert rows(old) == before


def test_a_running_api_keeps_its_database_from_being_copied(tmp_path):
    api = start_api(str(tmp_path), ("--database", f"sqlite:{tmp_path}/imperium.db"))
    try:
        rc, out, err = cli("copy", f"sqlite:{tmp_path}/imperium.db", f"sqlite:{tmp_path}/c.db")
        assert rc == 1 and err.startswith(f"imperium: FROM sqlite:{tmp_path}/imperium.db"), err
    finally:
        stop_api(api)


# ---- PostgreSQL ----

def pg_missing():
    """Why no PostgreSQL cluster can be started here, or None."""
    if not os.access(pgutil.PGTMP, os.X_OK):
        return "scripts/pgtmp.sh is missing"
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "no PostgreSQL server installed (apt-get install postgresql)"
    return None


@pytest.fixture(scope="module")
def pg_databases():
    """new() -> a new, empty PostgreSQL database's URL: on the session's
    cluster in a PostgreSQL run, else on one of this module's own."""
    if pgutil.PG:
        yield pgutil.new_database
        return
    reason = pg_missing()
    if reason:
        pytest.skip(f"no PostgreSQL to copy to: {reason}")
    cluster = pgutil.Cluster()
    try:
        yield cluster.new_database
    finally:
        cluster.destroy()


@pytest.fixture
def pg_database(pg_databases):
    return pg_databases()


def password_of(url):
    """The password a cluster's URL carries (scripts/pgtmp.sh gives each
    cluster a random one): the commands must never print it."""
    secret = urllib.parse.urlsplit(url).password
    assert secret, "the test cluster's URL carries no password"
    return secret


def test_sqlite_to_postgresql_and_back(source, pg_database, tmp_path):
    pg = pg_database
    secret = password_of(pg)
    rc, out, err = cli("migrate", "--database", pg)
    assert rc == 0 and secret not in out + err, (out, err)
    out = copy_ok("sqlite:" + source["path"], pg)
    assert secret not in out and "imperium:***@" in out, out
    assert "  containers         2 rows" in out, out
    # Into a non-empty PostgreSQL database: refused, nothing printed of the password.
    rc, out, err = cli("copy", "sqlite:" + source["path"], pg)
    assert rc == 1 and "is not empty" in err and secret not in out + err, (out, err)
    check_copy(pg_database, source, source["views"])
    # ... and back: the same rows and high marks as the original (the
    # container check_copy made and deleted moved the high mark by one).
    back = str(tmp_path / "back.db")
    out = copy_ok(pg, "sqlite:" + back)
    assert secret not in out, out
    original = rows(source["path"])
    returned = rows(back)
    for table in original:
        if table != "sqlite_sequence":
            assert returned[table] == original[table], table
    marks = high_marks(source["path"])
    marks["containers"] += 1
    assert high_marks(back) == marks
    data = dict(source, deleted=source["deleted"] + 1)
    check_copy("sqlite:" + back, data, source["views"])


def test_postgresql_migrations_at_once(pg_database):
    """Several processes migrating one new database at once all succeed:
    each step reads the version under the advisory lock."""
    pg = pg_database
    secret = password_of(pg)
    procs = [subprocess.Popen([os.path.join(BIN, "imperium"), "admin", "db", "migrate",
                               "--database", pg], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, (out, err)
        assert secret not in out + err, (out, err)
        assert " -> " in out or "nothing to do" in out, out
    rc, out, err = cli("migrate", "--database", pg)
    assert rc == 0 and "nothing to do" in out, (out, err)
