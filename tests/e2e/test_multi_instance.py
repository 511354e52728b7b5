"""Several imperium-api instances on one PostgreSQL database (issue 20,
docs/design/issue20): a write acknowledged by one is in the very next read on
the other (response caches included), a node's long poll on one wakes on a
change made through the other, an old password stops working everywhere at
once, two instances selling one server never oversell it, and when one dies
(kill -9) under load every acknowledged write is kept and the other serves on.
PostgreSQL only: on SQLite a second API refuses the database (test_response_cache)."""

import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import signal
import tempfile
import threading
import time

import pytest
import requests

import pgutil
from conftest import BIN, PG_ONLY, start_api, stop_api
from helpers import unique

pytestmark = PG_ONLY


@contextlib.contextmanager
def instances(n, database=None, together=False, args=()):
    """n APIs on one new database (or `database`), each in a workdir of its own
    sharing the first one's admin token; all stopped cleanly at the end except
    the ones a test killed (`api.killed = True`).  together: started at once;
    args: more command line arguments for each."""
    database = database or pgutil.new_database()
    dirs = [tempfile.mkdtemp(prefix="imperium-e2e-multi-") for _ in range(n)]
    apis = []
    try:
        if together:
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                apis = list(pool.map(lambda d: start_api(d, args, database=database), dirs))
        else:
            apis.append(start_api(dirs[0], args, database=database))
            for d in dirs[1:]:
                shutil.copy2(apis[0].token_file, os.path.join(d, "admin.token"))
                apis.append(start_api(d, args, database=database))
        yield apis
    finally:
        try:
            for a in apis:
                if not getattr(a, "killed", False):
                    stop_api(a)
        finally:
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def two_apis():
    """(A, B): two imperium-api on one database, with the same admin token."""
    with instances(2) as apis:
        yield apis


def node_get(api, server, **params):
    return requests.get(api.base + "/node/state", auth=(server["name"], server["node_secret"]),
                        params=params, timeout=90)


def test_a_write_on_one_is_in_the_next_read_on_the_other(two_apis):
    a, b = two_apis
    auth, _ = a.new_customer()
    uid = a.new_container(auth[0], a.new_server()["name"])
    path = f"/containers/{uid}"
    for i in range(20):
        before = b.get(path, auth=auth).json()
        # B's cache is primed: a row changed behind the API's back (no data
        # version moved) is not in B's next answer, the cached one.
        a.sql("UPDATE containers SET note = ? WHERE id = ?", (f"behind {i}", uid - 30000))
        assert b.get(path, auth=auth).json() == before
        note = f"note {i}"
        r = a.post(path, auth=auth, json={"note": note})
        assert r.status_code == 200, r.text
        assert b.get(path, auth=auth).json()["note"] == note, i
    # And the other way round, on a list.
    assert a.get("/tags/", auth=auth).json() == []
    assert b.post("/tags/", auth=auth, json={"name": "fromb"}).status_code == 201
    assert [t["name"] for t in a.get("/tags/", auth=auth).json()] == ["fromb"]


def test_a_long_poll_on_one_wakes_on_a_change_through_the_other(ssh_keys):
    # The polls' re-check every 10 s: only the change itself, NOTIFYed from
    # A to B, can wake B's poll within the second.
    with instances(2, args=("--long-poll-recheck-ms", "10000")) as (a, b):
        long_poll_rounds(a, b, ssh_keys)


def long_poll_rounds(a, b, ssh_keys):
    auth, _ = a.new_customer()
    server = a.new_server()
    distro = a.new_distro()
    uid = a.new_container(auth[0], server["name"])
    r = a.post(f"/containers/{uid}", auth=auth, json={"distro": distro["id"],
                                                      "ssh_keys": [ssh_keys[0]]})
    assert r.status_code == 200, r.text
    first = node_get(b, server).json()
    result = {}

    def poll():
        result["r"] = node_get(b, server, version=first["version"], wait=30)
        result["t"] = time.monotonic()

    for _ in range(3):
        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.7)
        assert th.is_alive(), "the poll answered before any change"
        t_change = time.monotonic()
        r = a.post(f"/containers/{uid}", auth=auth, json={"reboot": 1})
        assert r.status_code == 200, r.text
        th.join(timeout=30)
        assert not th.is_alive()
        assert result["t"] - t_change < 1.0, result["t"] - t_change
        new = result["r"].json()
        assert new["version"] != first["version"]
        assert new["containers"][0]["generation"] == first["containers"][0]["generation"] + 1
        first = new


