"""Issue 12, items 3 and 5 (docs/SECURITY.md): the database is private, and
password guessing can neither starve the API nor tell which usernames exist.

Attackers come from their own loopback addresses (127.0.x.y: all of 127/8 is
local), so the per-address throttle sees them apart from the legitimate
callers on 127.0.0.1."""

import base64
import http.client
import json
import os
import stat
import statistics
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import BIN, SQLITE_ONLY, start_api, stop_api


def call(api, method, path, auth=None, body=None, src="127.0.0.1"):
    """One request from source address `src`; (status, headers, json, seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30,
                                      source_address=(src, 0))
    headers = {}
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = "Basic " + token
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    t0 = time.monotonic()
    try:
        conn.request(method, "/api" + path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        took = time.monotonic() - t0
        return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else None, took
    finally:
        conn.close()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# ---- item 3: the database is private ----

@SQLITE_ONLY  # a PostgreSQL database is the server's files
def test_database_and_its_wal_and_shm_are_0600_even_with_a_lax_umask():
    old = os.umask(0o002)  # the API inherits it: without the fix, 0664 files
    try:
        with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
            a = start_api(d)
            try:
                a.new_customer()  # a write: the -wal and -shm exist and hold data
                db = os.path.join(d, "imperium.db")
                for f in (db, db + "-wal", db + "-shm"):
                    assert mode(f) == 0o600, (f, oct(mode(f)))
            finally:
                stop_api(a)
    finally:
        os.umask(old)


def start_fails(workdir):
    """Run imperium-api on workdir's database; (exit code, output)."""
    p = subprocess.run([os.path.join(BIN, "imperium-api"), "--port", "1",
                        "--database", "sqlite:" + os.path.join(workdir, "imperium.db"),
                        "--admin-token-file", os.path.join(workdir, "admin.token")],
                       capture_output=True, text=True, timeout=30, cwd=workdir)
    return p.returncode, p.stdout + p.stderr


@SQLITE_ONLY
@pytest.mark.parametrize("sidecar", ["", "-wal", "-shm"])
def test_the_api_refuses_a_database_file_open_to_others(sidecar):
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        a = start_api(d)
        a.new_customer()
        stop_api(a)
        db = os.path.join(d, "imperium.db")
        target = db + sidecar
        if sidecar:  # a leftover sidecar (a crash): SQLite would reuse it
            open(target, "w").close()
        os.chmod(target, 0o644)
        with open(db, "rb") as f:
            before = f.read()
        code, out = start_fails(d)
        assert code != 0
        assert f"{target} is readable or writable by group or others (mode 0644)" in out, out
        assert f"chmod 600 {target}" in out, out
        # Refused, not repaired behind the supplier's back, and nothing written.
        assert mode(target) == 0o644
        with open(db, "rb") as f:
            assert f.read() == before
        # The fix the message names works.
        os.chmod(target, 0o600)
        a = start_api(d)
        stop_api(a)


# ---- item 5: password checks cannot starve the API ----

def limited_api(workdir, **settings):
    """An API with its own settings file (the throttle's limits)."""
    conf = os.path.join(workdir, "api.conf")
    with open(conf, "w") as f:
        for k, v in settings.items():
            f.write(f"{k} = {v}\n")
    return start_api(workdir, ["-c", conf])


@pytest.fixture
def small_limits():
    """Two failures per address, four per username, a token back every 3 s
    (address) / 1.5 s (username)."""
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        a = limited_api(d, auth_address_failures=2, auth_user_failures=4,
                        auth_failure_window=6)
        try:
            yield a
        finally:
            stop_api(a)


def assert_throttled(answer):
    status, headers, body, _ = answer
    assert status == 429, answer
    assert int(headers["Retry-After"]) >= 1
    assert body["error"] == "Too Many Requests"
    assert "retry in" in body["reason"]


def test_repeated_failures_from_an_address_get_429_with_retry_after(small_limits):
    api = small_limits
    victim, _ = api.new_customer(password="right")
    for _ in range(2):
        assert call(api, "GET", "/me/", (victim[0], "wrong"), src="127.0.3.1")[0] == 401
    answer = call(api, "GET", "/me/", (victim[0], "wrong"), src="127.0.3.1")
    assert_throttled(answer)
    assert answer[3] < 0.05  # no argon2 for it
    # The throttled address gets 429 even with the right password: otherwise
    # the throttle would tell a guesser which guess is right.
    assert_throttled(call(api, "GET", "/me/", victim, src="127.0.3.1"))
    assert_throttled(call(api, "POST", "/me/", victim, {"company": "x"}, src="127.0.3.1"))
    # The same customer from elsewhere is not locked out (4 per username > 2),
    # and the address may try again once Retry-After has passed.
    assert call(api, "GET", "/me/", victim, src="127.0.3.2")[0] == 200
    time.sleep(int(answer[1]["Retry-After"]))
    assert call(api, "GET", "/me/", victim, src="127.0.3.1")[0] == 200


def test_a_username_guessed_from_many_addresses_is_throttled_alone(small_limits):
    api = small_limits
    victim, _ = api.new_customer(password="right")
    other, _ = api.new_customer(password="other")
    assert call(api, "GET", "/me/", other, src="127.0.4.9")[0] == 200
    for i in range(4):  # a botnet: one guess per address
        assert call(api, "GET", "/me/", (victim[0], f"w{i}"), src=f"127.0.4.{i + 1}")[0] == 401
    wrong = call(api, "GET", "/me/", (victim[0], "w9"), src="127.0.4.5")
    assert_throttled(wrong)
    # The username is throttled for everyone, the right password too...
    assert_throttled(call(api, "GET", "/me/", victim, src="127.0.4.6"))
    # ...but another customer, even from the same addresses, is not affected.
    assert call(api, "GET", "/me/", other, src="127.0.4.5")[0] == 200
    assert call(api, "POST", "/me/", other, {"company": "ok"}, src="127.0.4.1")[0] == 200
    # Not for longer than it takes a token to come back.
    time.sleep(int(wrong[1]["Retry-After"]))
    assert call(api, "GET", "/me/", victim, src="127.0.4.6")[0] == 200


