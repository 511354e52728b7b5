"""The `imperium` CLI (the sanitizer build by default) against a real
imperium-api: every admin command really changes what the admin and customer
APIs show, errors give the documented exit codes, and `scripts/run.sh` brings
up the seeded demo and stops cleanly on Ctrl-C."""

import itertools
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

import pgutil
from conftest import BIN, ROOT, free_port, start_api, stop_api, unique
from helpers import Netns, in_netns
from nodeutil import init_of

CLI = os.path.join(BIN, "imperium")
SANITIZER_MARKERS = ("LeakSanitizer", "AddressSanitizer", "runtime error:")

_addr = itertools.count(1)


def new_address():
    """A server address no other test of this module uses (TEST-NET-3)."""
    n = next(_addr)
    return f"203.0.{113 + n // 250}.{n % 250 + 1}"


def cli_env(api, **extra):
    env = dict(os.environ)
    for k in ("IMPERIUM_ADMIN_TOKEN", "IMPERIUM_CONFIG", "IMPERIUM_USER", "IMPERIUM_PASSWORD"):
        env.pop(k, None)
    env["IMPERIUM_API"] = api.base
    env["IMPERIUM_ADMIN_TOKEN_FILE"] = api.token_file
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run(api, *args, env=None, input=None):
    """Run the CLI; every run must be free of sanitizer reports (leaks too)."""
    p = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60,
                       env=env or cli_env(api), input=input)
    for marker in SANITIZER_MARKERS:
        assert marker not in p.stderr, f"{marker} in imperium {args}:\n{p.stderr}"
    return p


def ok(api, *args, **kw):
    p = run(api, *args, **kw)
    assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return p.stdout


def fails(api, code, *args, **kw):
    p = run(api, *args, **kw)
    assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
    assert p.stderr.startswith("imperium: "), p.stderr
    return p.stderr


def show(api, *args):
    """`... --json` parsed."""
    return json.loads(ok(api, *args, "--json"))


def add_customer(api, password="secret", *opts):
    name = unique("cli")
    ok(api, "admin", "customer", "add", name, "--password", password, *opts)
    return name, password


def add_server(api, *opts, memory="10000", storage="100000"):
    name, addr = unique("srv"), new_address()
    ok(api, "admin", "server", "add", name, "--address", addr, "--memory", memory,
       "--storage", storage, *opts)
    return name, addr


# ---- help ----

def test_help_lists_every_command(api):
    out = ok(api, "--help")
    for line in ("admin customer add USERNAME --password P", "admin customer modify",
                 "admin server add NAME --address IP --memory MB --storage MB",
                 "[--hosts-line LINE]...", "admin distro modify ID", "admin container add",
                 "admin container list [--customer USERNAME]", "admin domain add NAME",
                 "admin legion add NAME --address IP", "[--node SERVER]...",
                 "admin news add CONTENT [--public]", "call METHOD PATH [JSON_BODY]",
                 "IMPERIUM_API", "IMPERIUM_ADMIN_TOKEN_FILE", "--json"):
        assert line in out, line
    admin = ok(api, "admin", "--help")
    for obj, verbs in {"customer": "add list show modify delete",
                       "server": "add list show modify delete secret",
                       "distro": "add list modify delete",
                       "container": "add list show modify delete",
                       "domain": "add list delete", "legion": "add list modify delete",
                       "news": "add list delete"}.items():
        for verb in verbs.split():
            assert f"imperium admin {obj} {verb}" in admin, (obj, verb)
    one = ok(api, "admin", "server", "modify", "--help")
    assert one.startswith("usage: imperium admin server modify NAME") and "--owner" in one
    assert "call METHOD PATH" in ok(api, "call", "--help")
    assert ok(api, "help") == out


# ---- customers ----

def test_customer_add_then_login(api):
    name, pw = add_customer(api, "s3cret", "--company", "God of war S.r.l.", "--vat",
                            "01234567890", "--email", "kratos@example.org")
    me = api.get("/me/", auth=(name, pw))
    assert me.status_code == 200
    me = me.json()
    assert me["company"] == "God of war S.r.l." and me["vat"] == "01234567890"
    assert me["email"] == "kratos@example.org" and me["containers"] == []
    assert api.get("/me/", auth=(name, "wrong")).status_code == 401
    info = api.admin("GET", f"/customers/{name}", expect=200).json()
    assert info["uuid"] == me["uuid"]


def test_customer_list_and_show(api):
    name, _ = add_customer(api, "pw", "--company", "Olympus S.p.a.")
    table = ok(api, "admin", "customer", "list").splitlines()
    assert table[0].split()[:3] == ["ID", "USERNAME", "COMPANY"]
    row = [line for line in table if f" {name} " in line]
    assert len(row) == 1 and "Olympus S.p.a." in row[0]
    lst = show(api, "admin", "customer", "list")
    assert name in [c["username"] for c in lst]
    out = ok(api, "admin", "customer", "show", name)
    assert f"username:" in out and "company:" in out
    fields = dict(line.split(":", 1) for line in out.splitlines() if not line.startswith(" "))
    assert fields["username"].strip() == name
    assert fields["company"].strip() == "Olympus S.p.a."
    assert show(api, "admin", "customer", "show", name)["company"] == "Olympus S.p.a."


def test_customer_modify(api):
    name, pw = add_customer(api, "old-pw", "--company", "Before")
    out = ok(api, "admin", "customer", "modify", name, "--password", "new-pw", "--company",
             "After", "--vat", "IT999", "--email", "a@b.c")
    assert "After" in out
    assert api.get("/me/", auth=(name, "old-pw")).status_code == 401
    me = api.get("/me/", auth=(name, "new-pw")).json()
    assert (me["company"], me["vat"], me["email"]) == ("After", "IT999", "a@b.c")


def test_customer_delete(api):
    name, pw = add_customer(api)
    assert name in ok(api, "admin", "customer", "delete", name)
    api.admin("GET", f"/customers/{name}", expect=404)
    assert api.get("/me/", auth=(name, pw)).status_code == 401
    err = fails(api, 1, "admin", "customer", "show", name)
    assert "404" in err


def test_customer_duplicate_is_409(api):
    name, _ = add_customer(api)
    err = fails(api, 1, "admin", "customer", "add", name, "--password", "x")
    assert err.strip() == f"imperium: 409 Conflict: customer '{name}' already exists"