def test_a_password_change_on_one_is_refused_by_the_other_at_once(two_apis):
    a, b = two_apis
    auth, _ = a.new_customer(password="old-secret")
    for _ in range(3):  # B answers from its cache after the first
        assert b.get("/me/", auth=auth).status_code == 200
    r = a.post("/me/", auth=auth, json={"password": "new-secret"})
    assert r.status_code == 200, r.text
    assert b.get("/me/", auth=auth).status_code == 401
    assert b.get("/me/", auth=(auth[0], "new-secret")).status_code == 200
    # A deleted customer too.
    a.admin("DELETE", f"/customers/{auth[0]}", expect=200)
    assert b.get("/me/", auth=(auth[0], "new-secret")).status_code == 401


def test_two_instances_selling_one_server_never_oversell_it(two_apis):
    a, b = two_apis
    auth, _ = a.new_customer()
    server = a.new_server(owner=auth[0], memory=1000, storage=1000000)
    n = 24  # 100 MB each: 10 fit

    def create(i):
        api = (a, b)[i % 2]
        r = api.post("/containers/", auth=auth, json={
            "server": server["address"], "name": f"c{i}", "memory": 100, "storage": 100})
        return r.status_code, r.json()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(n)))
    made = [body["uid"] for status, body in results if status == 201]
    refused = [body for status, body in results if status == 409]
    assert len(made) + len(refused) == n, results
    assert len(made) == 10, results
    assert len(set(made)) == len(made)
    assert all(body["reason"] == "not enough memory" for body in refused), refused
    total = a.sql("SELECT SUM(c.memory) FROM containers c JOIN servers s ON s.id = c.server_id "
                  "WHERE s.address = ?", (server["address"],))[0][0]
    assert int(total) == 1000
    assert sorted(c["uid"] for c in b.get("/containers/", auth=auth).json()) == sorted(made)


def test_kill_9_of_one_under_load_keeps_every_acknowledged_write(two_apis):
    a, b = two_apis
    auth, _ = a.new_customer()
    acked = {a: [], b: []}
    unexpected = []  # B's answers other than 201 (503 is allowed: retry later)
    stop = threading.Event()

    def writer(api, k):
        for i in range(2000):
            if stop.is_set():
                return
            name = f"t{k}x{i}"
            try:
                r = api.post("/tags/", auth=auth, json={"name": name})
            except requests.RequestException as ex:
                if api is not a:
                    unexpected.append(repr(ex))
                return  # A is gone
            if r.status_code == 201:
                acked[api].append(name)
            elif api is b and r.status_code != 503:
                unexpected.append((r.status_code, r.text))

    threads = [threading.Thread(target=writer, args=((a, b)[k % 2], k)) for k in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        assert acked[a] and acked[b], "no write went through before the kill"
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=10)
        a.killed = True
        time.sleep(1.0)  # B keeps writing with A dead
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not unexpected, unexpected[:5]
    names = {t["name"] for t in b.get("/tags/", auth=auth).json()}
    missing = [n for n in acked[a] + acked[b] if n not in names]
    assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:10]}"
    # B still serves reads and writes.
    fresh = unique("after")
    assert b.post("/tags/", auth=auth, json={"name": fresh}).status_code == 201
    assert fresh in {t["name"] for t in b.get("/tags/", auth=auth).json()}


def test_two_instances_starting_at_once_on_an_empty_database_both_work():
    with instances(2, together=True) as (a, b):
        auth, _ = a.new_customer()
        assert b.get("/me/", auth=auth).status_code == 200
        versions = a.sql("SELECT version FROM schema_version")
        # Each step applied once, up to the binaries' newest.
        newest = subprocess.run([os.path.join(BIN, "imperium"), "admin", "db", "migrate",
                                 "--database", a.database], capture_output=True, text=True,
                                timeout=60)
        assert newest.returncode == 0, newest.stderr
        assert "nothing to do" in newest.stdout, newest.stdout
        assert sorted(v for (v,) in versions) == list(range(1, len(versions) + 1)), versions
