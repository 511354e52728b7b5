"""The API answers a repeated GET from memory until the next write
(src/api/resp_cache.c).  What a customer must never see: an answer older than
a change the API acknowledged, an answer meant for other credentials or
another client, or a cached answer to a password that no longer works."""

import os
import subprocess
import tempfile

import requests

from conftest import BIN, SQLITE_ONLY, curl, start_api, stop_api


def test_a_password_change_ends_the_old_passwords_answers(api):
    auth, _ = api.new_customer(password="old-secret")
    for _ in range(3):  # cached after the first
        assert api.get("/me/", auth=auth).status_code == 200
    r = api.post("/me/", auth=auth, json={"password": "new-secret"})
    assert r.status_code == 200
    assert api.get("/me/", auth=auth).status_code == 401
    assert api.get("/me/", auth=(auth[0], "new-secret")).status_code == 200


def test_a_deleted_customer_is_not_answered_from_memory(api):
    auth, _ = api.new_customer()
    assert api.get("/me/", auth=auth).status_code == 200
    assert api.get("/me/", auth=auth).status_code == 200
    api.admin("DELETE", f"/customers/{auth[0]}", expect=200)
    assert api.get("/me/", auth=auth).status_code == 401


def test_every_kind_of_write_shows_in_the_next_read(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    path = f"/containers/{uid}"
    first = api.get(path, auth=auth).json()
    assert api.get(path, auth=auth).json() == first
    # the customer's own write
    assert api.post(path, auth=auth, json={"note": "one"}).status_code == 200
    assert api.get(path, auth=auth).json()["note"] == "one"
    # the supplier's write, through the admin API
    api.admin("POST", f"/containers/{uid}", {"memory": first["memory"] + 1}, expect=200)
    assert api.get(path, auth=auth).json()["memory"] == first["memory"] + 1
    # a write of another customer changes nothing here, but must not break it
    other, _ = api.new_customer()
    api.post("/tags/", auth=other, json={"name": "x"})
    assert api.get(path, auth=auth).json()["note"] == "one"
    # a tag created, then put on the container: the list and the object
    assert api.get("/tags/", auth=auth).json() == []
    api.post("/tags/", auth=auth, json={"name": "web"})
    assert [t["name"] for t in api.get("/tags/", auth=auth).json()] == ["web"]
    api.post(path, auth=auth, json={"tags": ["web"]})
    assert api.get(path, auth=auth).json()["tags"] == ["web"]


def test_answers_belong_to_their_credentials(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    path = f"/containers/{uid}"
    assert api.get(path, auth=auth).status_code == 200
    assert api.get(path, auth=auth).status_code == 200
    assert api.get(path, auth=(auth[0], auth[1] + "x")).status_code == 401
    assert api.get(path).status_code == 401
    other, _ = api.new_customer()
    assert api.get(path, auth=other).status_code == 403
    # the hex headers of API.md are credentials too
    hexed = {"X-uwsgi-it-username": auth[0].encode().hex(),
             "X-uwsgi-it-password": (auth[1] + "x").encode().hex()}
    assert requests.get(api.url(path), headers=hexed, timeout=30).status_code == 401
    hexed["X-uwsgi-it-password"] = auth[1].encode().hex()
    assert requests.get(api.url(path), headers=hexed, timeout=30).json()["uid"] == uid


def test_curl_gets_its_newline_and_others_do_not(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    url = api.url(f"/containers/{uid}")
    for _ in range(2):
        status, body = curl("-u", f"{auth[0]}:{auth[1]}", url)
        assert status == 200 and body.endswith("}\n")
        r = requests.get(url, auth=auth, timeout=30)
        assert r.status_code == 200 and r.text.endswith("}")


def test_query_strings_are_answered_afresh(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    api.post("/tags/", auth=auth, json={"name": "db"})
    assert api.get("/containers/?tags=db", auth=auth).json() == []
    api.post(f"/containers/{uid}", auth=auth, json={"tags": ["db"]})
    assert [c["uid"] for c in api.get("/containers/?tags=db", auth=auth).json()] == [uid]
    assert [c["uid"] for c in api.get("/containers/", auth=auth).json()] == [uid]


def test_the_cache_can_be_turned_off():
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        a = start_api(d, ["--response-cache-mb", "0"])
        try:
            auth, _ = a.new_customer()
            for _ in range(2):
                assert a.get("/me/", auth=auth).json()["containers"] == []
            srv = a.new_server()
            uid = a.new_container(auth[0], srv["name"])
            assert a.get("/me/", auth=auth).json()["containers"] == [uid]
        finally:
            stop_api(a)


# On PostgreSQL several APIs share a database by design: test_multi_instance.py.
@SQLITE_ONLY
def test_a_second_api_on_the_same_database_refuses_to_start(api):
    # Its cache and the nodes' wake-ups would miss the first one's writes.
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        p = subprocess.run(
            [os.path.join(BIN, "imperium-api"), "--port", "1",
             "--database", "sqlite:" + os.path.join(api.workdir, "imperium.db"),
             "--admin-token-file", os.path.join(d, "admin.token")],
            capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "in use by another process" in p.stdout + p.stderr
    auth, _ = api.new_customer()  # the first one still works
    assert api.get("/me/", auth=auth).status_code == 200
