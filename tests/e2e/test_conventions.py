"""API.md "Conventions": paths, the three auth modes, CORS, bodies, errors."""

import json
import socket

import requests

from conftest import curl


def hexs(s):
    return s.encode().hex()


def test_trailing_slash_is_optional(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    for path in ("/me", "/me/", "/containers", "/containers/", f"/containers/{uid}",
                 f"/containers/{uid}/", "/distros", "/distros/", "/tags", "/tags/"):
        r = api.get(path, auth=auth)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"] == "application/json"


def test_basic_auth(api, kratos):
    user, pw = kratos["auth"]
    assert api.get("/me/", auth=(user, pw)).status_code == 200
    r = api.get("/me/", auth=(user, pw + "x"))
    assert r.status_code == 401
    assert r.json() == {"error": "Unauthorized"}
    assert r.headers["WWW-Authenticate"] == 'Basic realm="uwsgi.it api"'
    assert api.get("/me/", auth=("nobody-here", pw)).status_code == 401
    r = api.get("/me/")
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}


def test_hex_header_auth(api, kratos):
    user, pw = kratos["auth"]
    ok = api.get("/me/", headers={"X-uwsgi-it-username": hexs(user),
                                  "X-uwsgi-it-password": hexs(pw)})
    assert ok.status_code == 200
    assert ok.json()["uuid"] == kratos["info"]["uuid"]
    for headers in ({"X-uwsgi-it-username": hexs(user), "X-uwsgi-it-password": hexs("no")},
                    {"X-uwsgi-it-username": user, "X-uwsgi-it-password": pw},  # not hex
                    {"X-uwsgi-it-username": hexs(user), "X-uwsgi-it-password": "abc"},
                    {"X-uwsgi-it-username": hexs(user)}):
        r = api.get("/me/", headers=headers)
        assert r.status_code == 401, headers


def test_basic_auth_comes_first(api, kratos):
    """Valid Basic wins over wrong hex headers, and wrong Basic is not rescued."""
    user, pw = kratos["auth"]
    r = api.get("/me/", auth=(user, pw), headers={"X-uwsgi-it-username": hexs(user),
                                                  "X-uwsgi-it-password": hexs("bad")})
    assert r.status_code == 200
    r = api.get("/me/", auth=(user, "bad"), headers={"X-uwsgi-it-username": hexs(user),
                                                     "X-uwsgi-it-password": hexs(pw)})
    assert r.status_code == 401


def test_cors(api, kratos):
    r = api.get("/me/", auth=kratos["auth"])
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert api.get("/me/").headers["Access-Control-Allow-Origin"] == "*"
    for path in ("/me/", f"/containers/{kratos['uid']}", "/nowhere/at/all"):
        r = requests.options(api.url(path), timeout=10)
        assert r.status_code == 200
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers["Access-Control-Allow-Methods"] == "GET,POST,DELETE,OPTIONS"
        allowed = r.headers["Access-Control-Allow-Headers"].split(",")
        for h in ("X-uwsgi-it-username", "X-uwsgi-it-password", "Authorization",
                  "Content-Type"):
            assert h in allowed


def test_curl_gets_a_final_newline(api, kratos):
    user, pw = kratos["auth"]
    status, body = curl(f"http://{user}:{pw}@127.0.0.1:{api.port}/api/me/")
    assert status == 200 and body.endswith("}\n")
    r = api.get("/me/", auth=kratos["auth"])  # python-requests: no newline
    assert r.text.endswith("}")
    status, body = curl(f"http://127.0.0.1:{api.port}/api/me/")
    assert status == 401 and body == '{"error":"Unauthorized"}\n'


def test_body_over_64k_is_413_and_changes_nothing(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    big = json.dumps({"note": "x" * (64 * 1024)})
    r = api.post(f"/containers/{uid}", auth=auth, data=big)
    assert r.status_code == 413
    assert r.json() == {"error": "Request entity too large"}
    # Chunked upload (no Content-Length): the limit still holds.
    r = requests.post(api.url(f"/containers/{uid}"), auth=auth, timeout=30,
                      data=(c.encode() for c in [big[:40000], big[40000:]]))
    assert r.status_code == 413
    assert api.get(f"/containers/{uid}", auth=auth).json()["note"] == ""
    # Exactly at the limit is accepted.
    note = "y" * (64 * 1024 - len('{"note": ""}'))
    r = api.post(f"/containers/{uid}", auth=auth, data=json.dumps({"note": note}))
    assert r.status_code == 200 and r.json()["note"] == note


def test_malformed_json_is_400_with_reason(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    before = api.get(f"/containers/{uid}", auth=auth).json()
    for body in ('{"name": "x"', "not json", "", "[1, 2]", '"a string"', "null",
                 '{"name": "a", "name": "b"}'):
        r = api.post(f"/containers/{uid}", auth=auth, data=body)
        assert r.status_code == 400, body
        assert r.json()["error"] == "Bad Request"
        assert r.json()["reason"]
    assert api.get(f"/containers/{uid}", auth=auth).json() == before


def test_form_encoded_content_type_is_accepted(api, kratos):
    """curl -d sends application/x-www-form-urlencoded: the body is JSON anyway."""
    user, pw = kratos["auth"]
    status, body = curl("-X", "POST", "-d", '{"note": "from curl"}',
                        f"http://{user}:{pw}@127.0.0.1:{api.port}/api/containers/{kratos['uid']}")
    assert status == 200 and json.loads(body)["note"] == "from curl"


def test_unknown_paths_and_methods(api, kratos):
    auth = kratos["auth"]
    r = api.get("/nothing/here", auth=auth)
    assert r.status_code == 404 and r.json() == {"error": "Not found"}
    r = api.delete("/me/", auth=auth)
    assert r.status_code == 405 and r.json() == {"error": "Method not allowed"}
    r = requests.put(api.url("/me/"), auth=auth, timeout=10)
    assert r.status_code == 405
    # Outside the prefix.
    r = requests.get(api.base + "/me/", auth=auth, timeout=10)
    assert r.status_code == 404


def test_path_traversal_goes_nowhere(api, kratos):
    """Raw paths with .. never reach another object or file."""
    auth = kratos["auth"]
    for raw in (b"/api/containers/../me/", b"/api/../admin/customers",
                b"/api/containers/%2e%2e/me", b"/api/../../etc/passwd"):
        s = socket.create_connection(("127.0.0.1", api.port), timeout=10)
        s.sendall(b"GET " + raw + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        status = int(data.split(b" ")[1])
        assert status in (403, 404), (raw, data[:200])
        assert b"root:" not in data


def test_admin_api_needs_the_token(api):
    r = requests.get(api.base + "/admin/customers", timeout=10)
    assert r.status_code == 401
    # The token with its last character changed (to "0", or "1" if it is "0").
    wrong = api.token[:-1] + ("1" if api.token.endswith("0") else "0")
    r = requests.get(api.base + "/admin/customers", timeout=10,
                     headers={"Authorization": "Bearer " + wrong})
    assert r.status_code == 401
    # Customer credentials are no admin token.
    r = requests.get(api.base + "/admin/customers", timeout=10, auth=("kratos", "deimos"))
    assert r.status_code == 401
    assert api.admin("GET", "/customers").status_code == 200
