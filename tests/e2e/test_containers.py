"""/containers/: every key of POST /containers/<uid>, the statuses API.md
lists, the restart/re-key generations nodes follow, and creation on owned
servers (the full-server quickstart)."""

import json

import pytest


def gens(api, uid):
    c = api.admin("GET", f"/containers/{uid}", expect=200).json()
    return c["generation"], c["ssh_generation"]


def test_full_object_fields(api, kratos):
    c = api.get(f"/containers/{kratos['uid']}", auth=kratos["auth"]).json()
    expected = {"uid", "name", "hostname", "ip", "memory", "storage", "uuid", "distro",
                "distro_name", "custom_distro", "custom_distro_name", "server",
                "server_address", "note", "quota_threshold", "jid", "jid_destinations",
                "pushover_user", "pushover_token", "pushover_sound", "pushbullet_token",
                "slack_webhook", "alarm_freq", "nofollow", "linked_to",
                "custom_distros_storage", "secret_uuid", "ssh_keys", "tags",
                "legion_address"}
    assert expected <= set(c)
    assert "jid_secret" not in c


def test_string_fields_and_restart_rules(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    g, s = gens(api, uid)
    # note changes nothing that runs
    r = api.post(f"/containers/{uid}", auth=auth, json={"note": "hello"})
    assert r.status_code == 200 and r.json()["note"] == "hello"
    assert gens(api, uid) == (g, s)
    # alarm settings and name restart it
    for body in ({"name": "my app_1"}, {"jid": "a@b.c", "jid_secret": "x",
                                        "jid_destinations": "d@e.f"},
                 {"pushover_user": "u", "pushover_token": "t", "pushover_sound": "bike"},
                 {"pushbullet_token": "pb"}, {"slack_webhook": "https://hooks.example/x"},
                 {"alarm_freq": 120}, {"quota_threshold": 75}, {"nofollow": True},
                 {"custom_distros_storage": True}, {"reboot": 1}):
        r = api.post(f"/containers/{uid}", auth=auth, json=body)
        assert r.status_code == 200, (body, r.text)
        g2, s2 = gens(api, uid)
        assert g2 == g + 1 and s2 == s, body
        g = g2
    c = api.get(f"/containers/{uid}", auth=auth).json()
    assert c["name"] == "my app_1" and c["hostname"] == "my-app-1"
    assert c["jid"] == "a@b.c" and c["jid_destinations"] == "d@e.f"
    assert "jid_secret" not in c
    assert c["pushover_sound"] == "bike" and c["pushbullet_token"] == "pb"
    assert c["alarm_freq"] == 120 and c["quota_threshold"] == 75
    assert c["nofollow"] is True and c["custom_distros_storage"] is True
    # alarm_freq below 60 becomes 60; a week is the most
    assert api.post(f"/containers/{uid}", auth=auth,
                    json={"alarm_freq": 5}).json()["alarm_freq"] == 60
    assert api.post(f"/containers/{uid}", auth=auth,
                    json={"alarm_freq": 604800}).json()["alarm_freq"] == 604800
    # Service keys as the services make them; "" clears one.
    keys = {"pushover_user": "uQiRzpo4DXghDmr9QzzfQu27cmVRsG",
            "pushover_token": "azGDORePK8gMaC0QOYAMyEEuzJnyUi", "pushover_sound": "cosmic",
            "pushbullet_token": "o.Zx3-abc_DEF.9", "jid_destinations": "a@b.c, d@e.f/phone"}
    c = api.post(f"/containers/{uid}", auth=auth, json=keys).json()
    assert {k: c[k] for k in keys} == keys
    c = api.post(f"/containers/{uid}", auth=auth, json={"pushbullet_token": ""}).json()
    assert c["pushbullet_token"] == ""


def test_ssh_keys_rekey_without_restart(api, kratos, ssh_keys):
    auth, uid = kratos["auth"], kratos["uid"]
    g, s = gens(api, uid)
    r = api.post(f"/containers/{uid}", auth=auth, json={"ssh_keys": [ssh_keys[0]]})
    assert r.status_code == 200 and r.json()["ssh_keys"] == [ssh_keys[0]]
    assert gens(api, uid) == (g, s + 1)
    r = api.post(f"/containers/{uid}", auth=auth, json={"ssh_keys": []})
    assert r.json()["ssh_keys"] == [] and gens(api, uid) == (g, s + 2)


@pytest.mark.parametrize("body,field", [
    ({"ssh_keys": ["ssh-rsa ........."]}, "ssh_keys[0]"),
    ({"ssh_keys": "ssh-ed25519 AAAA"}, "ssh_keys"),
    ({"ssh_keys": [1]}, "ssh_keys"),
    ({"name": ""}, "name"),
    ({"name": "x" * 256}, "name"),
    ({"name": 5}, "name"),
    ({"quota_threshold": 101}, "quota_threshold"),
    ({"quota_threshold": -1}, "quota_threshold"),
    ({"quota_threshold": "90%"}, "quota_threshold"),
    ({"alarm_freq": 1.5}, "alarm_freq"),
    ({"alarm_freq": 604801}, "alarm_freq"),
    ({"alarm_freq": 2**62}, "alarm_freq"),
    # Alarm settings go into the node's requests: no header injection.
    ({"pushbullet_token": "tok\r\nX-Injected: 1"}, "pushbullet_token"),
    ({"pushover_user": "a b"}, "pushover_user"),
    ({"pushover_token": "x" * 129}, "pushover_token"),
    ({"pushover_sound": "bike;"}, "pushover_sound"),
    ({"jid": "a@b.c\n"}, "jid"),
    ({"jid_secret": "x\x01"}, "jid_secret"),
    ({"slack_webhook": "https://hooks.slack.com/x\r\nHost: evil"}, "slack_webhook"),
    ({"jid_destinations": ",".join(["a@b.c"] * 11)}, "jid_destinations"),
    ({"jid_destinations": "a@b.c <x/>"}, "jid_destinations"),
    ({"nofollow": "yes"}, "nofollow"),
    ({"distro": "2a"}, "distro"),
    ({"distro": 999999}, "distro"),
    ({"custom_distro": 999999}, "custom_distro"),
    ({"tags": "web"}, "tags"),
    ({"link": "30001 "}, "link"),
    ({"link": 99999}, "link"),
    ({"memory": "1e2"}, "memory"),
])
def test_bad_values_are_400_and_change_nothing(api, kratos, ssh_keys, body, field):
    auth, uid = kratos["auth"], kratos["uid"]
    before = api.get(f"/containers/{uid}", auth=auth).json()
    g = gens(api, uid)
    # A valid change in the same request must not be applied either.
    r = api.post(f"/containers/{uid}", auth=auth,
                 json={"note": "should not stick", "ssh_keys": ssh_keys[:1], **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "Bad Request"
    assert field.split("[")[0] in r.json()["reason"]
    assert api.get(f"/containers/{uid}", auth=auth).json() == before
    assert gens(api, uid) == g


def test_distro(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    d = kratos["distros"][0]
    c = api.post(f"/containers/{uid}", auth=auth, json={"distro": d["id"]}).json()
    assert c["distro"] == d["id"] and c["distro_name"] == d["name"]
    c = api.post(f"/containers/{uid}", auth=auth, json={"distro": None}).json()
    assert c["distro"] is None and c["distro_name"] is None


def test_tags_replace_and_filter(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    for name in ("foobar", "zeus", "other"):
        assert api.post("/tags/", auth=auth, json={"name": name}).status_code == 201
    g = gens(api, uid)
    c = api.post(f"/containers/{uid}", auth=auth,
                 json={"tags": ["foobar", "unknown-tag"]}).json()
    assert c["tags"] == ["foobar"]  # unknown names are ignored
    assert gens(api, uid) == g  # tags change nothing that runs
    assert [x["uid"] for x in api.get("/containers/?tags=foobar,zeus", auth=auth).json()] == [uid]
    assert api.get("/containers/?tags=zeus", auth=auth).json() == []
    assert api.get("/containers/?tags=other", auth=auth).json() == []
    c = api.post(f"/containers/{uid}", auth=auth, json={"tags": ["zeus", "other"]}).json()
    assert c["tags"] == ["other", "zeus"]
    assert [x["uid"] for x in api.get("/containers/?tags=zeus", auth=auth).json()] == [uid]
    assert api.get("/me/containers/?tags=zeus", auth=auth).json()[0]["tags"] == ["other", "zeus"]


def test_links(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    other_auth, _ = api.new_customer()
    other_uid = api.new_container(other_auth[0], kratos["server"]["name"])
    g, _ = gens(api, uid)
    # Linking a container of another customer is allowed.
    r = api.post(f"/containers/{uid}", auth=auth, json={"link": other_uid})
    assert r.status_code == 200 and r.json()["linked_to"] == [other_uid]
    # Applied live by the nodes' nft table (docs/NETWORK.md): no restart,
    # unlike the public platform.
    assert gens(api, uid)[0] == g
    assert api.post(f"/containers/{uid}", auth=auth, json={"link": other_uid}).status_code == 409
    assert api.post(f"/containers/{uid}", auth=auth, json={"link": uid}).status_code == 409
    # The other side links back (two-step agreement).
    r = api.post(f"/containers/{other_uid}", auth=other_auth, json={"link": uid})
    assert r.status_code == 200 and r.json()["linked_to"] == [uid]
    r = api.post(f"/containers/{uid}", auth=auth, json={"unlink": other_uid})
    assert r.status_code == 200 and r.json()["linked_to"] == []
    assert api.post(f"/containers/{uid}", auth=auth,
                    json={"unlink": other_uid}).status_code == 409
    assert gens(api, uid)[0] == g
    # The other side's link is its own.
    assert api.get(f"/containers/{other_uid}", auth=other_auth).json()["linked_to"] == [uid]


def test_memory_storage_only_on_owned_servers(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    before = api.get(f"/containers/{uid}", auth=auth).json()
    r = api.post(f"/containers/{uid}", auth=auth, json={"memory": 600, "note": "no"})
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    assert api.get(f"/containers/{uid}", auth=auth).json() == before


def test_someone_elses_or_missing_container_is_403(api, kratos):
    auth = kratos["auth"]
    other_auth, _ = api.new_customer()
    other_uid = api.new_container(other_auth[0], kratos["server"]["name"])
    for path in (f"/containers/{other_uid}", "/containers/39999", "/containers/30000",
                 "/containers/abc", "/containers/-1"):
        r = api.get(path, auth=auth)
        assert r.status_code == 403 and r.json() == {"error": "Forbidden"}, path
        r = api.post(path, auth=auth, json={"note": "mine now"})
        assert r.status_code == 403, path
        r = api.post("/regenerate_secret_uuid/" + path.split("/")[-1], auth=auth)
        assert r.status_code == 403, path
    assert api.get(f"/containers/{other_uid}", auth=other_auth).json()["note"] == ""


def test_regenerate_secret_uuid(api, kratos):
    auth, uid = kratos["auth"], kratos["uid"]
    old = api.get(f"/containers/{uid}", auth=auth).json()["secret_uuid"]
    r = api.post(f"/regenerate_secret_uuid/{uid}", auth=auth)
    assert r.status_code == 200 and r.json() == {"message": "Ok"}
    new = api.get(f"/containers/{uid}", auth=auth).json()["secret_uuid"]
    assert new != old and len(new) == 36
    assert api.get(f"/regenerate_secret_uuid/{uid}", auth=auth).status_code == 405


def test_customers_cannot_delete_containers(api, kratos):
    r = api.delete(f"/containers/{kratos['uid']}", auth=kratos["auth"])
    assert r.status_code == 405
    assert api.get(f"/containers/{kratos['uid']}", auth=kratos["auth"]).status_code == 200


class TestOwnedServer:
    """Quickstart for customers owning a whole server."""

    def test_create_and_oversell(self, api):
        auth, _ = api.new_customer()
        server = api.new_server(owner=auth[0], memory=3000, storage=30000)
        me = api.get("/me", auth=auth).json()
        assert me["servers"] == [server["address"]]
        # curl -X POST -d '{"server":"1.2.3.4", "name":"hydra", "memory":1000,
        #   "storage":20000}' https://kratos:deimos@api.uwsgi.it/api/containers
        r = api.post("/containers", auth=auth, data=json.dumps(
            {"server": server["address"], "name": "hydra", "memory": 1000, "storage": 20000}))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["message"] == "Created" and body["uid"] > 30000
        hydra = body["uid"]
        c = api.get(f"/containers/{hydra}", auth=auth).json()
        assert c["name"] == "hydra" and c["memory"] == 1000 and c["storage"] == 20000
        assert hydra in api.get("/me", auth=auth).json()["containers"]
        # 2000 MB memory left, 10000 MB storage left.
        r = api.post("/containers", auth=auth, json={"server": server["address"], "name": "x",
                                                     "memory": 2001, "storage": 1})
        assert r.status_code == 409
        assert r.json() == {"error": "Conflict", "reason": "not enough memory"}
        r = api.post("/containers", auth=auth, json={"server": server["address"], "name": "x",
                                                     "memory": 1, "storage": 10001})
        assert r.status_code == 409 and r.json()["reason"] == "not enough storage"
        r = api.post("/containers", auth=auth, json={"server": server["address"], "name": "x",
                                                     "memory": 2000, "storage": 10000})
        assert r.status_code == 201
        # The server is now full: resizing up is refused, down is fine.
        r = api.post(f"/containers/{hydra}", auth=auth, json={"memory": 1001})
        assert r.status_code == 409 and r.json()["reason"] == "not enough memory"
        r = api.post(f"/containers/{hydra}", auth=auth, json={"storage": 20001})
        assert r.status_code == 409 and r.json()["reason"] == "not enough storage"
        g = gens(api, hydra)[0]
        r = api.post(f"/containers/{hydra}", auth=auth, json={"memory": 500})
        assert r.status_code == 200 and r.json()["memory"] == 500
        assert gens(api, hydra)[0] == g + 1
        assert api.get(f"/containers/{hydra}", auth=auth).json()["memory"] == 500

    def test_not_owned_server_is_403(self, api, kratos):
        auth = kratos["auth"]
        for server in (kratos["server"]["address"], "203.0.113.77"):
            r = api.post("/containers/", auth=auth, json={"server": server, "name": "hydra",
                                                          "memory": 10, "storage": 10})
            assert r.status_code == 403, server
        assert api.get("/me", auth=auth).json()["containers"] == [kratos["uid"]]

    @pytest.mark.parametrize("body", [
        {"name": "hydra", "memory": 10, "storage": 10},
        {"server": "S", "memory": 10, "storage": 10},
        {"server": "S", "name": "hydra", "storage": 10},
        {"server": "S", "name": "hydra", "memory": 10},
        {"server": "S", "name": "hydra", "memory": "10MB", "storage": 10},
        {"server": "S", "name": "hydra", "memory": 0, "storage": 10},
        {"server": "S", "name": "hydra", "memory": 10, "storage": -5},
        {"server": "S", "name": "", "memory": 10, "storage": 10},
        {"server": 7, "name": "hydra", "memory": 10, "storage": 10},
    ])
    def test_bad_create_is_400(self, api, body):
        auth, _ = api.new_customer()
        server = api.new_server(owner=auth[0])
        if body.get("server") == "S":
            body = {**body, "server": server["address"]}
        r = api.post("/containers/", auth=auth, json=body)
        assert r.status_code == 400, r.text
        assert r.json()["reason"]
        assert api.get("/me", auth=auth).json()["containers"] == []
