#!/bin/sh
# scripts/run.sh - the `make run` demo: a fresh imperium-api on 127.0.0.1,
# seeded through the admin CLI with the quickstart's customer `kratos`, and
# (as root) an imperium-node daemon for the server `fooserver`, so the
# quickstart's `distro` + `ssh_keys` calls really start container 30001.
# Then a short guide.  Stays in the foreground until Ctrl-C, which stops the
# node daemon, then every container (`imperium-node stop-all`), then the API.
#
# Environment:
#   IMPERIUM_PORT     TCP port (default 8080)
#   IMPERIUM_RUN_DIR  state directory, wiped on each run (default <repo>/.run;
#                     keep it out of /tmp: inside a container /tmp is the home's).
#                     It is made 0700: it holds the database, the admin token
#                     and the node's secret, and a container of the host distro
#                     sees the host's / (read-only) with its uid, which may
#                     not even look into a root-only directory
#   IMPERIUM_BIN_DIR  where imperium-api, imperium and imperium-node are
#                     (default <repo>/build)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
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

case $port in
    '' | *[!0-9]*) die "IMPERIUM_PORT must be a port number, not '$port'" ;;
esac
for b in "$api_bin" "$cli_bin" "$node_bin"; do
    [ -x "$b" ] || die "$b is missing: build it first (make all)"
done

# A fresh state directory.  Never wipe a directory this script did not make.
if [ -d "$run_dir" ] && [ -n "$(ls -A "$run_dir")" ] && [ ! -e "$run_dir/$marker" ]; then
    die "$run_dir exists and was not made by run.sh: refusing to wipe it"
fi
# Containers of an earlier run that was not stopped cleanly: stop them
# before their homes go (best effort; refused while that run's daemon lives).
if [ -f "$run_dir/imperium-node.conf" ] && [ "$(id -u)" = 0 ]; then
    "$node_bin" stop-all -c "$run_dir/imperium-node.conf" >/dev/null 2>&1 || true
fi
rm -rf "$run_dir"
mkdir -p "$run_dir"
chmod 0700 "$run_dir" || die "cannot make $run_dir private (chmod 0700)"
run_dir=$(cd "$run_dir" && pwd)
: >"$run_dir/$marker"

conf=$run_dir/imperium-api.conf
log=$run_dir/api.log
token=$run_dir/admin.token
cat >"$conf" <<EOF
# imperium-api settings for the \`make run\` demo (written by scripts/run.sh)
listen = $host
port = $port
database = sqlite:$run_dir/imperium.db
prefix = /api
admin_prefix = /admin
admin_token_file = $token
log_level = info
EOF

node_conf=$run_dir/imperium-node.conf
node_log=$run_dir/node.log
node_dir=$run_dir/node
node_pid=
node_started=
router_port=${IMPERIUM_ROUTER_PORT:-8000}
ssh_port=${IMPERIUM_SSH_PORT:-2222}
sshd_dir=$run_dir/sshd
sshd_pid=
ssh_note="sshd is NOT running: it needs root (run make run as root)"

api_pid=
log_tail() {
    say "---- last lines of $log ----" >&2
    tail -n 30 "$log" >&2 || true
}
# Stop the node daemon (the containers keep running), then every container
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
    if [ -n "$node_pid" ]; then
        pid=$node_pid
        node_pid=
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" || status=$?
    fi
    "$node_bin" stop-all -c "$node_conf" >>"$node_log" 2>&1 || status=$?
    return "$status"
}
# Stop the API (if still running) and wait for it; returns its exit status.
stop_api() {
    [ -n "$api_pid" ] || return 0
    pid=$api_pid
    api_pid=
    kill -TERM "$pid" 2>/dev/null || true
    status=0
    wait "$pid" || status=$?
    return "$status"
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
    exit "$code"
}
on_exit() {
    stop_node || true
    stop_api || true
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
    unshare -m --propagation private sh -c "set -e
        mount -t overlay overlay -o lowerdir=/etc,upperdir=$sshd_dir/etc-upper,workdir=$sshd_dir/etc-work /etc
        mount -t tmpfs -o mode=0755 tmpfs /run
        mkdir -m 0755 /run/sshd /run/imperium /run/imperium/containers
        mount --bind $node_dir/containers /run/imperium/containers
        cp -p $sshd_dir/bin/imperium-enter /run/imperium/imperium-enter
        LD_LIBRARY_PATH=$sshd_dir/lib exec /usr/sbin/sshd -D -e -f $root/etc/ssh/sshd_config \
            -h $sshd_dir/host_key -p $ssh_port -o ListenAddress=$host -o PidFile=none" \
        >"$run_dir/sshd.log" 2>&1 &
    sshd_pid=$!
    ssh_note="sshd listens on $host:$ssh_port (log: $run_dir/sshd.log)"
}

