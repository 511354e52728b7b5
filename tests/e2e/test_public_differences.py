"""Where Imperium answers differently from the public platform (unbit/uwsgi.it,
uwsgi_it_api/views.py), each difference pinned as a client sees it.  The list
and the reasons are in docs/API-NOTES.md, "Where we answer differently from
the public platform"; this file holds the differences no other test pins."""

import pytest
import requests

from helpers import unique


@pytest.fixture
def owner(api):
    """A customer owning a server, with one container on it."""
    auth, _ = api.new_customer()
    server = api.new_server(owner=auth[0], memory=1000, storage=1000)
    r = api.post("/containers/", auth=auth, json={"server": server["address"], "name": "a",
                                                  "memory": 100, "storage": 100})
    assert r.status_code == 201, r.text
    return {"auth": auth, "addr": server["address"], "uid": r.json()["uid"]}


def bad_request(r, *words):
    """A 400 whose reason names what a client must fix."""
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == "Bad Request", body
    for w in words:
        assert w in body["reason"], (w, body)
    return body["reason"]


# ---- containers -----------------------------------------------------------

def test_create_missing_key_is_400_not_403(api, owner):
    """containers(): a missing key was 403 Forbidden; we say which key."""
    r = api.post("/containers/", auth=owner["auth"],
                 json={"server": owner["addr"], "name": "b", "memory": 10})
    bad_request(r, "storage")


def test_create_without_room_is_409_not_200(api, owner):
    """containers(): "not enough memory" came with status 200 (no status set)."""
    auth = owner["auth"]
    before = api.get("/me/", auth=auth).json()["containers"]
    r = api.post("/containers/", auth=auth, json={"server": owner["addr"], "name": "b",
                                                  "memory": 901, "storage": 10})
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "Conflict", "reason": "not enough memory"}
    r = api.post("/containers/", auth=auth, json={"server": owner["addr"], "name": "b",
                                                  "memory": 10, "storage": 901})
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "Conflict", "reason": "not enough storage"}
    assert api.get("/me/", auth=auth).json()["containers"] == before


def test_create_memory_zero_is_400_not_200(api, owner):
    """containers(): memory <= 0 was 200 {"error": "Conflict", "reason": "not
    enough memory"}; a non-positive size is a bad request, named."""
    r = api.post("/containers/", auth=owner["auth"],
                 json={"server": owner["addr"], "name": "b", "memory": 0, "storage": 10})
    bad_request(r, "memory")


def test_unknown_distro_is_400_not_500(api, owner):
    """container(): Distro.objects.get raised DoesNotExist, a 500."""
    r = api.post(f"/containers/{owner['uid']}", auth=owner["auth"], json={"distro": 999999})
    bad_request(r, "distro")


def test_memory_on_a_server_not_owned_is_403_not_ignored(api, kratos):
    """container(): memory/storage on a server the customer does not own were
    silently ignored (200, nothing changed); we say no."""
    r = api.post(f"/containers/{kratos['uid']}", auth=kratos["auth"], json={"memory": 600})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "Forbidden" and "reason" in r.json()


def test_empty_object_is_no_change_not_403(api, kratos):
    """container(), loopbox(): an empty object {} was 403 Forbidden; it is a
    change of nothing, answered as a GET (the object, unchanged)."""
    auth, uid = kratos["auth"], kratos["uid"]
    before = api.get(f"/containers/{uid}", auth=auth).json()
    r = api.post(f"/containers/{uid}", auth=auth, json={})
    assert r.status_code == 200, r.text
    assert r.json() == before
    r = api.post("/loopboxes/", auth=auth, json={"container": uid, "filename": unique("f"),
                                                 "mountpoint": unique("m")})
    assert r.status_code == 201, r.text
    lid = r.json()["id"]
    r = api.post(f"/loopboxes/{lid}", auth=auth, json={})
    assert r.status_code == 200, r.text
    assert r.json() == api.get(f"/loopboxes/{lid}", auth=auth).json()


