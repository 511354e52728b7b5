#!/bin/sh
# scripts/run.sh - the `make run` demo: a fresh imperium-api on 127.0.0.1,
# seeded through the admin CLI with the quickstart's customer `kratos`, and
# (as root) an imperium-node daemon for the server `fooserver`, so the
# quickstart's `distro` + `ssh_keys` calls really start container 30001, and
# a second one for zeus's server `zeusserver` (127.0.0.2), so the owners'
# quickstart (a container of its own, a port mapping) works too.  Both nodes
# network their containers in this machine's network namespace
# (docs/NETWORK.md: a veth per container, an nft table per node, NAT off).
# Then a short guide.  Stays in the foreground until Ctrl-C, which stops the
# node daemons, then every container (`imperium-node stop-all`), then the API.
# With IMPERIUM_DB=postgresql (`make run DB=postgresql`): a throwaway
# PostgreSQL cluster (scripts/pgtmp.sh) and two imperium-api instances on its
# one database (docs/OPERATING.md, "Several API instances"); fooserver's node
# follows the first, zeusserver's the second; Ctrl-C stops both APIs, then the
# cluster (its data stays until the next run, like the state directory).
#
# Environment:
#   IMPERIUM_DB       sqlite (default: one API, its database in the state
#                     directory) or postgresql (two APIs, one PostgreSQL)
#   IMPERIUM_PORT     TCP port (default 8080)
#   IMPERIUM_PORT2    the second API's TCP port with postgresql (default
#                     IMPERIUM_PORT + 1)
#   IMPERIUM_PG_PORT  the PostgreSQL cluster's port on 127.0.0.1 (default 55432)
#   IMPERIUM_PG_DIR   its directory, wiped on each run (default
#                     /tmp/imperium-run-pg): outside the state directory,
#                     whose 0700 the server's user `postgres` cannot cross
#   IMPERIUM_RUN_DIR  state directory, wiped on each run (default <repo>/.run;
#                     keep it out of /tmp: inside a container /tmp is the home's).
#                     It is made 0700: it holds the database, the admin token
#                     and the node's secret, and a container of the host distro
#                     sees the host's / (read-only) with its uid, which may
#                     not even look into a root-only directory
#   IMPERIUM_BIN_DIR  where imperium-api, imperium and imperium-node are
#                     (default <repo>/build)
#   IMPERIUM_NODE_METRICS_PORT  fooserver's node's own Prometheus /metrics on
#                     127.0.0.1 (default 9101)
#   IMPERIUM_ROUTER_HTTPS_PORT  the nodes' HTTPS router port (default 8443)
#   IMPERIUM_ACME_DIRECTORY  an ACME server's directory URL (e.g. a pebble on
#                     loopback) for the nodes' acme_directory: auto-ssl-domain
#                     works, and the guide shows it (default: unset, off)
#   IMPERIUM_ACME_CA_BUNDLE  the CA bundle that ACME server's TLS is signed by
#                     (acme_ca_bundle; pebble's test CA)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/demo-api.sh"
run_dir=${IMPERIUM_RUN_DIR:-$root/.run}
bin_dir=${IMPERIUM_BIN_DIR:-$root/build}
port=${IMPERIUM_PORT:-8080}
host=127.0.0.1
api_bin=$bin_dir/imperium-api
cli_bin=$bin_dir/imperium
node_bin=$bin_dir/imperium-node
marker=.imperium-run

say() { printf '%s\n' "$*"; }
die() { say "run: $*" >&2; exit 1; }

need_port() {
    case $2 in
        '' | *[!0-9]*) die "$1 must be a port number, not '$2'" ;;
    esac
}
need_port IMPERIUM_PORT "$port"
db=${IMPERIUM_DB:-sqlite}
case $db in
    sqlite) ;;
    postgresql | postgres) db=postgresql ;;
    *) die "IMPERIUM_DB (make run DB=...) must be sqlite or postgresql, not '$db'" ;;
esac
# The second API and the cluster, with postgresql only.
port2=
log2=
if [ "$db" = postgresql ]; then
    port2=${IMPERIUM_PORT2:-$((port + 1))}
    need_port IMPERIUM_PORT2 "$port2"
    [ "$port2" != "$port" ] || die "IMPERIUM_PORT2 must differ from IMPERIUM_PORT ($port)"
    pg_port=${IMPERIUM_PG_PORT:-55432}
    need_port IMPERIUM_PG_PORT "$pg_port"
    pg_dir=${IMPERIUM_PG_DIR:-/tmp/imperium-run-pg}
    pgtmp=$root/scripts/pgtmp.sh
