"""POST /containers/<uid> restarts the container only when what its node
runs changed (issue 14, item 2): the same value again is no restart, a real
change and `reboot` (any value but 0/false/null) are; link/unlink never are
(issue 15: the node applies them live).  The
restart is the container's `generation`, which the admin API shows and the
nodes compare; keys are `ssh_generation` (rewritten in place)."""

import pytest


def gens(api, uid):
    c = api.admin("GET", f"/containers/{uid}", expect=200).json()
    return c["generation"], c["ssh_generation"]


@pytest.fixture
def owned(api, kratos):
    """A container of kratos on a server kratos owns (memory and storage
    can be changed there), with one distro set."""
    auth = kratos["auth"]
    server = api.new_server(owner=auth[0])
    uid = api.new_container(auth[0], server["name"])
    r = api.post(f"/containers/{uid}", auth=auth, json={"distro": kratos["distros"][0]["id"]})
    assert r.status_code == 200, r.text
    return {"auth": auth, "uid": uid, "distros": kratos["distros"]}


# Each body is posted twice: the first time it changes the container (one
# restart), the second time it holds the stored values (no restart).
CHANGES = [
    {"name": "same-again"},
    {"jid": "a@b.c", "jid_secret": "x", "jid_destinations": "d@e.f"},
    {"pushover_user": "u", "pushover_token": "t", "pushover_sound": "bike"},
    {"pushbullet_token": "pb"},
    {"slack_webhook": "https://hooks.example/x"},
    {"alarm_freq": 120},
    {"quota_threshold": 75},
    {"nofollow": True},
    {"custom_distros_storage": True},
    {"memory": 600},
    {"storage": 1200},
    {"memory": 700, "storage": 1300, "name": "both"},
]


@pytest.mark.parametrize("body", CHANGES, ids=lambda b: ",".join(b))
def test_a_change_restarts_and_the_same_value_does_not(api, owned, body):
    auth, uid = owned["auth"], owned["uid"]
    g, s = gens(api, uid)
    r = api.post(f"/containers/{uid}", auth=auth, json=body)
    assert r.status_code == 200, r.text
    assert gens(api, uid) == (g + 1, s), body
    # The same request again: the client gets the same answer, nothing restarts.
    again = api.post(f"/containers/{uid}", auth=auth, json=body)
    assert again.status_code == 200 and again.json() == r.json()
    assert gens(api, uid) == (g + 1, s), body


def test_posting_the_whole_object_back_restarts_nothing(api, owned):
    """A client that GETs the container, edits the note and POSTs every
    field back (as a form does) changes nothing the node runs."""
    auth, uid = owned["auth"], owned["uid"]
    c = api.get(f"/containers/{uid}", auth=auth).json()
    g = gens(api, uid)
    body = {k: c[k] for k in ("name", "memory", "storage", "distro", "quota_threshold",
                              "jid", "jid_destinations", "pushover_user", "pushover_token",
                              "pushover_sound", "pushbullet_token", "slack_webhook",
                              "alarm_freq", "nofollow", "custom_distros_storage",
                              "ssh_keys", "tags")}
    body["note"] = "only the note changed"
    r = api.post(f"/containers/{uid}", auth=auth, json=body)
    assert r.status_code == 200 and r.json()["note"] == "only the note changed"
    assert gens(api, uid) == g


def test_distro_same_and_changed(api, owned):
    auth, uid = owned["auth"], owned["uid"]
    d1, d2 = (d["id"] for d in owned["distros"])
    g, s = gens(api, uid)
    assert api.post(f"/containers/{uid}", auth=auth, json={"distro": d1}).status_code == 200
    assert gens(api, uid) == (g, s)
    assert api.post(f"/containers/{uid}", auth=auth, json={"distro": d2}).status_code == 200
    assert gens(api, uid) == (g + 1, s)
    assert api.post(f"/containers/{uid}", auth=auth, json={"distro": None}).status_code == 200
    assert gens(api, uid) == (g + 2, s)
    assert api.post(f"/containers/{uid}", auth=auth, json={"distro": None}).status_code == 200
    assert gens(api, uid) == (g + 2, s)


def test_alarm_freq_stored_as_60_is_the_same_as_5(api, owned):
    """alarm_freq below 60 is stored as 60: posting 5 over a stored 60 is no change."""
    auth, uid = owned["auth"], owned["uid"]
    assert api.post(f"/containers/{uid}", auth=auth,
                    json={"alarm_freq": 60}).json()["alarm_freq"] == 60
    g = gens(api, uid)
    assert api.post(f"/containers/{uid}", auth=auth,
                    json={"alarm_freq": 5}).json()["alarm_freq"] == 60
    assert gens(api, uid) == g


