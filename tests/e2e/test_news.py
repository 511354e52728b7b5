"""/news/: the ten newest news; customers see all, anonymous callers only the
public ones.  News are global, so every test has an API of its own."""

import time

import requests

from conftest import curl


def add_news(api, content, public):
    return api.admin("POST", "/news", {"content": content, "public": public},
                     expect=201).json()["id"]


def contents(r):
    assert r.status_code == 200, r.text
    return [n["content"] for n in r.json()]


def test_no_news(fresh_api):
    api = fresh_api
    auth, _ = api.new_customer()
    assert api.get("/news/").json() == []
    assert api.get("/news/", auth=auth).json() == []


def test_public_and_private_news(fresh_api):
    api = fresh_api
    auth, _ = api.new_customer()
    before = int(time.time())
    add_news(api, "maintenance on Sunday", True)
    add_news(api, "customers only: new distro", False)
    add_news(api, "we moved datacenter", True)
    after = int(time.time())
    # Anonymous: the public ones, newest first.
    r = api.get("/news/")
    assert contents(r) == ["we moved datacenter", "maintenance on Sunday"]
    assert set(r.json()[0]) == {"content", "date"}
    for n in r.json():
        assert isinstance(n["date"], int) and before <= n["date"] <= after
    # Authenticated, by Basic or by hex headers: all of them.
    everything = ["we moved datacenter", "customers only: new distro",
                  "maintenance on Sunday"]
    assert contents(api.get("/news/", auth=auth)) == everything
    assert contents(api.get("/news", auth=auth)) == everything
    hx = {"X-uwsgi-it-username": auth[0].encode().hex(),
          "X-uwsgi-it-password": auth[1].encode().hex()}
    assert contents(api.get("/news/", headers=hx)) == everything


def test_at_most_ten_newest_first(fresh_api):
    api = fresh_api
    auth, _ = api.new_customer()
    for i in range(13):
        add_news(api, f"news {i}", i % 3 != 0)  # 0, 3, 6, 9, 12 are private
    assert contents(api.get("/news/", auth=auth)) == [f"news {i}" for i in range(12, 2, -1)]
    public = [f"news {i}" for i in range(12, -1, -1) if i % 3 != 0]
    assert len(public) == 8
    assert contents(api.get("/news/")) == public


def test_deleted_news_disappear(fresh_api):
    api = fresh_api
    keep = add_news(api, "keep", True)
    gone = add_news(api, "gone", True)
    api.admin("DELETE", f"/news/{gone}", expect=200)
    assert contents(api.get("/news/")) == ["keep"]
    assert keep != gone


def test_wrong_credentials_are_401_not_public_news(fresh_api):
    api = fresh_api
    auth, _ = api.new_customer()
    add_news(api, "public", True)
    add_news(api, "private", False)
    for kw in ({"auth": (auth[0], "wrong")}, {"auth": ("nobody", "x")},
               {"headers": {"X-uwsgi-it-username": auth[0].encode().hex(),
                            "X-uwsgi-it-password": b"wrong".hex()}},
               {"headers": {"X-uwsgi-it-username": auth[0].encode().hex()}},
               {"headers": {"X-uwsgi-it-username": "not hex",
                            "X-uwsgi-it-password": "zz"}},
               {"headers": {"Authorization": "Bearer " + api.token}}):
        r = api.get("/news/", **kw)
        assert r.status_code == 401, kw
        assert r.json() == {"error": "Unauthorized"}
        assert r.headers["WWW-Authenticate"] == 'Basic realm="uwsgi.it api"'


def test_news_with_curl(fresh_api):
    api = fresh_api
    add_news(api, "hello", True)
    status, body = curl(f"http://127.0.0.1:{api.port}/api/news/")
    assert status == 200 and body.endswith("\n") and '"hello"' in body


def test_cors_and_methods(fresh_api):
    api = fresh_api
    r = requests.options(api.url("/news/"), timeout=30)
    assert r.status_code == 200
    r = api.get("/news/")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Content-Type"].startswith("application/json")
    assert api.post("/news/", json={"content": "x"}).status_code == 405
    assert api.delete("/news/").status_code == 405