fi
for b in "$api_bin" "$cli_bin" "$node_bin"; do
    [ -x "$b" ] || die "$b is missing: build it first (make all)"
done

# A fresh state directory.  Never wipe a directory this script did not make.
if [ -d "$run_dir" ] && [ -n "$(ls -A "$run_dir")" ] && [ ! -e "$run_dir/$marker" ]; then
    die "$run_dir exists and was not made by run.sh: refusing to wipe it"
fi
# Containers of an earlier run that was not stopped cleanly: stop them
# before their homes go (best effort; refused while that run's daemon lives).
if [ "$(id -u)" = 0 ]; then
    for c in "$run_dir/imperium-node.conf" "$run_dir/imperium-node-zeus.conf"; do
        [ -f "$c" ] && "$node_bin" stop-all -c "$c" >/dev/null 2>&1 || true
    done
fi
rm -rf "$run_dir"
mkdir -p "$run_dir"
chmod 0700 "$run_dir" || die "cannot make $run_dir private (chmod 0700)"
run_dir=$(cd "$run_dir" && pwd)
: >"$run_dir/$marker"

conf=$run_dir/imperium-api.conf
log=$run_dir/api.log
token=$run_dir/admin.token

node_conf=$run_dir/imperium-node.conf
node_log=$run_dir/node.log
node_dir=$run_dir/node
# zeusserver's node (127.0.0.2): its own directories, veth prefix and table.
zeus_conf=$run_dir/imperium-node-zeus.conf
zeus_log=$run_dir/node-zeus.log
zeus_dir=$run_dir/node-zeus
node_pids=
node_started=
router_port=${IMPERIUM_ROUTER_PORT:-8000}
https_port=${IMPERIUM_ROUTER_HTTPS_PORT:-8443}
acme_directory=${IMPERIUM_ACME_DIRECTORY:-}
acme_ca_bundle=${IMPERIUM_ACME_CA_BUNDLE:-}
metrics_port=${IMPERIUM_NODE_METRICS_PORT:-9101}
ssh_port=${IMPERIUM_SSH_PORT:-2222}
sshd_dir=$run_dir/sshd
sshd_pid=
ssh_note="sshd is NOT running: it needs root (run make run as root)"

api_pid=
api2_pid=
pg_started=
log_tail() {
    for l in "$log" ${log2:+"$log2"}; do
        [ -f "$l" ] || continue
        say "---- last lines of $l ----" >&2
        tail -n 30 "$l" >&2 || true
    done
}
# Stop the node daemons (the containers keep running), then every container
# (the homes stay); returns non-zero if either went wrong.
stop_node() {
    [ -n "$node_started" ] || return 0
    node_started=
    status=0
    if [ -n "$sshd_pid" ]; then
        kill -TERM "$sshd_pid" 2>/dev/null || true
        wait "$sshd_pid" 2>/dev/null || true
        sshd_pid=
    fi
    pids=$node_pids
    node_pids=
    for pid in $pids; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $pids; do
        wait "$pid" || status=$?
    done
    "$node_bin" stop-all -c "$node_conf" >>"$node_log" 2>&1 || status=$?
    if [ -f "$zeus_conf" ]; then
        "$node_bin" stop-all -c "$zeus_conf" >>"$zeus_log" 2>&1 || status=$?
    fi
    return "$status"
}
# Stop the APIs (those still running) and wait for them; returns non-zero if
# one exited so.
stop_api() {
    pids="$api_pid $api2_pid"
    api_pid=
    api2_pid=
    for pid in $pids; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    status=0
    for pid in $pids; do
        wait "$pid" || status=$?
    done
    return "$status"
}
# Stop the PostgreSQL cluster, after the APIs (its data stays until the next
# run); returns non-zero if it did not stop.
stop_pg() {
    [ -n "$pg_started" ] || return 0
    pg_started=
    "$pgtmp" stop "$pg_dir"
}
on_signal() {
    trap - INT TERM
    say ""
    code=0
    if [ -n "$node_started" ]; then
        say "run: stopping imperium-node and its containers"
        if ! stop_node; then
            say "run: imperium-node did not stop cleanly (see $node_log)" >&2
            code=1
        fi
    fi
    say "run: stopping imperium-api"
    if ! stop_api; then
        say "run: imperium-api did not stop cleanly" >&2
        log_tail
        code=1
    fi
    if [ -n "$pg_started" ]; then
        say "run: stopping PostgreSQL"
        if ! stop_pg; then
            say "run: PostgreSQL in $pg_dir did not stop cleanly (see $pg_dir/server.log)" >&2
            code=1
        fi
    fi
    exit "$code"
}
on_exit() {
    stop_node || true
    stop_api || true
    stop_pg || true
}
trap on_signal INT TERM
trap on_exit EXIT
fail() {
    say "run: $*" >&2
    log_tail
    exit 1
}