def test_link_to_missing_uid_is_400_not_409(api, kratos):
    """container(): a link to a uid that does not exist was 409 Conflict (the
    DoesNotExist swallowed); it is a bad value, not a conflict."""
    for key in ("link", "unlink"):
        r = api.post(f"/containers/{kratos['uid']}", auth=kratos["auth"], json={key: 999999})
        bad_request(r, key, "999999")


def test_failed_link_changes_nothing(api, kratos):
    """container(): fields and tags set before a failing link stayed written
    (tags were saved at once); our POST is all or nothing."""
    auth, uid = kratos["auth"], kratos["uid"]
    tag = unique("t")
    assert api.post("/tags/", auth=auth, json={"name": tag}).status_code == 201
    other = api.new_container(api.new_customer()[0][0], kratos["server"]["name"])
    before = api.get(f"/containers/{uid}", auth=auth).json()
    r = api.post(f"/containers/{uid}", auth=auth,
                 json={"note": "changed", "tags": [tag], "unlink": other})
    assert r.status_code == 409, r.text
    assert api.get(f"/containers/{uid}", auth=auth).json() == before


def test_wrong_type_is_400_not_stored(api, kratos):
    """container(): setattr stored whatever came (a list as the name became
    its Python text "['x']"); a field of the wrong type is 400 naming it, and
    nothing changes."""
    auth, uid = kratos["auth"], kratos["uid"]
    before = api.get(f"/containers/{uid}", auth=auth).json()
    r = api.post(f"/containers/{uid}", auth=auth, json={"name": ["x"]})
    bad_request(r, "name")
    r = api.post(f"/containers/{uid}", auth=auth, json={"note": "n", "nofollow": "yes"})
    bad_request(r, "nofollow")
    assert api.get(f"/containers/{uid}", auth=auth).json() == before


