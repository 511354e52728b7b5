"""What clients of the public uwsgi.it platform send (issue 14, items 1, 3,
5 and 6): integers as strings, booleans as strings, authorized_keys lines
with options, POST /me/containers/, POST /alarm_key/<uid>, 255-character
names and tags."""

import re

import pytest

HOSTNAME = re.compile(r"^[A-Za-z0-9-]{1,63}$")


def gens(api, uid):
    c = api.admin("GET", f"/containers/{uid}", expect=200).json()
    return c["generation"], c["ssh_generation"]


@pytest.fixture
def owner(api):
    """A customer owning a server (memory and storage may change there), one
    container on it, and a distro."""
    auth, _ = api.new_customer()
    server = api.new_server(owner=auth[0])
    uid = api.post("/containers/", auth=auth, json={"server": server["address"], "name": "a",
                                                    "memory": 100, "storage": 100}).json()["uid"]
    return {"auth": auth, "addr": server["address"], "uid": uid, "distro": api.new_distro()}


# ---- item 1: numbers and booleans sent as strings ---------------------------

def test_container_fields_as_strings(api, owner):
    """The issue's examples on POST /containers/<uid>: the same as integers."""
    auth, uid = owner["auth"], owner["uid"]
    other = api.new_container(api.new_customer()[0][0], api.new_server()["name"])
    did = owner["distro"]["id"]
    r = api.post(f"/containers/{uid}", auth=auth,
                 json={"memory": "1000", "storage": "2000", "alarm_freq": "120",
                       "quota_threshold": "75", "distro": str(did), "link": str(other),
                       "nofollow": "true", "custom_distros_storage": "1"})
    assert r.status_code == 200, r.text
    c = r.json()
    assert (c["memory"], c["storage"], c["alarm_freq"], c["quota_threshold"]) == \
        (1000, 2000, 120, 75)
    assert c["distro"] == did and c["linked_to"] == [other]
    assert c["nofollow"] is True and c["custom_distros_storage"] is True
    c = api.post(f"/containers/{uid}", auth=auth,
                 json={"unlink": str(other), "nofollow": "false",
                       "custom_distros_storage": 0, "distro": None}).json()
    assert c["linked_to"] == [] and c["nofollow"] is False
    assert c["custom_distros_storage"] is False and c["distro"] is None
    # Signs and leading zeros are decimal integers too.
    assert api.post(f"/containers/{uid}", auth=auth,
                    json={"alarm_freq": "+0300"}).json()["alarm_freq"] == 300


def test_create_and_portmapping_and_loopbox_as_strings(api, owner):
    auth, addr = owner["auth"], owner["addr"]
    r = api.post("/containers/", auth=auth, json={"server": addr, "name": "s",
                                                  "memory": "300", "storage": "400"})
    assert r.status_code == 201, r.text
    uid = r.json()["uid"]
    c = api.get(f"/containers/{uid}", auth=auth).json()
    assert (c["memory"], c["storage"]) == (300, 400)
    r = api.post(f"/portmappings/{addr}", auth=auth,
                 json={"container": str(uid), "proto": "tcp", "public_port": "9000",
                       "private_port": "8000"})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    [m] = api.get(f"/portmappings/{addr}", auth=auth).json()
    assert (m["container"], m["public_port"], m["private_port"]) == (uid, 9000, 8000)
    assert api.delete(f"/portmappings/{addr}", auth=auth,
                      json={"id": str(pid)}).status_code == 200
    assert api.get(f"/portmappings/{addr}", auth=auth).json() == []
    r = api.post("/loopboxes/", auth=auth, json={"container": str(uid), "filename": "img",
                                                 "mountpoint": "mnt", "ro": "true"})
    assert r.status_code == 201, r.text
    [lb] = api.get("/loopboxes/", auth=auth).json()
    assert lb["container"] == uid and lb["ro"] is True


def test_admin_fields_as_strings(api):
    srv = api.admin("POST", "/servers", {"name": "strsrv", "address": "198.18.0.9",
                                         "memory": "2000", "storage": "3000",
                                         "weight": "7"}, expect=201).json()
    assert (srv["memory"], srv["storage"], srv["weight"]) == (2000, 3000, 7)
    news = api.admin("POST", "/news", {"content": "hello", "public": "false"}, expect=201)
    assert news.status_code == 201