# The node's sshd (docs/SSH.md): in a mount namespace of its own, where /etc
# is an overlay adding the NSS module's configuration, so the host's /etc
# and its own sshd stay untouched.
start_sshd() {
    # imperium-enter and the NSS module run inside sshd: they are built
    # without sanitizers only, so an asan binary dir borrows its parent's.
    ssh_bin=$bin_dir
    [ -x "$ssh_bin/imperium-enter" ] || ssh_bin=$(dirname "$bin_dir")
    if [ ! -x "$ssh_bin/imperium-enter" ] || [ ! -f "$ssh_bin/libnss_imperium.so.2" ]; then
        ssh_note="sshd is NOT running: imperium-enter or libnss_imperium.so.2 is not built"
        return 0
    fi
    mkdir -p "$sshd_dir/etc-upper/imperium" "$sshd_dir/etc-work" "$sshd_dir/lib" \
        "$sshd_dir/bin" "$node_dir/containers" || fail "cannot create $sshd_dir"
    cp "$ssh_bin/imperium-enter" "$sshd_dir/bin/" &&
        chown 0:0 "$sshd_dir/bin/imperium-enter" &&
        chmod 4755 "$sshd_dir/bin/imperium-enter" &&
        cp "$ssh_bin/libnss_imperium.so.2" "$sshd_dir/lib/" ||
        fail "cannot install imperium-enter and the NSS module in $sshd_dir"
    printf 'passwd: files imperium\ngroup: files imperium\nshadow: files\nhosts: files dns\n' \
        >"$sshd_dir/etc-upper/nsswitch.conf"
    # sshd reads the authorized keys and execs the login shell as the
    # container's uid, which cannot look into the 0700 state directory:
    # sshd's namespace has the homes bound on its own /run tmpfs (below) and
    # a copy of the shell installed here (on a real node the containers
    # directory is not inside a private one).
    printf 'containers_dir = %s\nstate_dir = %s\nshell = %s\n' /run/imperium/containers \
        "$node_dir/state" /run/imperium/imperium-enter >"$sshd_dir/etc-upper/imperium/ssh.conf"
    chmod 0644 "$sshd_dir/etc-upper/imperium/ssh.conf"
    ssh-keygen -q -t ed25519 -N '' -f "$sshd_dir/host_key" </dev/null ||
        fail "cannot make sshd's host key"
    # slave + rbind: each home is an image the node mounts on its containers
    # directory (a shared mount, docs/NODE.md "Disk quota") when the
    # container starts, after this namespace is made: it must appear here.
    unshare -m --propagation slave sh -c "set -e
        mount -t overlay overlay -o lowerdir=/etc,upperdir=$sshd_dir/etc-upper,workdir=$sshd_dir/etc-work /etc
        mount -t tmpfs -o mode=0755 tmpfs /run
        mkdir -m 0755 /run/sshd /run/imperium /run/imperium/containers
        mount --rbind $node_dir/containers /run/imperium/containers
        cp -p $sshd_dir/bin/imperium-enter /run/imperium/imperium-enter
        LD_LIBRARY_PATH=$sshd_dir/lib exec /usr/sbin/sshd -D -e -f $root/etc/ssh/sshd_config \
            -h $sshd_dir/host_key -p $ssh_port -o ListenAddress=$host -o PidFile=none" \
        >"$run_dir/sshd.log" 2>&1 &
    sshd_pid=$!
    ssh_note="sshd listens on $host:$ssh_port (log: $run_dir/sshd.log)"
}

# With postgresql: a fresh cluster and its one database, made before the
# APIs, which only migrate it.
db_url=
if [ "$db" = postgresql ]; then
    [ -x "$pgtmp" ] || die "$pgtmp is missing"
    "$pgtmp" destroy "$pg_dir" || die "cannot remove the previous run's PostgreSQL in $pg_dir"
    pg_started=1
    "$pgtmp" start "$pg_dir" "$pg_port" >/dev/null ||
        die "cannot start PostgreSQL in $pg_dir on 127.0.0.1:$pg_port"
    db_url=$("$pgtmp" createdb "$pg_dir" "$pg_port" imperium) ||
        die "cannot create the database imperium on 127.0.0.1:$pg_port"
