"""/tags/ and /me/."""

import pytest


def test_tags_crud(api):
    auth, _ = api.new_customer()
    assert api.get("/tags/", auth=auth).json() == []
    r = api.post("/tags/", auth=auth, json={"name": "foobar"})
    assert r.status_code == 201
    tag = r.json()
    assert tag["name"] == "foobar" and tag["note"] == "" and tag["id"] > 0
    r = api.post("/tags/", auth=auth, json={"name": "web", "note": "front ends"})
    assert r.status_code == 201 and r.json()["note"] == "front ends"
    assert api.post("/tags/", auth=auth, json={"name": "foobar"}).status_code == 409
    assert [t["name"] for t in api.get("/tags/", auth=auth).json()] == ["foobar", "web"]
    assert api.get(f"/tags/{tag['id']}", auth=auth).json() == tag
    r = api.post(f"/tags/{tag['id']}", auth=auth, json={"name": "renamed", "note": "n"})
    assert r.status_code == 200
    assert r.json() == {"id": tag["id"], "name": "renamed", "note": "n"}
    assert api.post(f"/tags/{tag['id']}", auth=auth, json={"name": "web"}).status_code == 409
    r = api.delete(f"/tags/{tag['id']}", auth=auth)
    assert r.status_code == 200 and r.json() == {"message": "Ok"}
    assert api.get(f"/tags/{tag['id']}", auth=auth).status_code == 404
    assert api.delete(f"/tags/{tag['id']}", auth=auth).status_code == 404


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": 3}, {"name": "a,b"},
                                  {"name": "x" * 256}, {"name": "ok", "note": 1}])
def test_bad_tags_are_400(api, body):
    auth, _ = api.new_customer()
    r = api.post("/tags/", auth=auth, json=body)
    assert r.status_code == 400 and r.json()["reason"]
    assert api.get("/tags/", auth=auth).json() == []


def test_deleting_a_tag_removes_it_from_containers(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    t = api.post("/tags/", auth=auth, json={"name": "doomed"}).json()
    api.post(f"/containers/{uid}", auth=auth, json={"tags": ["doomed"]})
    assert api.get(f"/containers/{uid}", auth=auth).json()["tags"] == ["doomed"]
    api.delete(f"/tags/{t['id']}", auth=auth)
    assert api.get(f"/containers/{uid}", auth=auth).json()["tags"] == []


def test_tags_are_per_customer(api):
    a, _ = api.new_customer()
    b, _ = api.new_customer()
    ta = api.post("/tags/", auth=a, json={"name": "web"}).json()
    assert api.post("/tags/", auth=b, json={"name": "web"}).status_code == 201
    assert api.get(f"/tags/{ta['id']}", auth=b).status_code == 404
    assert api.post(f"/tags/{ta['id']}", auth=b, json={"name": "x"}).status_code == 404
    assert api.delete(f"/tags/{ta['id']}", auth=b).status_code == 404
    assert api.get(f"/tags/{ta['id']}", auth=a).json()["name"] == "web"
    assert len(api.get("/tags/", auth=b).json()) == 1


def test_me_update(api):
    auth, info = api.new_customer(company="C", vat="V", email="e@x")
    me = api.get("/me/", auth=auth).json()
    assert me == {"company": "C", "vat": "V", "email": "e@x", "uuid": info["uuid"],
                  "containers": [], "servers": []}
    r = api.post("/me/", auth=auth, json={"vat": "IT1", "email": "new@x"})
    assert r.status_code == 200 and r.json()["vat"] == "IT1" and r.json()["email"] == "new@x"
    for body in ({"company": 5}, {"password": ""}, {"password": None}, {"email": ["a"]}):
        r = api.post("/me/", auth=auth, json={"vat": "changed", **body})
        assert r.status_code == 400, body
    assert api.get("/me/", auth=auth).json()["vat"] == "IT1"
    assert api.get("/me/", auth=auth).status_code == 200  # password unchanged


def test_password_change_through_hex_headers(api):
    auth, _ = api.new_customer(password="old-pass")
    hx = lambda u, p: {"X-uwsgi-it-username": u.encode().hex(),
                       "X-uwsgi-it-password": p.encode().hex()}
    assert api.get("/me/", headers=hx(auth[0], "old-pass")).status_code == 200
    r = api.post("/me/", headers=hx(auth[0], "old-pass"), json={"password": "nüово"})
    assert r.status_code == 200
    assert api.get("/me/", headers=hx(auth[0], "old-pass")).status_code == 401
    assert api.get("/me/", headers=hx(auth[0], "nüово")).status_code == 200
    assert api.get("/me/", auth=(auth[0], "old-pass")).status_code == 401