def test_customer_delete_with_containers_is_refused(api):
    name, _ = add_customer(api)
    server, _ = add_server(api)
    uid = ok(api, "admin", "container", "add", "--customer", name, "--server", server,
             "--name", "c", "--memory", "10", "--storage", "10").strip()
    err = fails(api, 1, "admin", "customer", "delete", name)
    assert "409" in err and "container" in err
    ok(api, "admin", "container", "delete", uid)
    ok(api, "admin", "customer", "delete", name)


# ---- servers ----

def test_server_add_with_every_option(api):
    owner, pw = add_customer(api)
    name, addr = add_server(api, "--disk", "/dev/sdb", "--owner", owner, "--weight", "7",
                            "--datacenter", "milan-1", "--hosts-line", "10.0.0.1 gw",
                            "--hosts-line", "10.0.0.2 api", "--resolv-line",
                            "nameserver 10.0.0.1", "--note", "rack 4")
    s = api.admin("GET", f"/servers/{name}", expect=200).json()
    assert (s["address"], s["memory"], s["storage"]) == (addr, 10000, 100000)
    assert (s["disk"], s["owner"], s["weight"], s["datacenter"], s["note"]) == \
        ("/dev/sdb", owner, 7, "milan-1", "rack 4")
    assert s["etc_hosts"] == "10.0.0.1 gw\n10.0.0.2 api\n"
    assert s["etc_resolv_conf"] == "nameserver 10.0.0.1\n"
    # The owner sees its server.
    assert api.get("/me/", auth=(owner, pw)).json()["servers"] == [addr]


def test_server_list_show_modify_delete(api):
    owner, pw = add_customer(api)
    name, addr = add_server(api, "--owner", owner, "--hosts-line", "1.2.3.4 x")
    table = ok(api, "admin", "server", "list")
    row = [line for line in table.splitlines() if line.split()[1:3] == [name, addr]]
    assert len(row) == 1 and owner in row[0]
    assert name in [s["name"] for s in show(api, "admin", "server", "list")]
    out = ok(api, "admin", "server", "show", addr)  # by address too
    assert f"name:" in out and name in out and "1.2.3.4 x" in out

    new_name = unique("srv")
    ok(api, "admin", "server", "modify", name, "--name", new_name, "--memory", "20000",
       "--owner", "", "--hosts-line", "", "--resolv-line", "nameserver 9.9.9.9")
    api.admin("GET", f"/servers/{name}", expect=404)
    s = api.admin("GET", f"/servers/{new_name}", expect=200).json()
    assert s["memory"] == 20000 and s["owner"] is None
    assert s["etc_hosts"] == "" and s["etc_resolv_conf"] == "nameserver 9.9.9.9\n"
    assert api.get("/me/", auth=(owner, pw)).json()["servers"] == []

    ok(api, "admin", "server", "modify", new_name, "--owner", owner)
    assert api.get("/me/", auth=(owner, pw)).json()["servers"] == [addr]

    assert new_name in ok(api, "admin", "server", "delete", new_name)
    api.admin("GET", f"/servers/{new_name}", expect=404)


def test_server_node_secret(api):
    """server add shows the node's secret once; server secret replaces it."""
    name, addr = unique("srv"), new_address()
    created = show(api, "admin", "server", "add", name, "--address", addr, "--memory", "1",
                   "--storage", "1")
    assert created["name"] == name and created.get("node_secret")
    assert "node_secret" not in api.admin("GET", f"/servers/{name}", expect=200).json()
    out = ok(api, "admin", "server", "secret", name)
    assert out.strip() and out.strip() != created["node_secret"]
    assert "404" in fails(api, 1, "admin", "server", "secret", unique("nosuch"))


def test_server_errors(api):
    name, addr = add_server(api)
    err = fails(api, 1, "admin", "server", "add", unique("srv"), "--address", addr,
                "--memory", "1", "--storage", "1")
    assert "409" in err
    err = fails(api, 1, "admin", "server", "modify", name, "--owner", "nobody-at-all")
    assert "400" in err and "nobody-at-all" in err
    err = fails(api, 1, "admin", "server", "add", unique("srv"), "--address", "not-an-ip",
                "--memory", "1", "--storage", "1")
    assert "400" in err and "address" in err
    err = fails(api, 2, "admin", "server", "add", unique("srv"), "--address", "1.1.1.1",
                "--memory", "lots", "--storage", "1")
    assert "--memory" in err and "integer" in err and "lots" in err


# ---- distros ----

def test_distros(api):
    name = unique("Debian ")
    out = ok(api, "admin", "distro", "add", name, "--path", "/srv/rootfs/debian")
    fields = dict(line.split(":", 1) for line in out.splitlines())
    did = int(fields["id"])
    assert {"id": did, "name": name} in api.get("/distros/", auth=add_customer(api)).json()
    table = ok(api, "admin", "distro", "list")
    assert any(line.split()[0] == str(did) and "/srv/rootfs/debian" in line
               for line in table.splitlines()[1:])
    new = unique("Trixie ")
    ok(api, "admin", "distro", "modify", str(did), "--name", new, "--path", "/srv/trixie")
    d = [d for d in show(api, "admin", "distro", "list") if d["id"] == did]
    assert d == [{"id": did, "name": new, "path": "/srv/trixie"}]
    assert str(did) in ok(api, "admin", "distro", "delete", str(did))
    assert did not in [d["id"] for d in show(api, "admin", "distro", "list")]
    assert "404" in fails(api, 1, "admin", "distro", "delete", str(did))
    err = fails(api, 2, "admin", "distro", "delete", "one")
    assert "ID" in err and "integer" in err
    assert "400" in fails(api, 1, "admin", "distro", "add", unique("x"), "--path", "relative")


# ---- containers ----

def test_container_add_prints_uid(api):
    name, pw = add_customer(api)
    server, addr = add_server(api)
    out = ok(api, "admin", "container", "add", "--customer", name, "--server", server,
             "--name", "changeme", "--memory", "500", "--storage", "1000")
    uid = int(out.strip())
    assert uid > 30000 and out == f"{uid}\n"
    assert api.get("/me/", auth=(name, pw)).json()["containers"] == [uid]
    c = api.get(f"/containers/{uid}", auth=(name, pw)).json()
    assert (c["name"], c["memory"], c["storage"]) == ("changeme", 500, 1000)
    assert (c["server"], c["server_address"]) == (server, addr)
    # --server also takes the address.
    uid2 = int(ok(api, "admin", "container", "add", "--customer", name, "--server", addr,
                  "--name", "second", "--memory", "100", "--storage", "100"))
    assert api.get("/me/", auth=(name, pw)).json()["containers"] == [uid, uid2]