"$api_bin" -c "$conf" >"$log" 2>&1 &
api_pid=$!

export IMPERIUM_API="http://$host:$port"
export IMPERIUM_ADMIN_TOKEN_FILE="$token"
unset IMPERIUM_ADMIN_TOKEN IMPERIUM_CONFIG
imp() { "$cli_bin" "$@"; }

# Wait until it answers (the token file exists before it listens).
tries=0
until [ -s "$token" ] && imp admin distro list --timeout 2 >/dev/null 2>&1; do
    kill -0 "$api_pid" 2>/dev/null || fail "imperium-api exited at start-up"
    tries=$((tries + 1))
    [ "$tries" -lt 200 ] || fail "imperium-api does not answer on $IMPERIUM_API"
    sleep 0.1
done

# The demo: the quickstart's customer on a shared server, and a customer
# owning a whole server.
imp admin customer add kratos --password deimos --company "God of war S.r.l." \
    --vat 01234567890 >/dev/null || fail "cannot create customer kratos"
imp admin customer add zeus --password olympus --company "Olympus S.p.a." \
    >/dev/null || fail "cannot create customer zeus"
# The answer shows the node's secret once: fooserver's node daemon uses it.
foo=$(imp admin server add fooserver --address 127.0.0.1 --memory 8000 --storage 200000 \
    --datacenter demo) || fail "cannot create server fooserver"
node_secret=$(printf '%s\n' "$foo" | sed -n 's/^node_secret:[[:space:]]*//p')
[ -n "$node_secret" ] || fail "no node_secret in the answer of 'imperium admin server add'"
imp admin server add zeusserver --address 127.0.0.2 --memory 16000 --storage 400000 \
    --owner zeus --datacenter demo >/dev/null || fail "cannot create server zeusserver"
imp admin distro add "Debian 12 bookworm (host)" --path / >/dev/null ||
    fail "cannot create the first distro"
imp admin distro add "Alpine Linux 3.20" --path /var/lib/imperium/distros/alpine-3.20 \
    >/dev/null || fail "cannot create the second distro"
uid=$(imp admin container add --customer kratos --server fooserver --name changeme \
    --memory 500 --storage 1000) || fail "cannot create kratos' container"
imp admin news add "Welcome to Imperium: this is the make run demo." --public >/dev/null ||
    fail "cannot publish the news"
# The supplier maps the quickstart's domain to kratos (no DNS check needed).
imp admin domain add mynewdomain.org --customer kratos >/dev/null ||
    fail "cannot map mynewdomain.org to kratos"

# The node of fooserver.  The first distro above is this machine's own root,
# read-only (distro_host_ok): the demo's only way to have a distro at once.
node_note=
if [ "$(id -u)" = 0 ]; then
    (
        umask 077
        cat >"$node_conf" <<NODECONF
# imperium-node settings for the \`make run\` demo (written by scripts/run.sh)
api_url = http://$host:$port
server_name = fooserver
secret = $node_secret
state_dir = $node_dir/state
containers_dir = $node_dir/containers
shortcuts = $root/etc/uwsgi/shortcuts.ini
cgroup_parent = imperium-run
distro_host_ok = true
router_http = $host:$router_port
log_level = info
NODECONF
    ) || fail "cannot write $node_conf"
    node_started=1
    "$node_bin" run -c "$node_conf" >"$node_log" 2>&1 &
    node_pid=$!
    tries=0
    until grep -q "node state received" "$node_log" 2>/dev/null; do
        if ! kill -0 "$node_pid" 2>/dev/null; then
            say "---- $node_log ----" >&2
            cat "$node_log" >&2 || true
            fail "imperium-node exited at start-up"
        fi
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || fail "imperium-node does not get its state from the API"
        sleep 0.1
    done
    node_note="imperium-node runs fooserver's containers and its HTTP router on $host:$router_port (log: $node_log)"
    start_sshd
else
    node_note="imperium-node is NOT running: containers need root (run make run as root)"
fi

base=http://$host:$port
k=http://kratos:deimos@$host:$port
k17=http://kratos:deimos17@$host:$port
cat <<EOF

imperium-api is running on $base (customer API $base/api, admin API $base/admin)
state: $run_dir (log: $log)

Seeded: customer kratos/deimos ("God of war S.r.l.") with container $uid on fooserver,
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

A customer owning a whole server creates its own containers, as zeus:
  curl -X POST -d '{"server":"127.0.0.2", "name":"hydra", "memory":1000, "storage":20000}' http://zeus:olympus@$host:$port/api/containers
  curl http://zeus:olympus@$host:$port/api/me/

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

# In the foreground until Ctrl-C (the trap) or the API's death.
status=0
wait "$api_pid" || status=$?
api_pid=
say "run: imperium-api exited unexpectedly (status $status)" >&2
log_tail
exit 1