fi
write_api_conf "$conf" "$host" "$port" "$run_dir" scripts/run.sh ${db_url:+"$db_url"}

"$api_bin" -c "$conf" >"$log" 2>&1 &
api_pid=$!

export IMPERIUM_API="http://$host:$port"
export IMPERIUM_ADMIN_TOKEN_FILE="$token"
unset IMPERIUM_ADMIN_TOKEN IMPERIUM_CONFIG
imp() { "$cli_bin" "$@"; }

# await_api PID PORT: until the API on PORT answers (the token file exists
# before it listens).
await_api() {
    tries=0
    until [ -s "$token" ] &&
        IMPERIUM_API=http://$host:$2 "$cli_bin" admin distro list --timeout 2 >/dev/null 2>&1; do
        kill -0 "$1" 2>/dev/null || fail "imperium-api exited at start-up"
        tries=$((tries + 1))
        [ "$tries" -lt 200 ] || fail "imperium-api does not answer on http://$host:$2"
        sleep 0.1
    done
}
await_api "$api_pid" "$port"
# The second instance only once the first has migrated the database and
# made the admin token: it uses both as they are.
if [ "$db" = postgresql ]; then
    conf2=$run_dir/imperium-api-2.conf
    log2=$run_dir/api-2.log
    write_api_conf "$conf2" "$host" "$port2" "$run_dir" scripts/run.sh "$db_url"
    "$api_bin" -c "$conf2" >"$log2" 2>&1 &
    api2_pid=$!
    await_api "$api2_pid" "$port2"
fi

# The demo: the quickstart's customer on a shared server, and a customer
# owning a whole server.
imp admin customer add kratos --password deimos --company "God of war S.r.l." \
    --vat 01234567890 >/dev/null || fail "cannot create customer kratos"
imp admin customer add zeus --password olympus --company "Olympus S.p.a." \
    >/dev/null || fail "cannot create customer zeus"
# The answer shows the node's secret once: each server's node daemon uses it.
secret_of() { printf '%s\n' "$1" | sed -n 's/^node_secret:[[:space:]]*//p'; }
foo=$(imp admin server add fooserver --address 127.0.0.1 --memory 8000 --storage 200000 \
    --datacenter demo) || fail "cannot create server fooserver"
node_secret=$(secret_of "$foo")
[ -n "$node_secret" ] || fail "no node_secret in the answer of 'imperium admin server add'"
zeus=$(imp admin server add zeusserver --address 127.0.0.2 --memory 16000 --storage 400000 \
    --owner zeus --datacenter demo) || fail "cannot create server zeusserver"
zeus_secret=$(secret_of "$zeus")
[ -n "$zeus_secret" ] || fail "no node_secret in the answer of 'imperium admin server add'"
imp admin distro add "Debian 12 bookworm (host)" --path / >/dev/null ||
    fail "cannot create the first distro"
imp admin distro add "Alpine Linux 3.20" --path /var/lib/imperium/distros/alpine-3.20 \
    >/dev/null || fail "cannot create the second distro"
uid=$(imp admin container add --customer kratos --server fooserver --name changeme \
    --memory 500 --storage 1000) || fail "cannot create kratos' container"
# A second one, so that the guide can link two containers of kratos.
uid2=$(imp admin container add --customer kratos --server fooserver --name changeme2 \
    --memory 500 --storage 1000) || fail "cannot create kratos' second container"
imp admin news add "Welcome to Imperium: this is the make run demo." --public >/dev/null ||
    fail "cannot publish the news"
# The supplier maps the quickstart's domain to kratos (no DNS check needed).
imp admin domain add mynewdomain.org --customer kratos >/dev/null ||
    fail "cannot map mynewdomain.org to kratos"
# And a second name, for the guide's client-certificate example.
imp admin domain add private.mynewdomain.org --customer kratos >/dev/null ||
    fail "cannot map private.mynewdomain.org to kratos"
# Seeded once, through the first API: the second must see it all at once.
if [ "$db" = postgresql ]; then
    IMPERIUM_API=http://$host:$port2 "$cli_bin" admin customer list | grep -q kratos ||
        fail "the second imperium-api (port $port2) does not see the customer kratos"
fi

