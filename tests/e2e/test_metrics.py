"""/metrics/: one UTC day (or a ?from=&to= range) of samples, in the public
platform's shapes, with an Expires header.  Samples go straight into the API's
database here (Api.sql_many; test_node_reports.py posts them as a node does)."""

import calendar
import email.utils
import time

import pytest

from conftest import unique

CONTAINER_METRICS = ["io.read", "io.write", "net.rx", "net.tx", "cpu", "mem", "mem.rss",
                     "mem.cache", "quota"]
DOMAIN_METRICS = ["net.rx", "net.tx", "hits"]

DAY = calendar.timegm((2024, 2, 29, 0, 0, 0))  # a leap day


def db_insert(api, sql, rows):
    api.sql_many(sql, rows)


def container_samples(api, uid, rows):
    db_insert(api, "INSERT INTO container_metrics (container_id, metric, unix, value) "
                   "VALUES (?, ?, ?, ?)", [(uid - 30000, *row) for row in rows])


def domain_samples(api, domain_id, rows):
    db_insert(api, "INSERT INTO domain_metrics (domain_id, container_id, metric, unix, value) "
                   "VALUES (?, ?, ?, ?, ?)", [(domain_id, *row) for row in rows])


def today_start():
    now = int(time.time())
    return now - now % 86400


@pytest.fixture
def owner(api):
    """A customer with two containers and a domain, and a stranger with a
    container of its own."""
    auth, _ = api.new_customer()
    stranger, _ = api.new_customer()
    server = api.new_server()
    uids = [api.new_container(auth[0], server["name"]) for _ in range(2)]
    foreign = api.new_container(stranger[0], server["name"])
    dom = api.admin("POST", "/domains", {"name": unique("metrics") + ".test",
                                         "customer": auth[0]}, expect=201).json()
    return {"auth": auth, "uids": uids, "domain": dom["id"], "stranger": stranger,
            "foreign": foreign}


def test_container_metric_today_oldest_first(api, owner):
    auth, uid = owner["auth"], owner["uids"][0]
    t = today_start()
    container_samples(api, uid, [("cpu", t + 120, 30), ("cpu", t + 60, 20), ("cpu", t, 10),
                                 ("cpu", t - 1, 999),  # yesterday
                                 ("mem", t + 60, 512)])
    container_samples(api, owner["uids"][1], [("cpu", t + 30, 77)])
    r = api.get(f"/metrics/container.cpu/{uid}", auth=auth)
    assert r.status_code == 200
    assert r.json() == [[t, 10], [t + 60, 20], [t + 120, 30]]
    assert api.get(f"/metrics/container.cpu/{uid}/", auth=auth).json() == r.json()
    assert api.get(f"/metrics/container.mem/{uid}", auth=auth).json() == [[t + 60, 512]]
    assert api.get(f"/metrics/container.io.read/{uid}", auth=auth).json() == []


@pytest.mark.parametrize("metric", CONTAINER_METRICS)
def test_every_container_metric(api, owner, metric):
    auth, uid = owner["auth"], owner["uids"][1]
    t = today_start()
    container_samples(api, uid, [(metric, t + 7, len(metric))])
    r = api.get(f"/metrics/container.{metric}/{uid}", auth=auth)
    assert r.status_code == 200 and r.json() == [[t + 7, len(metric)]]


def test_day_selection(api, owner):
    auth, uid = owner["auth"], owner["uids"][0]
    container_samples(api, uid, [("net.rx", DAY - 1, 1), ("net.rx", DAY, 2),
                                 ("net.rx", DAY + 86399, 3), ("net.rx", DAY + 86400, 4)])
    url = f"/metrics/container.net.rx/{uid}"
    r = api.get(url + "?year=2024&month=2&day=29", auth=auth)
    assert r.status_code == 200 and r.json() == [[DAY, 2], [DAY + 86399, 3]]
    assert api.get(url + "?year=2024&month=3&day=1", auth=auth).json() == [[DAY + 86400, 4]]
    assert api.get(url + "?year=2024&month=2&day=28", auth=auth).json() == [[DAY - 1, 1]]
    assert api.get(url + "?year=2023&month=2&day=28", auth=auth).json() == []
    # Without a day: today, which holds none of these.
    assert api.get(url, auth=auth).json() == []


