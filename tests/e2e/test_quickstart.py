"""The customer quickstart's calls, verbatim with curl (host and port replaced)."""

import json

from conftest import curl


def test_quickstart(api, kratos, ssh_keys):
    user, pw = kratos["auth"]
    uid = kratos["uid"]
    host = f"127.0.0.1:{api.port}"

    def call(password, *args):
        *opts, path = args
        status, body = curl(*opts, f"http://{user}:{password}@{host}/api{path}")
        assert body.endswith("\n")  # curl user agent: the prompt starts on its own line
        return status, json.loads(body)

    # curl https://kratos:deimos@foobar.com/api/me/
    status, me = call(pw, "/me/")
    assert status == 200
    assert me["company"] == "God of war S.r.l."
    assert me["vat"] == "01234567890"
    assert me["containers"] == [uid]
    assert me["uuid"] == kratos["info"]["uuid"]
    assert me["servers"] == []

    # curl -X POST -d '{"company": "God of War 4 S.p.a."}' .../api/me/
    status, me = call(pw, "-X", "POST", "-d", '{"company": "God of War 4 S.p.a."}', "/me/")
    assert status == 200 and me["company"] == "God of War 4 S.p.a."
    assert call(pw, "/me/")[1]["company"] == "God of War 4 S.p.a."

    # curl -X POST -d '{"password": "deimos17"}' .../api/me/
    status, _ = call(pw, "-X", "POST", "-d", '{"password": "deimos17"}', "/me/")
    assert status == 200
    assert call(pw, "/me/")[0] == 401  # the old password stops working at once
    pw = "deimos17"
    assert call(pw, "/me/")[0] == 200

    # curl https://kratos:deimos17@foobar.com/api/containers/
    status, lst = call(pw, "/containers/")
    assert status == 200 and [c["uid"] for c in lst] == [uid]
    short = lst[0]
    for k in ("uid", "name", "hostname", "ip", "memory", "storage", "uuid", "distro",
              "distro_name", "custom_distro", "custom_distro_name", "server",
              "server_address", "tags"):
        assert k in short, k

    # curl https://kratos:deimos17@foobar.com/api/containers/30009
    status, c = call(pw, f"/containers/{uid}")
    assert status == 200
    assert c["uid"] == uid and c["name"] == "changeme" and c["hostname"] == "changeme"
    n = uid - 30000 + 2
    assert c["ip"] == f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    assert c["memory"] == 500 and c["storage"] == 1000
    assert c["distro"] is None and c["distro_name"] is None
    assert c["ssh_keys"] == [] and c["linked_to"] == [] and c["note"] == ""
    assert c["quota_threshold"] == 90 and c["jid"] == "" and c["jid_destinations"] == ""
    assert c["server"] == kratos["server"]["name"]
    assert c["server_address"] == kratos["server"]["address"]
    assert "jid_secret" not in c

    # curl https://kratos:deimos17@foobar.com/api/distros/
    status, distros = call(pw, "/distros/")
    assert status == 200
    names = {d["id"]: d["name"] for d in distros}
    saucy = kratos["distros"][1]
    assert names[saucy["id"]] == "Saucy Salamander - Ubuntu 13.10 (64 bit)"

    # curl -X POST -d '{"distro": 2}' .../api/containers/30009
    status, c = call(pw, "-X", "POST", "-d", json.dumps({"distro": saucy["id"]}),
                     f"/containers/{uid}")
    assert status == 200
    assert c["distro"] == saucy["id"] and c["distro_name"] == saucy["name"]

    # curl -X POST -d '{"ssh_keys": ["ssh-rsa ..."]}' .../api/containers/30009
    status, c = call(pw, "-X", "POST", "-d", json.dumps({"ssh_keys": [ssh_keys[1]]}),
                     f"/containers/{uid}")
    assert status == 200 and c["ssh_keys"] == [ssh_keys[1]]
    # ... and two keys in one shot
    status, c = call(pw, "-X", "POST", "-d", json.dumps({"ssh_keys": ssh_keys[:2]}),
                     f"/containers/{uid}")
    assert status == 200 and c["ssh_keys"] == ssh_keys[:2]
    assert call(pw, f"/containers/{uid}")[1]["ssh_keys"] == ssh_keys[:2]

    # curl -X POST -d '{"reboot":1}' .../api/containers/30009
    status, _ = call(pw, "-X", "POST", "-d", '{"reboot":1}', f"/containers/{uid}")
    assert status == 200