def test_container_overselling_is_refused(api):
    name, _ = add_customer(api)
    server, _ = add_server(api, memory="1000", storage="100000")
    base = ("admin", "container", "add", "--customer", name, "--server", server,
            "--storage", "10")
    ok(api, *base, "--name", "a", "--memory", "600")
    err = fails(api, 1, *base, "--name", "b", "--memory", "600")
    assert "409" in err and "not enough memory" in err
    err = fails(api, 1, "admin", "container", "add", "--customer", name, "--server", server,
                "--name", "c", "--memory", "10", "--storage", "999999")
    assert "not enough storage" in err
    assert len(show(api, "admin", "container", "list", "--server", server)) == 1


def test_container_list_show_modify_delete(api):
    a, apw = add_customer(api)
    b, _ = add_customer(api)
    s1, _ = add_server(api)
    s2, s2addr = add_server(api)
    add = ("admin", "container", "add", "--memory", "100", "--storage", "100")
    u1 = int(ok(api, *add, "--customer", a, "--server", s1, "--name", "one"))
    u2 = int(ok(api, *add, "--customer", a, "--server", s2, "--name", "two"))
    u3 = int(ok(api, *add, "--customer", b, "--server", s2, "--name", "three"))

    def uids(*filters):
        return [c["uid"] for c in show(api, "admin", "container", "list", *filters)]

    assert uids("--customer", a) == [u1, u2]
    assert uids("--server", s2) == [u2, u3]
    assert uids("--server", s2addr, "--customer", b) == [u3]
    assert {u1, u2, u3} <= set(uids())
    table = ok(api, "admin", "container", "list", "--customer", a).splitlines()
    assert table[0].split()[:4] == ["UID", "NAME", "CUSTOMER", "SERVER"]
    assert [line.split()[:4] for line in table[1:]] == [[str(u1), "one", a, s1],
                                                        [str(u2), "two", a, s2]]

    out = ok(api, "admin", "container", "show", str(u1))
    assert "max_alarms:" in out and f"customer:" in out and a in out

    ok(api, "admin", "container", "modify", str(u1), "--max-alarms", "5", "--memory", "300",
       "--storage", "400", "--name", "renamed")
    c = show(api, "admin", "container", "show", str(u1))
    assert (c["max_alarms"], c["memory"], c["storage"], c["name"]) == (5, 300, 400, "renamed")
    mine = api.get(f"/containers/{u1}", auth=(a, apw)).json()
    assert (mine["memory"], mine["name"]) == (300, "renamed")
    err = fails(api, 1, "admin", "container", "modify", str(u1), "--memory", "1000000")
    assert "not enough memory" in err
    assert "400" in fails(api, 1, "admin", "container", "modify", str(u1), "--max-alarms", "0")

    assert str(u1) in ok(api, "admin", "container", "delete", str(u1))
    assert api.get("/me/", auth=(a, apw)).json()["containers"] == [u2]
    assert "404" in fails(api, 1, "admin", "container", "show", str(u1))
    assert "UID" in fails(api, 2, "admin", "container", "show", "abc")


def test_container_add_unknown_customer_or_server(api):
    server, _ = add_server(api)
    err = fails(api, 1, "admin", "container", "add", "--customer", "nobody-here", "--server",
                server, "--name", "x", "--memory", "1", "--storage", "1")
    assert "400" in err and "nobody-here" in err
    name, _ = add_customer(api)
    err = fails(api, 1, "admin", "container", "add", "--customer", name, "--server",
                "no-such-server", "--name", "x", "--memory", "1", "--storage", "1")
    assert "400" in err and "no-such-server" in err


# ---- domains ----

def test_domains(api):
    name, _ = add_customer(api)
    other, _ = add_customer(api)
    domain = unique("d") + ".example.org"
    out = ok(api, "admin", "domain", "add", domain, "--customer", name)
    assert domain in out
    table = ok(api, "admin", "domain", "list").splitlines()
    row = [line.split() for line in table[1:] if line.split()[1] == domain]
    assert len(row) == 1 and row[0][2] == name
    assert {"name": domain, "customer": name} in [
        {"name": d["name"], "customer": d["customer"]}
        for d in show(api, "admin", "domain", "list")]
    err = fails(api, 1, "admin", "domain", "add", domain, "--customer", other)
    assert "409" in err
    assert "400" in fails(api, 1, "admin", "domain", "add", "not a domain!", "--customer", name)
    assert domain in ok(api, "admin", "domain", "delete", domain)
    assert domain not in [d["name"] for d in show(api, "admin", "domain", "list")]
    assert "404" in fails(api, 1, "admin", "domain", "delete", domain)


# ---- legions ----

def test_legions(api):
    cust, pw = add_customer(api)
    s1, _ = add_server(api)
    s2, _ = add_server(api)
    uid = int(ok(api, "admin", "container", "add", "--customer", cust, "--server", s1,
                 "--name", "web", "--memory", "10", "--storage", "10"))
    name = unique("legion")
    out = ok(api, "admin", "legion", "add", name, "--address", "192.0.2.10", "--key", "k3y",
             "--quorum", "2", "--node", s1, "--node", s2, "--note", "two nodes")
    assert name in out
    [lg] = [lg for lg in show(api, "admin", "legion", "list") if lg["name"] == name]
    assert (lg["address"], lg["key"], lg["quorum"], lg["note"]) == \
        ("192.0.2.10", "k3y", 2, "two nodes")
    assert sorted(lg["nodes"]) == sorted([s1, s2])
    assert any(name in line and "192.0.2.10" in line
               for line in ok(api, "admin", "legion", "list").splitlines())
    # Without --key, a random one: the members seal what they send each other with it.
    keyless = unique("legion")
    ok(api, "admin", "legion", "add", keyless, "--address", "192.0.2.20")
    keys = [lg["key"] for lg in show(api, "admin", "legion", "list")
            if lg["name"] == keyless]
    assert len(keys) == 1 and re.fullmatch(r"[0-9a-f]{64}", keys[0]), keys
    ok(api, "admin", "legion", "delete", keyless)
    # The containers of its nodes see the legion's address.
    c = api.get(f"/containers/{uid}", auth=(cust, pw)).json()
    assert c["legion_address"] == ["192.0.2.10"]

    def generation():
        return show(api, "admin", "container", "show", str(uid))["generation"]

    # A container must restart when its server's legion address changes or goes.
    gen = generation()
    ok(api, "admin", "legion", "modify", name, "--note", "just a note")
    assert generation() == gen
    ok(api, "admin", "legion", "modify", name, "--address", "192.0.2.12")
    assert generation() > gen
    assert api.get(f"/containers/{uid}", auth=(cust, pw)).json()["legion_address"] == \
        ["192.0.2.12"]
    gen = generation()
    new = unique("legion")
    ok(api, "admin", "legion", "modify", name, "--name", new, "--quorum", "1", "--node", s2,
       "--address", "192.0.2.11")
    assert generation() > gen  # its server left the legion
    [lg] = [lg for lg in show(api, "admin", "legion", "list") if lg["name"] == new]
    assert (lg["quorum"], lg["nodes"], lg["address"]) == (1, [s2], "192.0.2.11")
    assert api.get(f"/containers/{uid}", auth=(cust, pw)).json()["legion_address"] == []
    ok(api, "admin", "legion", "modify", new, "--node", "")
    [lg] = [lg for lg in show(api, "admin", "legion", "list") if lg["name"] == new]
    assert lg["nodes"] == []
    assert "400" in fails(api, 1, "admin", "legion", "modify", new, "--node", "no-such-srv")
    other = unique("legion")
    ok(api, "admin", "legion", "add", other, "--address", "192.0.2.20", "--node", s1)
    gen = generation()
    assert new in ok(api, "admin", "legion", "delete", new)
    assert other in ok(api, "admin", "legion", "delete", other)
    assert generation() > gen
    assert api.get(f"/containers/{uid}", auth=(cust, pw)).json()["legion_address"] == []
    assert new not in [lg["name"] for lg in show(api, "admin", "legion", "list")]
    assert "404" in fails(api, 1, "admin", "legion", "delete", new)