@pytest.mark.parametrize("query", [
    "year=abc&month=2&day=1", "year=2024&month=13&day=1", "year=2024&month=0&day=1",
    "year=2023&month=2&day=29", "year=2024&month=4&day=31", "year=2024&month=1&day=0",
    "year=1969&month=12&day=31", "year=2024&month=2&day=", "year=&month=2&day=1",
    "year=2024&month=2&day=1.5", "day=-1",
])
def test_bad_day_is_400(api, owner, query):
    auth, uid = owner["auth"], owner["uids"][0]
    for path in (f"/metrics/container.cpu/{uid}", f"/metrics/domain.hits/{owner['domain']}"):
        r = api.get(f"{path}?{query}", auth=auth)
        assert r.status_code == 400, (path, query, r.text)
        body = r.json()
        assert body["error"] == "Bad Request" and body["reason"]
        assert any(part in body["reason"] for part in ("year", "month", "day"))


def test_domain_metrics_one_entry_per_container(api, owner):
    """The public platform's shape: [{"container": uid, "metrics": [...]}],
    by uid; samples no container served (a node's own answer) last, null."""
    auth, dom = owner["auth"], owner["domain"]
    ua, ub = owner["uids"]
    a, b = ua - 30000, ub - 30000
    t = today_start()
    domain_samples(api, dom, [(b, "hits", t + 60, 4), (a, "hits", t + 120, 5),
                              (a, "hits", t + 60, 3), (None, "hits", t + 30, 1),
                              (a, "hits", t - 60, 50), (a, "net.tx", t + 60, 1000)])
    r = api.get(f"/metrics/domain.hits/{dom}", auth=auth)
    assert r.status_code == 200
    assert r.json() == [{"container": ua, "metrics": [[t + 60, 3], [t + 120, 5]]},
                        {"container": ub, "metrics": [[t + 60, 4]]},
                        {"container": None, "metrics": [[t + 30, 1]]}]
    assert api.get(f"/metrics/domain.net.tx/{dom}", auth=auth).json() == \
        [{"container": ua, "metrics": [[t + 60, 1000]]}]
    assert api.get(f"/metrics/domain.net.rx/{dom}", auth=auth).json() == []
    y, m, d = time.gmtime(t - 60)[:3]
    r = api.get(f"/metrics/domain.hits/{dom}?year={y}&month={m}&day={d}", auth=auth)
    assert r.json() == [{"container": ua, "metrics": [[t - 60, 50]]}]


def test_from_to_range(api, owner):
    """?from=&to= (unix seconds, from included, to excluded), up to 31 days."""
    auth, uid, dom = owner["auth"], owner["uids"][0], owner["domain"]
    container_samples(api, uid, [("net.tx", DAY - 1, 1), ("net.tx", DAY, 2),
                                 ("net.tx", DAY + 5 * 86400, 3),
                                 ("net.tx", DAY + 31 * 86400, 4)])
    domain_samples(api, dom, [(uid - 30000, "net.tx", DAY + 86400, 7),
                              (uid - 30000, "net.tx", DAY + 40 * 86400, 8)])
    url = f"/metrics/container.net.tx/{uid}"
    r = api.get(f"{url}?from={DAY}&to={DAY + 31 * 86400}", auth=auth)
    assert r.status_code == 200 and r.json() == [[DAY, 2], [DAY + 5 * 86400, 3]]
    assert api.get(f"{url}?from={DAY - 1}&to={DAY}", auth=auth).json() == [[DAY - 1, 1]]
    r = api.get(f"/metrics/domain.net.tx/{dom}?from={DAY}&to={DAY + 31 * 86400}", auth=auth)
    assert r.status_code == 200
    assert r.json() == [{"container": uid, "metrics": [[DAY + 86400, 7]]}]


@pytest.mark.parametrize("query,words", [
    ("from=100&to=100", ["'to'", "after"]),
    ("from=200&to=100", ["'to'", "after"]),
    (f"from={DAY}&to={DAY + 31 * 86400 + 1}", ["31 days"]),
    ("from=0&to=99999999999", ["31 days"]),
    ("from=-5&to=100", ["'from'"]),
    ("from=abc&to=100", ["'from'", "integer"]),
    ("from=100&to=1e3", ["'to'", "integer"]),
    ("from=100&to=", ["'to'"]),
    ("from=100", ["'from' and 'to'"]),
    ("to=100", ["'from' and 'to'"]),
    ("from=100&to=200&year=2024", ["either"]),
    ("from=100&to=200&day=1", ["either"]),
])
def test_bad_range_is_400(api, owner, query, words):
    auth, uid = owner["auth"], owner["uids"][0]
    for path in (f"/metrics/container.cpu/{uid}", f"/metrics/domain.hits/{owner['domain']}"):
        r = api.get(f"{path}?{query}", auth=auth)
        assert r.status_code == 400, (path, query, r.text)
        body = r.json()
        assert body["error"] == "Bad Request"
        assert all(w in body["reason"] for w in words), body["reason"]
        assert "Expires" not in r.headers