def test_ssh_keys_same_keys_do_not_rekey(api, owned, ssh_keys):
    auth, uid = owned["auth"], owned["uid"]
    g, s = gens(api, uid)
    keys = ssh_keys[:2]
    assert api.post(f"/containers/{uid}", auth=auth, json={"ssh_keys": keys}).status_code == 200
    assert gens(api, uid) == (g, s + 1)
    assert api.post(f"/containers/{uid}", auth=auth, json={"ssh_keys": keys}).status_code == 200
    assert gens(api, uid) == (g, s + 1)
    # The same keys in another order are another authorized_keys file.
    assert api.post(f"/containers/{uid}", auth=auth,
                    json={"ssh_keys": keys[::-1]}).status_code == 200
    assert gens(api, uid) == (g, s + 2)


def test_note_and_tags_never_restart(api, owned):
    auth, uid = owned["auth"], owned["uid"]
    assert api.post("/tags/", auth=auth, json={"name": "restarts-tag"}).status_code in (201, 409)
    g = gens(api, uid)
    for body in ({"note": "a"}, {"note": "b"}, {"tags": ["restarts-tag"]}, {"tags": []}):
        assert api.post(f"/containers/{uid}", auth=auth, json=body).status_code == 200
        assert gens(api, uid) == g, body


def test_link_and_unlink_never_restart(api, owned, kratos):
    """Issue 15: links are nft set elements the node changes live; neither
    side restarts (the public platform rebooted both)."""
    auth, uid = owned["auth"], owned["uid"]
    other = kratos["uid"]
    g, s = gens(api, uid)
    og = gens(api, other)
    r = api.post(f"/containers/{uid}", auth=auth, json={"link": other})
    assert r.status_code == 200 and r.json()["linked_to"] == [other]
    assert gens(api, uid) == (g, s)
    r = api.post(f"/containers/{uid}", auth=auth, json={"unlink": other})
    assert r.status_code == 200 and r.json()["linked_to"] == []
    assert gens(api, uid) == (g, s)
    # As a string (issue 14, item 1) it is the same request.
    r = api.post(f"/containers/{uid}", auth=auth, json={"link": str(other)})
    assert r.status_code == 200, r.text
    assert gens(api, uid) == (g, s) and gens(api, other) == og


@pytest.mark.parametrize("value,restarts", [
    (True, True), (1, True), (2, True), (-1, True), ("1", True), ("yes", True),
    ("true", True), ("", True), ([], True), ({}, True), (1.5, True),
    (0, False), (False, False), (None, False), ("0", False), ("false", False),
    ("False", False), (0.0, False),
])
def test_reboot_values(api, owned, value, restarts):
    auth, uid = owned["auth"], owned["uid"]
    g, s = gens(api, uid)
    r = api.post(f"/containers/{uid}", auth=auth, json={"reboot": value})
    assert r.status_code == 200, r.text
    assert gens(api, uid) == (g + restarts, s)


def test_reboot_with_a_same_value_change_restarts_once(api, owned):
    auth, uid = owned["auth"], owned["uid"]
    name = api.get(f"/containers/{uid}", auth=auth).json()["name"]
    g, s = gens(api, uid)
    r = api.post(f"/containers/{uid}", auth=auth, json={"name": name, "reboot": True})
    assert r.status_code == 200
    assert gens(api, uid) == (g + 1, s)


def test_a_rejected_request_with_reboot_restarts_nothing(api, owned):
    auth, uid = owned["auth"], owned["uid"]
    g = gens(api, uid)
    r = api.post(f"/containers/{uid}", auth=auth,
                 json={"reboot": True, "quota_threshold": 101})
    assert r.status_code == 400 and "quota_threshold" in r.json()["reason"]
    assert gens(api, uid) == g


def test_admin_modify_restarts_only_on_a_change(api, owned):
    uid = owned["uid"]
    c = api.admin("GET", f"/containers/{uid}", expect=200).json()
    g = c["generation"]
    api.admin("POST", f"/containers/{uid}", {"memory": c["memory"], "name": c["name"]},
              expect=200)
    assert gens(api, uid)[0] == g
    api.admin("POST", f"/containers/{uid}", {"max_alarms": 7}, expect=200)
    assert gens(api, uid)[0] == g
    api.admin("POST", f"/containers/{uid}", {"memory": c["memory"] + 1}, expect=200)
    assert gens(api, uid)[0] == g + 1