# ---- news ----

def test_news(api):
    public, private = unique("public news "), unique("private news ")
    pid = int(ok(api, "admin", "news", "add", public, "--public"))
    nid = int(ok(api, "admin", "news", "add", private))
    lst = show(api, "admin", "news", "list")
    by_id = {n["id"]: n for n in lst}
    assert by_id[pid]["content"] == public and by_id[pid]["public"] is True
    assert by_id[nid]["content"] == private and by_id[nid]["public"] is False
    table = ok(api, "admin", "news", "list")
    assert public in table and private in table
    anon = [n["content"] for n in api.get("/news/").json()]
    assert public in anon and private not in anon
    cust = add_customer(api)
    assert private in [n["content"] for n in api.get("/news/", auth=cust).json()]
    assert str(pid) in ok(api, "admin", "news", "delete", str(pid))
    assert pid not in [n["id"] for n in show(api, "admin", "news", "list")]
    assert "404" in fails(api, 1, "admin", "news", "delete", str(pid))
    # Content starting with a dash goes after `--`.
    did = int(ok(api, "admin", "news", "add", "--", "-- maintenance tonight --"))
    [n] = [n for n in show(api, "admin", "news", "list") if n["id"] == did]
    assert n["content"] == "-- maintenance tonight --"


# ---- imperium call (the customer API) ----

def test_call(api):
    name, pw = add_customer(api, "pw1", "--company", "Acme")
    me = json.loads(ok(api, "call", "GET", "/me/", "--user", name, "--password", pw))
    assert me["company"] == "Acme"
    env = cli_env(api, IMPERIUM_USER=name, IMPERIUM_PASSWORD=pw)
    out = ok(api, "call", "POST", "/me/", '{"company": "Acme 2"}', env=env)
    assert json.loads(out)["company"] == "Acme 2"
    assert api.get("/me/", auth=(name, pw)).json()["company"] == "Acme 2"
    raw = ok(api, "--json", "call", "get", "me", env=env)  # method case, no leading slash
    assert json.loads(raw)["company"] == "Acme 2"
    out = ok(api, "call", "POST", "/me/", "-", env=env, input='{"vat": "IT1"}')
    assert json.loads(out)["vat"] == "IT1"
    err = fails(api, 1, "call", "GET", "/me/", "--user", name, "--password", "wrong")
    assert "401" in err
    err = fails(api, 1, "call", "GET", "/containers/99999", env=env)
    assert "403" in err
    err = fails(api, 1, "call", "POST", "/me/", '{"company": 5}', env=env)
    assert "400" in err and "company" in err
    err = fails(api, 2, "call", "POST", "/me/", "{not json", env=env)
    assert "JSON" in err
    assert "PATH" in fails(api, 2, "call", "GET", env=env)
    assert "--password" in fails(api, 2, "call", "GET", "/me/", "--user", name)


# ---- errors, exit codes, settings ----

def test_usage_errors_exit_2(api):
    err = fails(api, 2, "admin", "customer", "add", unique("c"))
    assert "missing required option --password" in err
    err = fails(api, 2, "admin", "customer", "add", "--password", "x")
    assert "USERNAME" in err
    err = fails(api, 2, "admin", "server", "add", "s", "--address", "1.2.3.4", "--memory", "1")
    assert "--storage" in err
    err = fails(api, 2, "admin", "container", "add", "--customer", "a", "--server", "b",
                "--name", "c", "--memory", "1")
    assert "--storage" in err
    assert "frobnicate" in fails(api, 2, "frobnicate")
    assert "'widget'" in fails(api, 2, "admin", "widget", "list")
    assert "admin customer explode" in fails(api, 2, "admin", "customer", "explode")
    assert "--colour" in fails(api, 2, "admin", "customer", "list", "--colour", "red")
    assert "--bogus" in fails(api, 2, "--bogus", "admin", "customer", "list")
    err = fails(api, 2, "admin", "container", "modify", "30001", "--memory", "1.5")
    assert "--memory" in err and "integer" in err
    err = fails(api, 2, "admin", "container", "modify", "30001")
    assert "nothing to change" in err
    assert "'extra'" in fails(api, 2, "admin", "customer", "show", "a", "extra")
    assert "--password needs a value" in fails(api, 2, "admin", "customer", "add", "x",
                                                "--password")
    assert "--public takes no value" in fails(api, 2, "admin", "news", "add", "x",
                                              "--public=yes")
    assert fails(api, 2)  # no command at all
    fails(api, 2, "admin")
    fails(api, 2, "--api", "ftp://example.org", "admin", "customer", "list")


