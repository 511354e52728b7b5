"""A second customer never reaches the first customer's objects, and never
sees them in its lists."""


def test_isolation(api, kratos, ssh_keys):
    a, uid = kratos["auth"], kratos["uid"]
    tag = api.post("/tags/", auth=a, json={"name": "secret-project"}).json()
    api.post(f"/containers/{uid}", auth=a, json={"tags": ["secret-project"],
                                                 "ssh_keys": ssh_keys[:1], "note": "mine"})
    before = api.get(f"/containers/{uid}", auth=a).json()

    b, _ = api.new_customer()
    b_server = api.new_server(owner=b[0])
    assert api.get("/me/", auth=b).json()["containers"] == []
    assert api.get("/containers/", auth=b).json() == []
    assert api.get("/me/containers/", auth=b).json() == []
    assert api.get("/containers/?tags=secret-project", auth=b).json() == []
    assert api.get("/tags/", auth=b).json() == []
    # Containers: 403 exactly like a missing one.
    for method, path, body in (("GET", f"/containers/{uid}", None),
                               ("POST", f"/containers/{uid}", {"note": "pwned"}),
                               ("POST", f"/containers/{uid}", {"ssh_keys": ssh_keys[1:2]}),
                               ("POST", f"/containers/{uid}", {"reboot": 1}),
                               ("POST", f"/regenerate_secret_uuid/{uid}", None)):
        r = getattr(api, method.lower())(path, auth=b, json=body)
        missing = getattr(api, method.lower())(path.replace(str(uid), "39998"), auth=b,
                                               json=body)
        assert r.status_code == 403 and r.json() == missing.json() == {"error": "Forbidden"}
    # Tags: 404 exactly like a missing one.
    for method in ("get", "post", "delete"):
        r = getattr(api, method)(f"/tags/{tag['id']}", auth=b, json={"name": "x"})
        assert r.status_code == 404 and r.json() == {"error": "Not found"}
    # B cannot create containers on A's (or any not owned) server, nor move
    # its own container's memory onto it.
    r = api.post("/containers/", auth=b, json={"server": kratos["server"]["address"],
                                               "name": "x", "memory": 1, "storage": 1})
    assert r.status_code == 403
    # B's tag named like A's does not tag A's container.
    api.post("/tags/", auth=b, json={"name": "secret-project"})
    own = api.post("/containers/", auth=b, json={"server": b_server["address"], "name": "b1",
                                                 "memory": 1, "storage": 1}).json()["uid"]
    api.post(f"/containers/{own}", auth=b, json={"tags": ["secret-project"]})
    assert [c["uid"] for c in api.get("/containers/?tags=secret-project", auth=b).json()] == [own]
    assert [c["uid"] for c in api.get("/containers/?tags=secret-project", auth=a).json()] == [uid]
    # Nothing of A's changed.
    assert api.get(f"/containers/{uid}", auth=a).json() == before
    assert api.get(f"/tags/{tag['id']}", auth=a).json()["name"] == "secret-project"