# Every integer field of the customer API, with a body it is valid in.
INT_FIELDS = [
    ("update", "memory"), ("update", "storage"), ("update", "alarm_freq"),
    ("update", "quota_threshold"), ("update", "distro"), ("update", "link"),
    ("update", "unlink"), ("create", "memory"), ("create", "storage"),
    ("portmap", "container"), ("portmap", "public_port"), ("portmap", "private_port"),
    ("portmap_delete", "id"), ("loopbox", "container"),
]
BAD_STRINGS = ["12a", "", " 1", "1 ", "1.5", "1e3", "0x10", "-", "99999999999999999999"]


def snapshot(api, owner):
    auth, addr, uid = owner["auth"], owner["addr"], owner["uid"]
    return (api.get(f"/containers/{uid}", auth=auth).json(), gens(api, uid),
            api.get("/me", auth=auth).json()["containers"],
            api.get(f"/portmappings/{addr}", auth=auth).json(),
            api.get("/loopboxes/", auth=auth).json())


def bad_request(api, owner, kind, field, value):
    auth, addr, uid = owner["auth"], owner["addr"], owner["uid"]
    if kind == "update":
        return api.post(f"/containers/{uid}", auth=auth, json={"note": "no", field: value})
    if kind == "create":
        body = {"server": addr, "name": "x", "memory": 10, "storage": 10, field: value}
        return api.post("/containers/", auth=auth, json=body)
    if kind == "portmap":
        body = {"container": uid, "proto": "tcp", "public_port": 9100,
                "private_port": 8000, field: value}
        return api.post(f"/portmappings/{addr}", auth=auth, json=body)
    if kind == "portmap_delete":
        return api.delete(f"/portmappings/{addr}", auth=auth, json={field: value})
    body = {"container": uid, "filename": "f", "mountpoint": "m", field: value}
    return api.post("/loopboxes/", auth=auth, json=body)


@pytest.mark.parametrize("kind,field", INT_FIELDS)
def test_int_fields_refuse_strings_that_are_not_decimal(api, owner, kind, field):
    """A string that is not a decimal integer (or overflows) is a 400 naming
    the field, and the request changes nothing."""
    before = snapshot(api, owner)
    for value in BAD_STRINGS:
        r = bad_request(api, owner, kind, field, value)
        assert r.status_code == 400, (value, r.text)
        assert f"'{field}'" in r.json()["reason"], (value, r.text)
        assert snapshot(api, owner) == before, value


@pytest.mark.parametrize("field", ["nofollow", "custom_distros_storage"])
def test_bool_fields_refuse_other_strings(api, owner, field):
    before = snapshot(api, owner)
    for value in ("yes", "", "2", "TRUE ", "t"):
        r = bad_request(api, owner, "update", field, value)
        assert r.status_code == 400 and f"'{field}'" in r.json()["reason"], (value, r.text)
        assert snapshot(api, owner) == before, value


# ---- item 3: authorized_keys lines -----------------------------------------

def test_authorized_keys_line_with_options_reads_back_identical(api, kratos, ssh_keys):
    auth, uid = kratos["auth"], kratos["uid"]
    body, comment = ssh_keys[0].rsplit(" ", 1)
    lines = [
        f'from="10.0.0.0/8,!10.1.2.3",no-pty,command="echo \\"hi there\\"",'
        f'no-port-forwarding,environment="A=b c",permitopen="127.0.0.1:80" {ssh_keys[0]}',
        f"restrict,pty {body} a comment with spaces",
        f'no-agent-forwarding,expiry-time="20300101" {ssh_keys[1]}',
        ssh_keys[2],
    ]
    g, s = gens(api, uid)
    r = api.post(f"/containers/{uid}", auth=auth, json={"ssh_keys": lines})
    assert r.status_code == 200, r.text
    assert r.json()["ssh_keys"] == lines
    assert api.get(f"/containers/{uid}", auth=auth).json()["ssh_keys"] == lines
    assert gens(api, uid) == (g, s + 1)  # a key change is a re-key, not a restart