def test_wrong_token_is_401(api, tmp_path):
    bad = tmp_path / "bad.token"
    bad.write_text("not-the-right-token-at-all\n")
    env = cli_env(api, IMPERIUM_ADMIN_TOKEN_FILE=str(bad))
    err = fails(api, 1, "admin", "customer", "list", env=env)
    assert err.startswith("imperium: 401 Unauthorized")
    # --token-file and IMPERIUM_ADMIN_TOKEN work as well.
    assert "401" in fails(api, 1, "--token-file", str(bad), "admin", "news", "list")
    env = cli_env(api, IMPERIUM_ADMIN_TOKEN="wrong-token-0123456789",
                  IMPERIUM_ADMIN_TOKEN_FILE=None)
    assert "401" in fails(api, 1, "admin", "news", "list", env=env)
    env = cli_env(api, IMPERIUM_ADMIN_TOKEN=api.token, IMPERIUM_ADMIN_TOKEN_FILE=None)
    ok(api, "admin", "news", "list", env=env)
    ok(api, "admin", "news", "list", "--token-file", api.token_file, env=env)
    missing = str(tmp_path / "missing.token")
    err = fails(api, 1, "admin", "news", "list", "--token-file", missing)
    assert missing in err


def test_api_not_reachable(api):
    url = f"http://127.0.0.1:{free_port()}"
    env = cli_env(api, IMPERIUM_API=url)
    err = fails(api, 1, "admin", "customer", "list", env=env)
    assert "cannot reach the API" in err and url in err
    err = fails(api, 1, "--api", url, "call", "GET", "/me/", "--user", "a", "--password", "b")
    assert url in err


def test_timeout(api):
    """An API that accepts but never answers: --timeout gives up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = "http://127.0.0.1:%d" % s.getsockname()[1]
        start = time.time()
        err = fails(api, 1, "--timeout", "1", "admin", "news", "list",
                    env=cli_env(api, IMPERIUM_API=url))
        assert time.time() - start < 10
        assert "no answer" in err and url in err
    assert "--timeout" in fails(api, 2, "--timeout", "soon", "admin", "news", "list")


def test_settings_precedence(api, tmp_path):
    """--api beats IMPERIUM_API, which beats the config file."""
    dead = f"http://127.0.0.1:{free_port()}"
    conf = tmp_path / "imperium.conf"
    conf.write_text(f"# test\napi = {dead}\ntoken_file = {api.token_file}\n")
    env = cli_env(api, IMPERIUM_API=None, IMPERIUM_ADMIN_TOKEN_FILE=None,
                  IMPERIUM_CONFIG=str(conf))
    assert dead in fails(api, 1, "admin", "news", "list", env=env)
    ok(api, "admin", "news", "list", "--api", api.base + "/", env=env)
    env["IMPERIUM_API"] = api.base
    ok(api, "admin", "news", "list", env=env)
    conf.write_text("colour = red\n")
    assert "colour" in fails(api, 2, "admin", "news", "list", env=env)


def test_json_output_is_the_api_answer(api):
    name, _ = add_customer(api, "pw", "--company", "Json Inc")
    info = show(api, "admin", "customer", "show", name)
    assert info == api.admin("GET", f"/customers/{name}", expect=200).json()
    created = show(api, "admin", "customer", "add", unique("j"), "--password", "p")
    assert created["company"] == "" and "uuid" in created
    assert show(api, "admin", "customer", "delete", created["username"]) == {"message": "Ok"}


def test_no_leaks_under_asan(api):
    """The sanitizer build reports leaks at exit: none on any path."""
    env = cli_env(api)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=23"
    name, _ = add_customer(api)
    server, _ = add_server(api)
    runs = [
        ("admin", "customer", "list"), ("admin", "customer", "show", name),
        ("admin", "server", "list"), ("admin", "container", "list", "--customer", name),
        ("admin", "container", "add", "--customer", name, "--server", server, "--name", "l",
         "--memory", "1", "--storage", "1"),
        ("admin", "customer", "add", name, "--password", "dup"),   # 409
        ("admin", "customer", "add", name),                         # usage error
        ("admin", "server", "modify", server, "--hosts-line", "a", "--hosts-line", "b"),
        ("admin", "news", "list", "--json"), ("--help",), ("admin", "--help"),
        ("call", "GET", "/me/", "--user", name, "--password", "secret"),
        ("call", "GET", "/me/", "{bad"),
        ("--api", f"http://127.0.0.1:{free_port()}", "admin", "news", "list"),
    ]
    for args in runs:
        p = run(api, *args, env=env)
        assert p.returncode != 23, (args, p.stderr)
        assert "LeakSanitizer" not in p.stderr, (args, p.stderr)


# ---- scripts/run.sh (make run) ----

def _read_until(proc, marker, timeout):
    out, deadline = "", time.time() + timeout
    while marker not in out:
        left = deadline - time.time()
        if left <= 0 or proc.poll() is not None:
            break
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
            if not chunk:
                break
            out += chunk
    return out


def _pids_running(path):
    """Processes whose command line mentions `path`."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if path in cmd and state != "Z":
            pids.append(int(d))
    return pids


def _until(fn, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out: {what}")


def _give_file(path, text, uid):
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, uid, uid)


HELLO = ('def application(e, sr):\n    sr("200 OK", [("Content-Type", "text/plain")])\n'
         '    return [b"Hello from %s"]\n')