# A node's config: write_node_conf FILE SERVER SECRET DIR ROUTER PREFIX TABLE CGROUP METRICS
# HTTPS (the router's HTTPS listener, docs/ROUTER.md) API (the URL it follows).
# The first distro above is this machine's own root, read-only
# (distro_host_ok): the demo's only way to have a distro at once.
write_node_conf() {
    (
        umask 077
        cat >"$1" <<NODECONF
# imperium-node settings for the \`make run\` demo (written by scripts/run.sh)
api_url = ${11}
server_name = $2
secret = $3
state_dir = $4/state
containers_dir = $4/containers
shortcuts = $root/etc/uwsgi/shortcuts.ini
cgroup_parent = $8
distro_host_ok = true
router_http = $5
router_https = ${10}
# Two nodes share this machine's network namespace: each has its own veth
# prefix and nft table (docs/NETWORK.md); no NAT to the world in the demo.
veth_prefix = $6
nft_table = $7
nat = off
# No legion in the demo, and both routers would want the cluster port.
cluster_port = 0
# A sample of every container every 5 s (60 by default), so the metrics
# calls show numbers within seconds; the node's own health on METRICS.
metrics_interval = 5
metrics_listen = $9
log_level = info
NODECONF
        if [ -n "$acme_directory" ]; then
            printf 'acme_directory = %s\n' "$acme_directory"
            [ -z "$acme_ca_bundle" ] || printf 'acme_ca_bundle = %s\n' "$acme_ca_bundle"
        fi >>"$1"
    ) || fail "cannot write $1"
}
# start_node CONF LOG: the daemon in the background, waited for until it has
# its first state from the API.
start_node() {
    "$node_bin" run -c "$1" >"$2" 2>&1 &
    pid=$!
    node_pids="$node_pids $pid"
    tries=0
    until grep -q "node state received" "$2" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "---- $2 ----" >&2
            cat "$2" >&2 || true
            fail "imperium-node exited at start-up"
        fi
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || fail "imperium-node does not get its state from the API"
        sleep 0.1
    done
}

node_note=
base=http://$host:$port
# With two APIs each node follows one: a change made on either wakes both.
zeus_api=$base
[ -z "$port2" ] || zeus_api=http://$host:$port2
if [ "$(id -u)" = 0 ]; then
    write_node_conf "$node_conf" fooserver "$node_secret" "$node_dir" "$host:$router_port" \
        imp imperium imperium-run "$host:$metrics_port" "$host:$https_port" "$base"
    write_node_conf "$zeus_conf" zeusserver "$zeus_secret" "$zeus_dir" "127.0.0.2:$router_port" \
        imz imperium_zeus imperium-run-zeus "" "127.0.0.2:$https_port" "$zeus_api"
    node_started=1
    start_node "$node_conf" "$node_log"
    start_node "$zeus_conf" "$zeus_log"
    node_note="imperium-node runs fooserver's containers and its router on $host:$router_port (HTTP)
and $host:$https_port (HTTPS) (log: $node_log), and zeusserver's, with its router on
127.0.0.2:$router_port and 127.0.0.2:$https_port (log: $zeus_log)"
    start_sshd
else
    node_note="imperium-node is NOT running: containers need root (run make run as root)"
fi

k=http://kratos:deimos@$host:$port
k17=http://kratos:deimos17@$host:$port
z=http://zeus:olympus@$host:$port
# The containers' addresses, as the API shows them ("ip").
ip_of() {
    imp call GET "/containers/$1" --user kratos --password deimos |
        sed -n 's/.*"ip": *"\([0-9.]*\)".*/\1/p'
}
ip1=$(ip_of "$uid") && [ -n "$ip1" ] || fail "no ip for container $uid"
ip2=$(ip_of "$uid2") && [ -n "$ip2" ] || fail "no ip for container $uid2"
hydra=$((uid2 + 1)) # the next container made, on a fresh database
home=$node_dir/containers/$uid
tls_app='def application(e, sr):\n    sr("200 OK", [("Content-Type", "text/plain")])\n    return [("HTTPS=" + e.get("HTTPS", "off") + " HTTPS_DN=" + e.get("HTTPS_DN", "-")).encode()]\n'
if [ -n "$acme_directory" ]; then
    acme_guide="Automatic HTTPS (docs/ROUTER.md \"Automatic HTTPS\"): the nodes ask $acme_directory