def expires_in(r):
    """Seconds from now to the answer's Expires date."""
    return email.utils.parsedate_to_datetime(r.headers["Expires"]).timestamp() - time.time()


def test_expires_short_for_today_long_for_the_past(api, owner):
    auth, uid, dom = owner["auth"], owner["uids"][0], owner["domain"]
    t = today_start()
    y, m, d = time.gmtime(t - 86400)[:3]
    for path in (f"/metrics/container.cpu/{uid}", f"/metrics/domain.hits/{dom}"):
        today = api.get(path, auth=auth)
        assert today.status_code == 200
        # An HTTP date (RFC 9110 IMF-fixdate), 5 minutes ahead.
        assert today.headers["Expires"].endswith(" GMT")
        assert 290 <= expires_in(today) <= 301, today.headers["Expires"]
        past = api.get(f"{path}?year={y}&month={m}&day={d}", auth=auth)
        assert 86390 <= expires_in(past) <= 86401, past.headers["Expires"]
        old = api.get(f"{path}?from={DAY}&to={DAY + 86400}", auth=auth)
        assert 86390 <= expires_in(old) <= 86401
        recent = api.get(f"{path}?from={t - 86400}&to={int(time.time())}", auth=auth)
        assert 290 <= expires_in(recent) <= 301
        # A future day may still get samples: short too.
        y2, m2, d2 = time.gmtime(t + 86400)[:3]
        future = api.get(f"{path}?year={y2}&month={m2}&day={d2}", auth=auth)
        assert 290 <= expires_in(future) <= 301


def test_expires_is_of_each_answer(api, owner):
    """Never a stale Expires: each answer says its own (none is cached)."""
    auth, uid = owner["auth"], owner["uids"][0]
    first = api.get(f"/metrics/container.cpu/{uid}", auth=auth).headers["Expires"]
    time.sleep(1.1)
    again = api.get(f"/metrics/container.cpu/{uid}", auth=auth).headers["Expires"]
    assert email.utils.parsedate_to_datetime(again) > email.utils.parsedate_to_datetime(first)


@pytest.mark.parametrize("metric", ["container.hits", "container.bogus", "container.",
                                    "container", "domain.cpu", "domain.mem", "cpu",
                                    "net.rx", "CONTAINER.cpu", "container.cpu.x"])
def test_unknown_metric_is_404(api, owner, metric):
    auth = owner["auth"]
    for target in (owner["uids"][0], owner["domain"]):
        r = api.get(f"/metrics/{metric}/{target}", auth=auth)
        assert r.status_code == 404, (metric, r.text)
        assert r.json()["error"] == "Not found"


def test_isolation(api, owner):
    auth, stranger = owner["auth"], owner["stranger"]
    uid, dom, foreign = owner["uids"][0], owner["domain"], owner["foreign"]
    t = today_start()
    container_samples(api, uid, [("cpu", t + 1, 5)])
    domain_samples(api, dom, [(uid - 30000, "hits", t + 1, 5)])
    # A container not the caller's (or none): 403, as for every container endpoint.
    for who, target in ((stranger, uid), (auth, foreign), (auth, 99999), (auth, "abc")):
        r = api.get(f"/metrics/container.cpu/{target}", auth=who)
        assert r.status_code == 403, (target, r.text)
    # A domain not the caller's: 404, exactly as a missing one.
    missing = api.get("/metrics/domain.hits/999999", auth=stranger)
    assert missing.status_code == 404
    for target in (dom, 0, "abc"):
        r = api.get(f"/metrics/domain.hits/{target}", auth=stranger)
        assert r.status_code == 404 and r.json() == missing.json()
    # A bad day does not reveal the object either.
    r = api.get(f"/metrics/domain.hits/{dom}?month=13", auth=stranger)
    assert r.status_code == 404
    r = api.get(f"/metrics/container.cpu/{uid}?month=13", auth=stranger)
    assert r.status_code == 403
    assert api.get(f"/metrics/container.cpu/{foreign}", auth=stranger).json() == []
    # The owner still sees its samples.
    assert api.get(f"/metrics/container.cpu/{uid}", auth=auth).json() == [[t + 1, 5]]
    assert api.get(f"/metrics/domain.hits/{dom}", auth=auth).json() == \
        [{"container": uid, "metrics": [[t + 1, 5]]}]


def test_anonymous_is_401(api, owner):
    assert api.get(f"/metrics/container.cpu/{owner['uids'][0]}").status_code == 401
    assert api.get(f"/metrics/domain.hits/{owner['domain']}").status_code == 401


def test_only_get(api, owner):
    r = api.post(f"/metrics/container.cpu/{owner['uids'][0]}", auth=owner["auth"], json={})
    assert r.status_code == 405