def test_bad_authorized_keys_lines_are_400_naming_the_index(api, kratos, ssh_keys):
    auth, uid = kratos["auth"], kratos["uid"]
    key = ssh_keys[0]
    typ, blob, _ = key.split(" ", 2)
    bad = {
        "unknown option": f"no-pty,frobnicate {key}",
        "unterminated quote": f'command="ls -l {key}',
        "two keys": f"{key} {ssh_keys[1]}",
        "bad base64": f"{typ} {blob[:20]}!{blob[21:]}",
        "cut blob": f"{typ} {blob[:-1]}",
        "no blob": f"no-pty {typ}",
        "type mismatch": f"ssh-rsa {blob}",
        "value without quotes": f"from=10.0.0.1 {key}",
        "flag with a value": f'no-pty="1" {key}',
        "two lines": f"{key}\n{ssh_keys[1]}",
    }
    before = api.get(f"/containers/{uid}", auth=auth).json()
    g = gens(api, uid)
    for what, line in bad.items():
        r = api.post(f"/containers/{uid}", auth=auth,
                     json={"note": "no", "ssh_keys": [ssh_keys[2], line]})
        assert r.status_code == 400, (what, r.text)
        assert "ssh_keys[1]" in r.json()["reason"], (what, r.text)
    assert api.get(f"/containers/{uid}", auth=auth).json() == before
    assert gens(api, uid) == g


def test_up_to_256_keys(api, kratos, ssh_keys):
    auth, uid = kratos["auth"], kratos["uid"]
    body = ssh_keys[0].rsplit(" ", 1)[0]
    keys = [f"{body} k{i}" for i in range(256)]
    r = api.post(f"/containers/{uid}", auth=auth, json={"ssh_keys": keys})
    assert r.status_code == 200, r.text
    assert r.json()["ssh_keys"] == keys
    r = api.post(f"/containers/{uid}", auth=auth, json={"ssh_keys": keys + [f"{body} k256"]})
    assert r.status_code == 400 and "ssh_keys" in r.json()["reason"]
    assert "256" in r.json()["reason"]
    assert api.get(f"/containers/{uid}", auth=auth).json()["ssh_keys"] == keys


# ---- item 5: method variants -----------------------------------------------

def test_post_me_containers_creates_as_post_containers(api, owner):
    auth, addr = owner["auth"], owner["addr"]
    for path in ("/me/containers/", "/me/containers", "/containers/"):
        r = api.post(path, auth=auth, json={"server": addr, "name": "via " + path,
                                            "memory": 10, "storage": 10})
        assert r.status_code == 201, (path, r.text)
        assert set(r.json()) == {"message", "uid"} and r.json()["message"] == "Created"
        assert r.json()["uid"] in api.get("/me", auth=auth).json()["containers"]
        c = api.get(f"/containers/{r.json()['uid']}", auth=auth).json()
        assert c["name"] == "via " + path and c["server_address"] == addr
    # The same answers to the same mistakes.
    before = api.get("/me", auth=auth).json()["containers"]
    for path in ("/me/containers/", "/containers/"):
        r = api.post(path, auth=auth, json={"server": addr, "name": "x", "memory": "ten",
                                            "storage": 10})
        assert r.status_code == 400 and "'memory'" in r.json()["reason"]
        other = api.new_server()["address"]
        r = api.post(path, auth=auth, json={"server": other, "name": "x", "memory": 10,
                                            "storage": 10})
        assert r.status_code == 403
        r = api.post(path, auth=auth, json={"server": addr, "name": "x", "memory": 10 ** 6,
                                            "storage": 10})
        assert r.status_code == 409 and r.json()["reason"] == "not enough memory"
    assert api.get("/me", auth=auth).json()["containers"] == before
    assert api.post("/me/containers/", json={}).status_code == 401


def test_post_alarm_key_regenerates_as_get(api, owner):
    auth, uid = owner["auth"], owner["uid"]

    def raise_with(key):
        return api.post(f"/alarms/raise/{uid}", data="hi", params={"key": key})

    r = api.post(f"/alarm_key/{uid}", auth=auth)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"message", "alarm_key"} and r.json()["message"] == "Ok"
    k1 = r.json()["alarm_key"]
    assert re.fullmatch(r"[0-9a-f-]{36}", k1)
    assert raise_with(k1).status_code == 201
    k2 = api.post(f"/alarm_key/{uid}/", auth=auth).json()["alarm_key"]
    assert k2 != k1
    assert raise_with(k1).status_code == 401 and raise_with(k2).status_code == 201
    k3 = api.get(f"/alarm_key/{uid}", auth=auth).json()["alarm_key"]
    assert k3 not in (k1, k2) and raise_with(k2).status_code == 401
    # Someone else's container, or none: 403, as GET.
    stranger, _ = api.new_customer()
    assert api.post(f"/alarm_key/{uid}", auth=stranger).status_code == 403
    assert api.post("/alarm_key/39999", auth=auth).status_code == 403
    assert raise_with(k3).status_code == 201