for the certificate of a name a vassal gives to auto-ssl-domain, and renew it (a new
context for mynewdomain.org: its ssl-domain vassal goes first):
  rm $home/vassals/pythonapp.ini
  printf '[uwsgi]\nplugin = 0:python\nwsgi-file = \$(HOME)/tls.py\nauto-ssl-domain = mynewdomain.org\n' > $home/vassals/auto.ini
  chown $uid:$uid $home/vassals/auto.ini
  tail $home/logs/router.log     (certificate for mynewdomain.org obtained from $acme_directory, ...)
  curl --resolve mynewdomain.org:$https_port:$host --cacert <the ACME server's root> https://mynewdomain.org:$https_port/"
else
    acme_guide="Automatic HTTPS (auto-ssl-domain = name, docs/ROUTER.md \"Automatic HTTPS\") needs an ACME
server: run make run with IMPERIUM_ACME_DIRECTORY=<its directory URL> (and
IMPERIUM_ACME_CA_BUNDLE=<its TLS CA>, for a test server such as pebble) and this guide shows it."
fi
if [ -z "$port2" ]; then
    api_note="imperium-api is running on $base (customer API $base/api, admin API $base/admin)
state: $run_dir (log: $log)"
else
    base2=http://$host:$port2
    api_note="Two imperium-api instances share one PostgreSQL database (docs/OPERATING.md,
\"Several API instances\"), and the admin token:
  $base (customer API $base/api, admin API $base/admin; log: $log)
  $base2 (customer API $base2/api, admin API $base2/admin; log: $log2)
A write on either is seen by the next read on the other, e.g.
  curl -X POST -d '{\"company\": \"Sparta\"}' $k/api/me/
  curl http://kratos:deimos@$host:$port2/api/me/
As root, fooserver's node follows $base and zeusserver's $base2.
database: $db_url
  psql '$db_url'
  (the cluster: $pg_dir, its log: $pg_dir/server.log)
state: $run_dir"
fi
cat <<EOF

$api_note

Seeded: customer kratos/deimos ("God of war S.r.l.") with containers $uid and $uid2 on fooserver,
customer zeus/olympus owning zeusserver (127.0.0.2), two distros, one public news item.
$node_note
$ssh_note