def _run_sh_guide_network(ns, call, run_dir, key):
    """The guide's network sections, as printed: kratos links 30001 and
    30002 (isolated before, reachable once both linked, cut by an unlink),
    zeus creates hydra on 127.0.0.2, maps 127.0.0.2:9000 to its port 8000,
    and `curl http://127.0.0.2:9000/` answers."""
    k, z = ("kratos", "deimos"), ("zeus", "olympus")
    node, zeus = os.path.join(run_dir, "node"), os.path.join(run_dir, "node-zeus")
    for uid in (30001, 30002):
        for body in ({"distro": 1}, {"ssh_keys": [key]}):
            r = call("post", f"/containers/{uid}", auth=k, json=body)
            assert r.status_code == 200, r.text
    ip2 = call("get", "/containers/30002", auth=k).json()["ip"]
    home2 = os.path.join(node, "containers", "30002")
    _until(lambda: os.path.isdir(os.path.join(home2, "vassals")), 30, "30002's home")
    _give_file(os.path.join(home2, "myapp.py"), HELLO % "30002", 30002)
    _give_file(os.path.join(home2, "vassals", "web.ini"),
               f"[uwsgi]\nplugin = 0:python\nhttp-socket = {ip2}:8000\n"
               "wsgi-file = $(HOME)/myapp.py\n", 30002)
    _until(lambda: init_of(30001), 30, "container 30001")
    init1 = init_of(30001)

    def from_30001():
        p = subprocess.run(["nsenter", f"--net=/proc/{init1}/ns/net", "curl", "-s", "-m", "2",
                            f"http://{ip2}:8000/"], capture_output=True, text=True, timeout=10)
        return p.stdout

    # The vassal answers on its address (from the node's side) before any test
    # of isolation means something.
    _until(lambda: "Hello from 30002" in ns.run("curl", "-s", "-m", "2",
                                                  f"http://{ip2}:8000/").stdout,
           30, "30002's vassal")
    assert from_30001() == ""  # not linked
    assert call("post", "/containers/30001", auth=k, json={"link": 30002}).status_code == 200
    time.sleep(1)
    assert from_30001() == ""  # one side only
    assert call("post", "/containers/30002", auth=k, json={"link": 30001}).status_code == 200
    _until(lambda: from_30001() == "Hello from 30002", 10, "the link")
    assert call("post", "/containers/30001", auth=k, json={"unlink": 30002}).status_code == 200
    _until(lambda: from_30001() == "", 10, "the unlink")

    # The owners' quickstart: hydra on zeusserver, a port mapping.
    r = call("post", "/containers", auth=z,
             data='{"server":"127.0.0.2", "name":"hydra", "memory":1000, "storage":20000}')
    assert r.status_code == 201, r.text
    hydra = 30003
    assert hydra in call("get", "/me/", auth=z).json()["containers"]
    for body in ({"distro": 1}, {"ssh_keys": [key]}):
        assert call("post", f"/containers/{hydra}", auth=z, json=body).status_code == 200
    ip = call("get", f"/containers/{hydra}", auth=z).json()["ip"]
    r = call("post", "/portmappings/127.0.0.2", auth=z,
             json={"container": hydra, "proto": "tcp", "public_port": 9000, "private_port": 8000})
    assert r.status_code == 201, r.text
    home = os.path.join(zeus, "containers", str(hydra))
    _until(lambda: os.path.isdir(os.path.join(home, "vassals")), 30, "hydra's home")
    _give_file(os.path.join(home, "hello.py"), HELLO % "hydra", hydra)
    _give_file(os.path.join(home, "vassals", "hello.ini"),
               f"[uwsgi]\nplugin = 0:python\nhttp-socket = {ip}:8000\n"
               "wsgi-file = $(HOME)/hello.py\n", hydra)
    _until(lambda: ns.run("curl", "-s", "-m", "2", "http://127.0.0.2:9000/").stdout
           == "Hello from hydra", 30, "curl http://127.0.0.2:9000/")


def _run_sh_guide_monitoring(call, node_call, out):
    """The guide's quota, metrics and alarm section (issue 16), as printed:
    30001 runs (the network section started it).  The nodes sample every
    5 s (metrics_interval = 5 in make run), so the metrics call answers
    samples within 15 s; a test alarm raised with the container's alarm key
    shows in /alarms/; fooserver's node serves its own /metrics."""
    k = ("kratos", "deimos")
    for line in ("quota -s", "/api/metrics/container.cpu/30001", "/api/alarm_key/30001",
                 "/api/alarms/raise/30001?key=$key", "127.0.0.1:9101/metrics"):
        assert line in out, (line, out)
    # Needs stage C's sampler and stage B's POST <node_prefix>/metrics (issue 16).
    samples = []

    def sampled():
        r = call("get", "/metrics/container.cpu/30001", auth=k)
        assert r.status_code == 200, r.text
        samples[:] = r.json()
        return samples
    _until(sampled, 15, "a container.cpu sample of 30001 within 15 s")
    assert all(len(s) == 2 and s[1] >= 0 for s in samples), samples
    key = call("get", "/alarm_key/30001", auth=k).json()["alarm_key"]
    r = call("post", f"/alarms/raise/30001?key={key}", data="a test alarm from the guide")
    assert r.status_code == 201, r.text
    alarms = call("get", "/alarms/?container=30001", auth=k).json()
    assert "a test alarm from the guide" in [a["msg"] for a in alarms], alarms
    m = node_call("get", "http://127.0.0.1:9101/metrics")
    assert m.status_code == 200 and "imperium_node_container_starts_total" in m.text, m.text


def _guide_section(out, first, end):
    """The guide's command lines (indented by two) from the paragraph starting
    with `first` to the one starting with `end`: (command, what the guide says
    it shows: the text in its trailing parentheses, or '')."""
    start = out.index("\n" + first)
    text = out[start:out.index("\n" + end, start)]
    lines = []
    for line in text.splitlines():
        if line.startswith("  "):
            m = re.search(r"\s{2,}\((.*)\)$", line)
            lines.append((line[:m.start()].strip(), m.group(1)) if m else (line.strip(), ""))
    return lines


def _next_mtime_second(vassals):
    """Wait (at most a second) until a write to a vassal gets a later mtime
    second than every vassal has: the Emperor compares mtimes in whole seconds,
    so the guide's append to pythonapp.ini made within the second its previous
    version was written (the steps between pass in well under a second on an
    idle machine) would never reload the vassal.  A person typing the guide's
    lines never meets it."""
    newest = max((os.stat(os.path.join(vassals, n)).st_mtime for n in os.listdir(vassals)),
                 default=0)
    time.sleep(max(0.0, min(1.0, int(newest) + 1 - time.time())))


def _run_sh_guide_https(ns, run_dir, out):
    """The guide's HTTPS section (issue 18), every command as printed: the
    seed's openssl commands as 30001's uid in its home (what `ssh ... '...'`
    runs), the files and vassals written as root, each curl in the demo's
    network namespace until it shows what the guide says: ssl-domain over
    HTTPS with the customer's certificate (HTTPS=on) and plain HTTP on the
    same name (HTTPS=off), the redirect vassal's 301, ssl-ca-domain with '!'
    refusing a client without a certificate and giving HTTPS_DN to one the
    CA signed, and the Host/SNI mismatch answered 421."""
    home = os.path.join(run_dir, "node", "containers", "30001")
    steps = _guide_section(out, "HTTPS (docs/ROUTER.md", "Automatic HTTPS")
    assert any(c.startswith("curl --resolve mynewdomain.org:8443:127.0.0.1") for c, _ in steps)
    refused = None

    def curl(cmd):
        return ns.run("sh", "-c", cmd + " 2>&1", timeout=20)

    def shows(cmd, note):
        p = curl(cmd)
        if note.startswith("HTTPS"):  # what tls.py says the router told it
            return p.returncode == 0 and note in p.stdout
        if note.startswith("301"):
            return (re.match(r"HTTP/1\.[01] 301 ", p.stdout) is not None and
                    "Location: " + note.split("Location: ")[1] + "\n" in p.stdout)
        return p.stdout.strip() == note
    for cmd, note in steps:
        if cmd.startswith("ssh "):
            p = subprocess.run(["setpriv", "--reuid=30001", "--regid=30001", "--clear-groups",
                                "sh", "-c", shlex.split(cmd)[-1]], cwd=home,
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, (cmd, p.stderr)
        elif cmd.startswith(("printf ", "chown ")):
            _next_mtime_second(os.path.join(home, "vassals"))
            p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=10)
            assert p.returncode == 0, (cmd, p.stderr)
        elif cmd.startswith("curl ") and note.startswith("refused"):
            refused = cmd  # checked once the name is served (the next line)
        elif cmd.startswith("curl "):
            try:
                _until(lambda: shows(cmd, note), 30, f"{cmd} to show {note}")
            except BaseException:
                print(curl(cmd).stdout)
                for log in ("emperor.log", "router.log"):
                    path = os.path.join(home, "logs", log)
                    if os.path.exists(path):
                        with open(path, errors="replace") as f:
                            print(f"---- {log}\n" + f.read()[-3000:])
                raise
            if refused:
                p = curl(refused)
                assert p.returncode != 0 and "HTTPS=" not in p.stdout, p.stdout
                refused = None
            if note.startswith("301"):  # and HTTPS served as before
                first = next(c for c, n in steps if n == "HTTPS=on")
                assert shows(first, "HTTPS=on HTTPS_DN=-"), curl(first).stdout
    assert refused is None
    with open(os.path.join(run_dir, "node.log"), errors="replace") as f:
        assert "refused" not in "".join(line for line in f if "mynewdomain.org" in line)