# ---- item 6: lengths ----------------------------------------------------------

def test_255_character_names_with_a_valid_hostname(api, owner):
    auth, addr, uid = owner["auth"], owner["addr"], owner["uid"]
    name = ("é日" * 128)[:254] + "x"  # 255 characters, 637 bytes of UTF-8
    assert len(name) == 255 and len(name.encode()) > 255
    c = api.post(f"/containers/{uid}", auth=auth, json={"name": name}).json()
    assert c["name"] == name
    assert HOSTNAME.match(c["hostname"]) and c["hostname"] == "-" * 63
    # The hostname is per character: "café 1" has 6 characters, 7 bytes.
    c = api.post(f"/containers/{uid}", auth=auth, json={"name": "café 1"}).json()
    assert c["hostname"] == "caf--1"
    mixed = "web-" + "ü" * 10 + "a" * 241
    r = api.post("/me/containers/", auth=auth, json={"server": addr, "name": mixed,
                                                     "memory": 10, "storage": 10})
    assert r.status_code == 201, r.text
    c = api.get(f"/containers/{r.json()['uid']}", auth=auth).json()
    assert c["name"] == mixed and c["hostname"] == "web-" + "-" * 10 + "a" * 49
    [listed] = [x for x in api.get("/containers/", auth=auth).json() if x["name"] == mixed]
    assert listed["hostname"] == c["hostname"]
    # 256 characters: 400 naming the field, nothing changed.
    before = api.get(f"/containers/{uid}", auth=auth).json()
    for long_name in ("a" * 256, "é" * 256):
        r = api.post(f"/containers/{uid}", auth=auth, json={"name": long_name})
        assert r.status_code == 400 and "'name'" in r.json()["reason"]
        assert "255" in r.json()["reason"]
    assert api.get(f"/containers/{uid}", auth=auth).json() == before


def test_255_character_tag_names(api, owner):
    auth = owner["auth"]
    name = "t" + "ä" * 254
    r = api.post("/tags/", auth=auth, json={"name": name})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == name
    r = api.post("/tags/", auth=auth, json={"name": name + "x"})
    assert r.status_code == 400 and "255" in r.json()["reason"]
    assert [t["name"] for t in api.get("/tags/", auth=auth).json()] == [name]


def test_quota_threshold_above_100_says_why(api, owner):
    auth, uid = owner["auth"], owner["uid"]
    assert api.post(f"/containers/{uid}", auth=auth,
                    json={"quota_threshold": 100}).json()["quota_threshold"] == 100
    for v in (101, "101", -1):
        r = api.post(f"/containers/{uid}", auth=auth, json={"quota_threshold": v})
        assert r.status_code == 400
        reason = r.json()["reason"]
        assert "'quota_threshold'" in reason and "percentage" in reason
        assert "above 100" in reason and "meaningless" in reason
    assert api.get(f"/containers/{uid}", auth=auth).json()["quota_threshold"] == 100


@pytest.mark.parametrize("field", ["jid", "jid_secret", "jid_destinations", "pushover_user",
                                   "pushover_token", "pushover_sound", "pushbullet_token",
                                   "slack_webhook"])
def test_alarm_settings_are_at_most_255_characters(api, owner, field):
    """The public platform's CharField(max_length=255): 255 characters are
    stored (characters, not bytes), 256 are a 400 naming the field (there: a
    500) and change nothing.  `note` stays free text."""
    auth, uid = owner["auth"], owner["uid"]
    value = "ü" * 255
    # The service keys and jid_destinations have an alphabet of their own
    # (test_containers.py, docs/ALARMS.md): the length rule still comes first.
    if field in ("jid", "jid_secret", "slack_webhook"):
        assert api.post(f"/containers/{uid}", auth=auth, json={field: value}).status_code == 200
    before = api.get(f"/containers/{uid}", auth=auth).json()
    r = api.post(f"/containers/{uid}", auth=auth, json={field: value + "x", "note": "n"})
    assert r.status_code == 400
    assert f"'{field}' is at most 255 characters" in r.json()["reason"]
    assert api.get(f"/containers/{uid}", auth=auth).json() == before
    long_note = "n" * 4000
    r = api.post(f"/containers/{uid}", auth=auth, json={"note": long_note})
    assert r.status_code == 200 and r.json()["note"] == long_note