def test_invalid_json_is_400_not_500(api, kratos):
    """Every view: json.loads raised ValueError, a 500."""
    r = requests.post(api.url(f"/containers/{kratos['uid']}"), auth=kratos["auth"],
                      data="{not json", timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "Bad Request"


def test_regenerate_secret_uuid_works(api, kratos):
    """container_regenerate_secret_uuid(): looked the container up with the
    builtin id(), so every call was 403; ours regenerates it."""
    auth, uid = kratos["auth"], kratos["uid"]
    old = api.get(f"/containers/{uid}", auth=auth).json()["secret_uuid"]
    r = api.post(f"/regenerate_secret_uuid/{uid}", auth=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Ok"}
    assert api.get(f"/containers/{uid}", auth=auth).json()["secret_uuid"] != old


def test_methods_without_a_view_are_405_not_get(api, kratos):
    """container(), me(), loopbox() ... answered any other method as a GET
    (DELETE /containers/<uid> returned the container); we answer 405."""
    auth, uid = kratos["auth"], kratos["uid"]
    for path in (f"/containers/{uid}", "/me/", f"/regenerate_secret_uuid/{uid}"):
        r = api.delete(path, auth=auth)
        assert r.status_code == 405, (path, r.text)
        assert r.json() == {"error": "Method not allowed"}
    r = api.get(f"/regenerate_secret_uuid/{uid}", auth=auth)
    assert r.status_code == 405, r.text
    r = requests.put(api.url("/containers/"), auth=auth, json={}, timeout=30)
    assert r.status_code == 405, r.text
    assert api.get(f"/containers/{uid}", auth=auth).status_code == 200


def test_tags_filter_lists_each_container_once(api, kratos):
    """containers(): filter(tags__name__in=...) listed a container once per
    matching tag; we list it once."""
    auth, uid = kratos["auth"], kratos["uid"]
    t1, t2 = unique("t"), unique("t")
    for t in (t1, t2):
        assert api.post("/tags/", auth=auth, json={"name": t}).status_code == 201
    assert api.post(f"/containers/{uid}", auth=auth, json={"tags": [t1, t2]}).status_code == 200
    got = api.get(f"/containers/?tags={t1},{t2}", auth=auth).json()
    assert [c["uid"] for c in got] == [uid]


def test_someone_elses_container_domains_is_403_not_404(api, kratos):
    """domains_in_container(): someone else's container was 404; every
    /containers/<uid> path of ours answers 403 for it, as container() did."""
    other, _ = api.new_customer()
    for auth in (other, kratos["auth"]):
        uid = kratos["uid"] if auth is other else 99999
        r = api.get(f"/containers/{uid}/domains", auth=auth)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "Forbidden"


# ---- me ---------------------------------------------------------------------

def test_me_empty_password_is_400(api, kratos):
    """me(): set_password("") was accepted, leaving an account whose password
    is empty; we refuse it, and the old password keeps working."""
    auth = kratos["auth"]
    r = api.post("/me/", auth=auth, json={"password": "", "company": "x"})
    bad_request(r, "password")
    me = api.get("/me/", auth=auth)
    assert me.status_code == 200 and me.json()["company"] != "x"


# ---- port mappings ------------------------------------------------------------

def test_portmapping_errors_are_named_not_403(api, owner):
    """portmappings(): every failure was 403 Forbidden."""
    auth, addr, uid = owner["auth"], owner["addr"], owner["uid"]
    ok = {"proto": "tcp", "public_port": 9000, "private_port": 9000, "container": uid}
    r = api.post(f"/portmappings/{addr}", auth=auth, json={**ok, "public_port": 70000})
    bad_request(r, "public_port")
    r = api.post(f"/portmappings/{addr}", auth=auth, json={**ok, "proto": "sctp"})
    bad_request(r, "proto")
    assert api.post(f"/portmappings/{addr}", auth=auth, json=ok).status_code == 201
    r = api.post(f"/portmappings/{addr}", auth=auth, json=ok)
    assert r.status_code == 409, r.text
    r = api.delete(f"/portmappings/{addr}", auth=auth, json={"id": 999999})
    assert r.status_code == 404, r.text


def test_portmapping_reserved_ports_are_ours(api, owner):
    """Portmap.clean(): public ports 1024-65535 but 1999, 3022, 3026 (the
    public platform's own services); ours 1025-65535 but 2222, 8000, 8080,
    8443, the legions' 3032, 3033 and 4242-4341 (this platform's)."""
    auth, addr, uid = owner["auth"], owner["addr"], owner["uid"]
    base = {"proto": "udp", "private_port": 9000, "container": uid}
    r = api.post(f"/portmappings/{addr}", auth=auth, json={**base, "public_port": 1024})
    bad_request(r, "public_port")
    for port in (2222, 8080, 3032, 3033, 4242, 4341):
        r = api.post(f"/portmappings/{addr}", auth=auth, json={**base, "public_port": port})
        bad_request(r, f"public port {port} is used by the platform itself")
    r = api.post(f"/portmappings/{addr}", auth=auth, json={**base, "public_port": 1999})
    assert r.status_code == 201, r.text
    r = api.post(f"/portmappings/{addr}", auth=auth, json={**base, "public_port": 4342})
    assert r.status_code == 201, r.text


# ---- loopboxes, tags, custom distros ------------------------------------------

def test_loopbox_bad_path_is_400_not_409(api, kratos):
    """loopboxes(): any failure of save() (a bad path too) was 409 Conflict."""
    r = api.post("/loopboxes/", auth=kratos["auth"],
                 json={"container": kratos["uid"], "filename": "../x", "mountpoint": "m"})
    bad_request(r, "filename")


def test_loopbox_missing_key_is_400_not_403(api, kratos):
    r = api.post("/loopboxes/", auth=kratos["auth"],
                 json={"container": kratos["uid"], "filename": "x"})
    bad_request(r, "mountpoint")


def test_tag_empty_name_is_400(api, kratos):
    """tags(): save() without full_clean stored an empty name."""
    r = api.post("/tags/", auth=kratos["auth"], json={"name": ""})
    bad_request(r, "name")


def test_custom_distro_update_works(api, owner):
    """custom_distro(): a POST raised NameError (allowed_fields misspelt), a
    500; ours updates."""
    auth, uid = owner["auth"], owner["uid"]
    assert api.post(f"/containers/{uid}", auth=auth,
                    json={"custom_distros_storage": True}).status_code == 200
    r = api.post(f"/custom_distros/{uid}", auth=auth, json={"name": "d", "path": "d"})
    assert r.status_code == 201, r.text
    did = api.get("/custom_distros/", auth=auth).json()[0]["id"]
    r = api.post(f"/custom_distro/{did}", auth=auth, json={"note": "n"})
    assert r.status_code == 200, r.text
    assert r.json()["note"] == "n"
    r = api.post(f"/custom_distros/{uid}", auth=auth, json={"name": "d", "path": "e"})
    assert r.status_code == 409, r.text


# ---- alarms -------------------------------------------------------------------

def test_alarm_filters_bad_integer_is_400_not_500(api, kratos):
    """alarms(): int(request.GET['level']) raised ValueError, a 500."""
    r = api.get("/alarms/?level=x", auth=kratos["auth"])
    bad_request(r, "level")


def test_alarm_bad_parameters_are_400(api, kratos):
    """raise_alarm(): any level >= 1 was stored (201), and a line that is not
    a number failed save(), answered 409 Conflict; both are 400 naming it and
    store nothing."""
    auth, uid = kratos["auth"], kratos["uid"]
    r = api.post(f"/alarms/raise/{uid}?level=5", auth=auth, data=b"m")
    bad_request(r, "level")
    r = api.post(f"/alarms/raise/{uid}?line=x", auth=auth, data=b"m")
    bad_request(r, "line")
    assert api.get(f"/alarms/?container={uid}", auth=auth).json() == []


# ---- metrics ------------------------------------------------------------------

def test_metrics_forbidden_is_json(api, kratos):
    """metrics_container_*(): 403 with the text body "Forbidden\\n"."""
    other, _ = api.new_customer()
    r = api.get(f"/metrics/container.cpu/{kratos['uid']}", auth=other)
    assert r.status_code == 403, r.text
    assert r.json() == {"error": "Forbidden"}


def test_someone_elses_domain_metrics_is_404_not_403(api, kratos):
    """metrics_domain_*(): someone else's or a missing domain was 403
    "Forbidden\n"; a domain path of ours answers 404 for it, as domain() did."""
    r = api.get("/metrics/domain.hits/999999", auth=kratos["auth"])
    assert r.status_code == 404, r.text
    assert r.json() == {"error": "Not found"}


def test_metrics_bad_day_is_400_not_500(api, kratos):
    """metrics_container_do(): int(request.GET['day']) raised, a 500."""
    r = api.get(f"/metrics/container.cpu/{kratos['uid']}?day=x", auth=kratos["auth"])
    bad_request(r, "day")


# ---- authentication -------------------------------------------------------------

def test_bad_hex_credentials_are_401_not_500(api, kratos):
    """api_auth(): .decode('hex') of a bad header raised, a 500."""
    r = requests.get(api.url("/me/"), timeout=30,
                     headers={"X-uwsgi-it-username": "zz", "X-uwsgi-it-password": "zz"})
    assert r.status_code == 401, r.text
    assert r.json() == {"error": "Unauthorized"}
    # base64.b64decode of a bad Authorization raised too.
    r = requests.get(api.url("/me/"), timeout=30, headers={"Authorization": "Basic !!!"})
    assert r.status_code == 401, r.text
    assert r.json() == {"error": "Unauthorized"}