def test_an_unknown_user_is_answered_like_an_existing_one(small_limits):
    api = small_limits
    known, _ = api.new_customer(password="right")
    answers = {}
    for name, src in ((known[0], "127.0.5.1"), ("nobody-" + known[0], "127.0.5.2")):
        # Different guesses: a repeated one is answered from memory (auth.c).
        answers[name] = [call(api, "GET", "/me/", (name, f"wrong{i}"), src=src)
                         for i in range(3)]
    a, b = answers.values()
    assert [x[0] for x in a] == [x[0] for x in b] == [401, 401, 429]
    assert [x[2] for x in a] == [x[2] for x in b]  # the same bodies
    assert a[2][1]["Retry-After"] == b[2][1]["Retry-After"]
    # The same work: an unknown user's check takes as long (argon2 against
    # a dummy hash), not the few milliseconds of a missing row.
    known_t = statistics.median(x[3] for x in a[:2])
    unknown_t = statistics.median(x[3] for x in b[:2])
    assert unknown_t > 0.5 * known_t, (known_t, unknown_t)


# The flood runs in a process of its own, so that its 64 threads do not hold
# the GIL while the test times the legitimate writes.
FLOOD = r"""
import base64, http.client, json, sys, threading, time
port, user, n, seconds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
auth = "Basic " + base64.b64encode(f"{user}:wrong".encode()).decode()
results, lock = [], threading.Lock()
start = threading.Barrier(n)
def one(i):
    # Each attacker thread from an address of its own: no per-address throttle
    # helps, only the argon2 slots and the username's throttle.
    src = f"127.0.{10 + i // 200}.{1 + i % 200}"
    start.wait()
    end = time.monotonic() + seconds
    while True:
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(src, 0))
        c.request("GET", "/api/me/", headers={"Authorization": auth})
        r = c.getresponse()
        r.read()
        c.close()
        with lock:
            results.append((r.status, time.monotonic() - t0, r.getheader("Retry-After")))
        if time.monotonic() > end:
            break
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
t0 = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
# A summary only: a pipe holds 64 KiB, and the test polls before it reads.
statuses = {}
for s, _, _ in results:
    statuses[str(s)] = statuses.get(str(s), 0) + 1
print(json.dumps({
    "n": len(results), "statuses": statuses, "total": time.monotonic() - t0,
    "max": max(t for _, t, _ in results),
    "bad_retry_after": sum(1 for s, _, ra in results
                           if s == 429 and not (ra and int(ra) >= 1)),
}))
"""


def flood(api, user, n=64, seconds=2.0):
    return subprocess.Popen([sys.executable, "-c", FLOOD, str(api.port), user, str(n),
                             str(seconds)], stdout=subprocess.PIPE, text=True)


def flood_result(p):
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0
    return json.loads(out)


def test_a_64_way_wrong_password_flood_does_not_starve_a_legitimate_write(api):
    victim, _ = api.new_customer(password="right")
    cached, _ = api.new_customer(password="mine")
    fresh, _ = api.new_customer(password="fresh")
    assert call(api, "GET", "/me/", cached)[0] == 200  # its password is now cached
    p = flood(api, victim[0])
    time.sleep(0.3)  # the flood is under way
    writes = []
    fresh_answer = None
    for i in range(200):
        if p.poll() is not None and len(writes) >= 10:
            break
        if fresh_answer is None and len(writes) == 3:
            # A login the auth cache does not know needs argon2 during the flood.
            fresh_answer = call(api, "POST", "/me/", fresh, {"company": "during"})
        status, _, _, took = call(api, "POST", "/me/", cached, {"company": f"c{i}"})
        assert status == 200
        writes.append(took)
        time.sleep(0.02)
    flooded = flood_result(p)
    statuses = flooded["statuses"]
    assert flooded["n"] >= 64 and set(statuses) <= {"401", "429"}, statuses
    assert "401" in statuses  # some guesses were really checked...
    # ...and none waited long: the argon2 slots refuse rather than queue.
    assert flooded["max"] < 3.0
    assert flooded["bad_retry_after"] == 0
    # The figure: a cached customer's write during the flood.
    writes.sort()
    print(f"writes during the flood: median {statistics.median(writes) * 1e3:.1f} ms, "
          f"max {writes[-1] * 1e3:.1f} ms over {len(writes)}; flood answered "
          f"{flooded['n']} ({statuses}) in {flooded['total']:.2f} s")
    assert statistics.median(writes) < 0.1, writes
    # Uncached: answered at once, either checked (200) or told to come back
    # when every argon2 slot is busy; it works once the flood is over.
    status, headers, _, took = fresh_answer
    assert took < 3.0
    assert status == 200 or (status == 429 and int(headers["Retry-After"]) >= 1), fresh_answer
    assert call(api, "POST", "/me/", fresh, {"company": "after"})[0] == 200


def test_throttle_settings_are_checked():
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        conf = os.path.join(d, "api.conf")
        with open(conf, "w") as f:
            f.write("auth_slots = 0\n")
        p = subprocess.run([os.path.join(BIN, "imperium-api"), "-c", conf],
                           capture_output=True, text=True, timeout=30, cwd=d)
        assert p.returncode == 2
        assert "auth_slots must be an integer from 1 to 256, not '0'" in p.stderr