ZEUS = "dd if=/dev/zero of=zeus001 bs=512 count=200000 && mkfs.ext4 -q zeus001 && mkdir zeus"
ZEUS_BOX = '{"container":30001,"filename":"zeus001","mountpoint":"zeus"}'


def _run_sh_guide_loopbox(call, run_dir, out):
    """The guide's loopbox section (issue 17), as printed: the seed's zeus
    example as 30001's uid in its home, POST /loopboxes, the mount in 30001's
    mount namespace within a second and its line in logs/emperor.log; the
    DELETE unmounts it and frees the loop device, the image stays."""
    k = ("kratos", "deimos")
    for line in (ZEUS, ZEUS_BOX, "/api/loopboxes", "logs/emperor.log"):
        assert line in out, (line, out)
    home = os.path.join(run_dir, "node", "containers", "30001")
    p = subprocess.run(["setpriv", "--reuid=30001", "--regid=30001", "--clear-groups", "sh",
                        "-c", ZEUS], cwd=home, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = call("post", "/loopboxes", auth=k, data=ZEUS_BOX)
    assert r.status_code == 201, r.text
    lid = r.json()["id"]
    init = init_of(30001)

    def mounted():
        with open(f"/proc/{init}/mountinfo") as f:
            return any(line.split()[4] == "/containers/30001/zeus" for line in f)
    try:
        _until(mounted, 1.5, "zeus mounted in 30001 within a second")
    except BaseException:
        with open(os.path.join(run_dir, "node.log"), errors="replace") as f:
            print("".join(line for line in f if "loopbox" in line))
        raise

    def logged(text):
        with open(os.path.join(home, "logs", "emperor.log"), errors="replace") as f:
            return text in f.read()
    _until(lambda: logged(f"loopbox {lid}: zeus001 mounted on zeus (read-write)"), 5,
           "the mounted line in 30001's logs/emperor.log")
    assert call("delete", f"/loopboxes/{lid}", auth=k).status_code == 200
    _until(lambda: not mounted(), 3, "zeus unmounted")
    image = os.path.join(home, "zeus001")
    _until(lambda: not subprocess.run(["losetup", "-j", image], capture_output=True,
                                      text=True).stdout.strip(), 5, "the loop device freed")
    assert os.path.getsize(image) == 200000 * 512


DEMO_CUSTOMERS = (("kratos", "deimos"), ("zeus", "olympus"))


def _customer_views(get):
    """What the demo's customers see, body for body: /me/, their container
    list and each of their containers."""
    out = {}
    for auth in DEMO_CUSTOMERS:
        me = get("/me/", auth)
        assert me.status_code == 200, me.text
        for path in ("/me/", "/containers/",
                     *(f"/containers/{u}" for u in me.json()["containers"])):
            r = get(path, auth)
            assert r.status_code == 200, (path, r.text)
            out[auth[0], path] = r.text
    return out


def _views_on(database):
    """_customer_views of an API of the test's own on `database`."""
    with tempfile.TemporaryDirectory(prefix="imperium-e2e-") as d:
        api = start_api(d, ("--database", database))
        try:
            return _customer_views(lambda path, auth: api.get(path, auth=auth))
        finally:
            stop_api(api)


def _run_sh_copy_to_postgresql(run_dir):
    """Issue 20's move, on the demo's own database once the demo stopped
    (its nodes' last reports in): `imperium admin db copy` from its SQLite
    file to PostgreSQL, and an API on the copy answers each customer exactly
    as one on the SQLite file does."""
    sqlite = "sqlite:" + os.path.join(run_dir, "imperium.db")
    seen = _views_on(sqlite)
    assert ("kratos", "/containers/30002") in seen and ("zeus", "/me/") in seen, seen
    cluster = pgutil.Cluster()
    try:
        url = cluster.new_database()
        p = subprocess.run([CLI, "admin", "db", "copy", sqlite, url],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        assert _views_on(url) == seen
    finally:
        cluster.destroy()


def test_run_sh_demo(ssh_keys):
    """`make run` as a user runs it.  As root its nodes network their
    containers in the namespace they run in: here one of the test's own
    (never this machine's), where the test talks to it too."""
    script = os.path.join(ROOT, "scripts", "run.sh")
    root = os.geteuid() == 0
    ns = Netns() if root else None
    call = ((lambda method, *a, **kw: in_netns(ns.path, getattr(requests, method), *a, **kw))
            if root else (lambda method, *a, **kw: getattr(requests, method)(*a, **kw)))
    with tempfile.TemporaryDirectory(prefix="imperium-run-") as tmp:
        run_dir = os.path.join(tmp, "state")
        os.makedirs(run_dir)
        open(os.path.join(run_dir, ".imperium-run"), "w").close()
        open(os.path.join(run_dir, "stale-file"), "w").close()
        port = free_port()
        env = dict(os.environ, IMPERIUM_PORT=str(port), IMPERIUM_RUN_DIR=run_dir,
                   IMPERIUM_BIN_DIR=BIN, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
        for k in ("IMPERIUM_API", "IMPERIUM_ADMIN_TOKEN", "IMPERIUM_ADMIN_TOKEN_FILE"):
            env.pop(k, None)
        proc = subprocess.Popen([*(ns.nsenter() if root else ()), script],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp)
        try:
            out = _read_until(proc, "Press Ctrl-C to stop.", 90)
            assert "Press Ctrl-C to stop." in out, out
            assert f"http://kratos:deimos@127.0.0.1:{port}/api/me/" in out
            assert f"http://zeus:olympus@127.0.0.1:{port}/api/containers" in out
            assert f"IMPERIUM_ADMIN_TOKEN_FILE={run_dir}" in out
            assert not os.path.exists(os.path.join(run_dir, "stale-file"))  # wiped
            # Private (issue 12): a container of the host distro sees this very
            # directory with its uid, which may not look into it.
            assert os.stat(run_dir).st_mode & 0o7777 == 0o700
            assert os.stat(os.path.join(run_dir, "imperium.db")).st_mode & 0o777 == 0o600
            if root:
                peek = subprocess.run(["setpriv", "--reuid=30001", "--regid=30001",
                                       "--clear-groups", "cat",
                                       os.path.join(run_dir, "imperium-api.conf")],
                                      capture_output=True, text=True, timeout=10)
                assert peek.returncode != 0 and "Permission denied" in peek.stderr, peek
            conf = os.path.join(run_dir, "imperium-api.conf")
            api_pids = _pids_running(conf)
            assert len(api_pids) == 1, api_pids

            base = f"http://127.0.0.1:{port}/api"
            me = call("get", base + "/me/", auth=("kratos", "deimos"), timeout=10)
            assert me.status_code == 200, me.text
            assert me.json()["company"] == "God of war S.r.l."
            assert me.json()["vat"] == "01234567890"
            assert me.json()["containers"] == [30001, 30002] and me.json()["servers"] == []
            c = call("get", base + "/containers/30001", auth=("kratos", "deimos"), timeout=10)
            assert c.status_code == 200, c.text
            c = c.json()
            assert (c["name"], c["memory"], c["storage"], c["server"]) == \
                ("changeme", 500, 1000, "fooserver")
            assert c["server_address"] == "127.0.0.1"
            # The guide shows each container's address as the API has it.
            assert f"$ip1" not in out and f"30001 is {c['ip']} " in out, out
            distros = call("get", base + "/distros/", auth=("kratos", "deimos"), timeout=10)
            names = [d["name"] for d in distros.json()]
            assert len(names) == 2 and names[0] == "Debian 12 bookworm (host)"
            zeus = call("get", base + "/me/", auth=("zeus", "olympus"), timeout=10).json()
            assert zeus["servers"] == ["127.0.0.2"]
            if root:
                _run_sh_guide_network(
                    ns, lambda m, path, **kw: call(m, base + path, timeout=10, **kw),
                    run_dir, ssh_keys[0])
                _run_sh_guide_monitoring(
                    lambda m, path, **kw: call(m, base + path, timeout=10, **kw),
                    lambda m, url: call(m, url, timeout=10), out)
                _run_sh_guide_loopbox(
                    lambda m, path, **kw: call(m, base + path, timeout=10, **kw), run_dir, out)
                _run_sh_guide_https(ns, run_dir, out)
            else:
                hydra = call("post", base + "/containers", auth=("zeus", "olympus"), timeout=10,
                             data='{"server":"127.0.0.2", "name":"hydra", '
                                  '"memory":1000, "storage":20000}')
                assert hydra.status_code == 201, hydra.text

            proc.send_signal(signal.SIGINT)
            rest = proc.communicate(timeout=60)[0].decode(errors="replace")
            assert proc.returncode == 0, out + rest
            _run_sh_copy_to_postgresql(run_dir)
            for pid in api_pids:
                assert not os.path.exists(f"/proc/{pid}") or pid not in _pids_running(conf)
            # The node daemons (started as root) are gone too, with every
            # container's interface and route.
            for name in ("imperium-node.conf", "imperium-node-zeus.conf"):
                assert not _pids_running(os.path.join(run_dir, name))
            if root:
                links = json.loads(ns.run("ip", "-j", "link", check=True).stdout)
                assert [l["ifname"] for l in links] == ["lo"], links
                # Nor the nodes' own: the last stop-all takes the unreachable
                # route and the gateway on lo (no other node's /32 is left).
                assert ns.run("ip", "route", "show", "proto", "73",
                              check=True).stdout.strip() == ""
                lo = json.loads(ns.run("ip", "-j", "addr", "show", "dev", "lo",
                                       check=True).stdout)[0]
                assert [a["local"] for a in lo["addr_info"] if a["family"] == "inet"] == \
                    ["127.0.0.1"], lo
            logs = ["api.log"] + (["node.log", "node-zeus.log"] if root else [])
            for name in logs:
                with open(os.path.join(run_dir, name), errors="replace") as f:
                    log = f.read()
                for marker in SANITIZER_MARKERS:
                    assert marker not in log, log[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for name in ("imperium-api.conf", "imperium-node.conf", "imperium-node-zeus.conf"):
                for pid in _pids_running(os.path.join(run_dir, name)):
                    os.kill(pid, signal.SIGKILL)
            if root:
                for c in ("imperium-node.conf", "imperium-node-zeus.conf"):
                    path = os.path.join(run_dir, c)
                    if os.path.exists(path):
                        ns.run(os.path.join(BIN, "imperium-node"), "stop-all", "-c", path,
                               timeout=120)
                ns.close()


def test_run_sh_fails_when_the_port_is_taken(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        env = dict(os.environ, IMPERIUM_PORT=str(s.getsockname()[1]),
                   IMPERIUM_RUN_DIR=str(tmp_path / "state"), IMPERIUM_BIN_DIR=BIN)
        p = subprocess.run([os.path.join(ROOT, "scripts", "run.sh")], capture_output=True,
                           text=True, env=env, timeout=60)
    assert p.returncode != 0
    assert "exited at start-up" in p.stderr and "cannot listen" in p.stderr, p.stderr


def test_run_sh_refuses_a_foreign_directory(tmp_path):
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "keep-me").write_text("data")
    env = dict(os.environ, IMPERIUM_PORT=str(free_port()), IMPERIUM_RUN_DIR=str(foreign),
               IMPERIUM_BIN_DIR=BIN)
    p = subprocess.run([os.path.join(ROOT, "scripts", "run.sh")], capture_output=True,
                       text=True, env=env, timeout=30)
    assert p.returncode != 0 and "refusing" in p.stderr
    assert (foreign / "keep-me").read_text() == "data"