Distro 1, "Debian 12 bookworm (host)", is this machine's own root filesystem, read-only:
a demo shortcut (distro_host_ok = true in $node_conf), never for customers.
Real distros will come from \`imperium admin distro build\`.

The customer quickstart, as kratos:
  curl $k/api/me/
  curl -X POST -d '{"company": "God of War 4 S.p.a."}' $k/api/me/
  curl -X POST -d '{"password": "deimos17"}' $k/api/me/
  curl $k17/api/containers/
  curl $k17/api/containers/$uid
  curl $k17/api/distros/
  curl -X POST -d '{"distro": 1}' $k17/api/containers/$uid
  curl -X POST -d "{\"ssh_keys\": [\"\$(cat ~/.ssh/id_ed25519.pub)\"]}" $k17/api/containers/$uid
  curl $k17/api/containers/$uid        ("status": running, within a second)

Once it runs, ssh into it (keys only; the key you gave in ssh_keys):
  ssh -p $ssh_port $uid@$host 'id -u; hostname'

The first deploy: as the container (over ssh) or as root on the host, drop the
quickstart's vassals into its vassals/ (owned by uid $uid), e.g. for Python 3:
  printf 'def application(e, sr):\n    sr("200 OK", [("Content-Type", "text/plain")])\n    return [b"Hello i am python"]\n' > $node_dir/containers/$uid/myapp.py
  printf '[uwsgi]\nplugin = 0:python\nwsgi-file = \$(HOME)/myapp.py\ndomain = mynewdomain.org\n' > $node_dir/containers/$uid/vassals/pythonapp.ini
  chown $uid:$uid $node_dir/containers/$uid/myapp.py $node_dir/containers/$uid/vassals/pythonapp.ini
  curl -H 'Host: mynewdomain.org' http://$host:$router_port/

The container, from the host:
  ps -u $uid -o pid,args                 (its init and uWSGI Emperor)
  ls $node_dir/containers/$uid           (its home: drop vassals in vassals/)
  tail $node_dir/containers/$uid/logs/emperor.log

Containers are isolated, even two of one customer, until each links the other
(docs/NETWORK.md): $uid is $ip1 and $uid2 is $ip2 on their uwsgi0.  Start $uid2
as above (distro, ssh_keys), give it a vassal on its own address, then link both ways:
  printf '[uwsgi]\nplugin = 0:python\nhttp-socket = $ip2:8000\nwsgi-file = \$(HOME)/myapp.py\n' > $node_dir/containers/$uid2/vassals/web.ini
  cp $node_dir/containers/$uid/myapp.py $node_dir/containers/$uid2/ && chown $uid2:$uid2 $node_dir/containers/$uid2/myapp.py $node_dir/containers/$uid2/vassals/web.ini
  ssh -p $ssh_port $uid@$host curl -sm2 http://$ip2:8000/     (fails: not linked)
  curl -X POST -d '{"link": $uid2}' $k17/api/containers/$uid
  curl -X POST -d '{"link": $uid}' $k17/api/containers/$uid2
  ssh -p $ssh_port $uid@$host curl -sm2 http://$ip2:8000/     (answers, within a second)
  curl -X POST -d '{"unlink": $uid2}' $k17/api/containers/$uid   (cut again, no restart)

A customer owning a whole server creates its own containers, as zeus, and maps
its server's public ports to them (zeusserver is 127.0.0.2 here):
  curl -X POST -d '{"server":"127.0.0.2", "name":"hydra", "memory":1000, "storage":20000}' $z/api/containers
  curl -X POST -d '{"distro": 1}' $z/api/containers/$hydra
  curl -X POST -d "{\"ssh_keys\": [\"\$(cat ~/.ssh/id_ed25519.pub)\"]}" $z/api/containers/$hydra
  curl $z/api/containers/$hydra        (its "ip": bind your services there, not on 127.0.0.1)
  curl -X POST -d '{"container": $hydra, "proto": "tcp", "public_port": 9000, "private_port": 8000}' $z/api/portmappings/127.0.0.2
  printf 'def application(e, sr):\n    sr("200 OK", [("Content-Type", "text/plain")])\n    return [b"Hello from hydra"]\n' > $zeus_dir/containers/$hydra/hello.py
  printf '[uwsgi]\nplugin = 0:python\nhttp-socket = <its ip>:8000\nwsgi-file = \$(HOME)/hello.py\n' > $zeus_dir/containers/$hydra/vassals/hello.ini
  chown $hydra:$hydra $zeus_dir/containers/$hydra/hello.py $zeus_dir/containers/$hydra/vassals/hello.ini
  curl http://127.0.0.2:9000/
  curl $z/api/me/

Disk quota, metrics and alarms (docs/OPERATING.md, "Monitoring"), once $uid runs:
  ssh -p $ssh_port $uid@$host quota -s      (its home's usage and limit: storage MB)
  curl $k17/api/metrics/container.cpu/$uid   (a sample every 5 s: [[unix, CPU ns], ...])
  curl $k17/api/metrics/container.mem/$uid
  key=\$(curl -s $k17/api/alarm_key/$uid | sed -n 's/.*"alarm_key": *"\([^"]*\)".*/\1/p')
  curl -X POST -d 'a test alarm' "$base/api/alarms/raise/$uid?key=\$key"
  curl $k17/api/alarms/                      (stored; with jid, pushover_*, pushbullet_token
                                             or slack_webhook set on $uid, delivered there too)
  curl http://$host:$metrics_port/metrics       (the node's own health, Prometheus text)

Loopboxes (docs/NODE.md "Loopboxes"), the seed's zeus example, once $uid runs: a 100 MB
ext4 image made in its home, mounted on ~/zeus inside that container only:
  ssh -p $ssh_port $uid@$host 'dd if=/dev/zero of=zeus001 bs=512 count=200000 && mkfs.ext4 -q zeus001 && mkdir zeus'
  curl -X POST -d '{"container":$uid,"filename":"zeus001","mountpoint":"zeus"}' $k17/api/loopboxes
  tail $node_dir/containers/$uid/logs/emperor.log     (... loopbox 1: zeus001 mounted on zeus (read-write))
  ssh -p $ssh_port $uid@$host 'df -h zeus; echo hi > zeus/hello'
  curl $k17/api/loopboxes
  curl -X DELETE $k17/api/loopboxes/1      (unmounted; the image and its files stay)

HTTPS (docs/ROUTER.md "HTTPS: the customer's part"), once $uid runs: the seed's self-signed
certificate made in its home, and an app that shows what the router tells it:
  ssh -p $ssh_port $uid@$host 'openssl genrsa -out foobar.key 2048 && openssl req -new -key foobar.key -out foobar.csr -subj /CN=mynewdomain.org && openssl x509 -req -days 365 -in foobar.csr -signkey foobar.key -out foobar.crt'
  printf '$tls_app' > $home/tls.py
ssl-domain serves the name over HTTPS with that certificate, and over plain HTTP too (it
replaces the first deploy's pythonapp.ini: never domain and ssl-domain for one name):
  printf '[uwsgi]\nplugin = 0:python\nwsgi-file = \$(HOME)/tls.py\nssl-domain = mynewdomain.org \$(HOME)/foobar.key \$(HOME)/foobar.crt\n' > $home/vassals/pythonapp.ini
  chown $uid:$uid $home/tls.py $home/vassals/pythonapp.ini
  curl --resolve mynewdomain.org:$https_port:$host --cacert $home/foobar.crt https://mynewdomain.org:$https_port/     (HTTPS=on)
  curl -H 'Host: mynewdomain.org' http://$host:$router_port/     (HTTPS=off)
  tail $home/logs/router.log     (why a certificate was refused, if one was)
The seed's redirect: plain HTTP answered with a 301 to https://, HTTPS served as before:
  printf 'plugin = router_redirect\nroute-if-not = equal:\${HTTPS};on redirect-permanent:https://\${HTTP_HOST}\${REQUEST_URI}\n' >> $home/vassals/pythonapp.ini
  curl -si -H 'Host: mynewdomain.org' http://$host:$router_port/hello     (301, Location: https://mynewdomain.org/hello)
Client certificates: a CA (the seed's; its passphrase on the command line), a client
certificate it signs, and a certificate for a second name the supplier mapped to kratos:
  ssh -p $ssh_port $uid@$host 'openssl genrsa -des3 -passout pass:deimos -out ca.key 4096 && openssl req -new -x509 -days 365 -key ca.key -passin pass:deimos -out ca.crt -subj /CN=kratos-ca'
  ssh -p $ssh_port $uid@$host 'openssl genrsa -out client.key 2048 && openssl req -new -key client.key -out client.csr -subj /CN=deimos && openssl x509 -req -days 365 -in client.csr -CA ca.crt -CAkey ca.key -passin pass:deimos -set_serial 01 -out client.crt'
  ssh -p $ssh_port $uid@$host 'openssl req -new -key foobar.key -out private.csr -subj /CN=private.mynewdomain.org && openssl x509 -req -days 365 -in private.csr -signkey foobar.key -out private.crt'
  printf '[uwsgi]\nplugin = 0:python\nwsgi-file = \$(HOME)/tls.py\nssl-ca-domain = private.mynewdomain.org \$(HOME)/foobar.key \$(HOME)/private.crt !\$(HOME)/ca.crt\n' > $home/vassals/private.ini
  chown $uid:$uid $home/vassals/private.ini
  curl --resolve private.mynewdomain.org:$https_port:$host --cacert $home/private.crt https://private.mynewdomain.org:$https_port/     (refused: no client certificate)
  curl --resolve private.mynewdomain.org:$https_port:$host --cacert $home/private.crt --cert $home/client.crt --key $home/client.key https://private.mynewdomain.org:$https_port/     (HTTPS_DN=/CN=deimos)
Without the '!' (... \$(HOME)/ca.crt) a client without a certificate gets in too, with no
HTTPS_DN.  A request for another name than the one the connection was made for is refused:
  curl -s -o /dev/null -w '%{http_code}\n' --resolve mynewdomain.org:$https_port:$host --cacert $home/foobar.crt -H 'Host: private.mynewdomain.org' https://mynewdomain.org:$https_port/     (421)
$acme_guide

The supplier's side, with the admin CLI:
  export IMPERIUM_API=$base
  export IMPERIUM_ADMIN_TOKEN_FILE=$token
  $cli_bin admin customer list
  $cli_bin admin container list --customer kratos
  $cli_bin admin container modify $uid --memory 1000
  $cli_bin admin --help      (every command; docs/ADMIN.md explains them)
  $cli_bin call GET /me/ --user kratos --password deimos

Press Ctrl-C to stop.
EOF

# In the foreground until Ctrl-C (the trap) or an API's death.
status=0
if [ -z "$api2_pid" ]; then
    wait "$api_pid" || status=$?
    api_pid=
else
    # Both: a short background sleep keeps the trap prompt (a signal ends
    # `wait` at once), and each wait reaps an API that died.
    while kill -0 "$api_pid" 2>/dev/null && kill -0 "$api2_pid" 2>/dev/null; do
        sleep 1 &
        wait $! || true
    done
    for pid in $api_pid $api2_pid; do
        kill -0 "$pid" 2>/dev/null || wait "$pid" || status=$?
    done
fi
say "run: imperium-api exited unexpectedly (status $status)" >&2
log_tail
exit 1
