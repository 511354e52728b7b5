#!/bin/sh
# scripts/cluster.sh - the `make cluster` demo (root; docs/CLUSTER.md): a Legion
# of three nodes on one machine.
#
#   impc-world   a "world" network namespace: bridge br0 on 203.0.113.1/24
#                (TEST-NET-3), where imperium-api listens (203.0.113.1:8080)
#                and where you curl from
#   impc-n1..3   one namespace per node, uplink world0 = 203.0.113.2..4/24,
#                each running imperium-node (router on 0.0.0.0:80 and :443,
#                uplink = world0, nat = off) for the servers n1..n3
#
# The admin CLI makes the customer kratos, the domain app.example.org, the
# legion `demo` (floating address 203.0.113.100, quorum 2, a random key) and
# a container per node whose vassal says `cluster-domain = app.example.org`
# and answers with its node's name.  Then a guide: curl the floating address
# from the world, see who holds it, kill the Lord, watch it move.  In the
# foreground until Ctrl-C: the trap stops the node daemons, their containers
# (stop-all) and the API, and deletes the namespaces, also after a failure.
#
# Network safety: everything lives in the namespaces above; nothing is made
# in this machine's own network namespace.
#
# Environment:
#   IMPERIUM_BIN_DIR      where imperium-api, imperium and imperium-node are
#                         (default <repo>/build)
#   IMPERIUM_CLUSTER_DIR  state directory, wiped on each run (default
#                         <repo>/.cluster; made 0700: it holds the database,
#                         the admin token and the nodes' secrets)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/demo-api.sh"
run_dir=${IMPERIUM_CLUSTER_DIR:-$root/.cluster}
bin_dir=${IMPERIUM_BIN_DIR:-$root/build}
api_bin=$bin_dir/imperium-api
cli_bin=$bin_dir/imperium
node_bin=$bin_dir/imperium-node
marker=.imperium-cluster
world=impc-world
net=203.0.113
api_host=$net.1
api_port=8080
floating=$net.100
domain=app.example.org
nodes="1 2 3"

say() { printf '%s\n' "$*"; }
die() { say "cluster: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, containers): sudo make cluster"
for b in "$api_bin" "$cli_bin" "$node_bin"; do
    [ -x "$b" ] || die "$b is missing: build it first (make all)"
done
for t in ip nsenter curl ssh-keygen; do
    command -v "$t" >/dev/null || die "$t is missing"
done

# in_ns NS CMD...: CMD with only its network namespace changed (mounts and
# cgroups stay this machine's, as the nodes need; `ip netns exec` would also
# remount /sys).
in_ns() {
    ns=$1
    shift
    nsenter --net="/run/netns/$ns" "$@"
}
ns_exists() { [ -e "/run/netns/$1" ]; }
node_dir() { printf '%s/n%s' "$run_dir" "$1"; }

# stop_pidfile FILE: TERM to the pid FILE names (a node daemon started by
# revive too: not this shell's child), up to 15 s for it to go, then KILL.
stop_pidfile() {
    [ -f "$1" ] || return 0
    pid=$(cat "$1")
    kill -TERM "$pid" 2>/dev/null || true
    tries=0
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 150 ]; do
        tries=$((tries + 1))
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

# Everything this run (or a killed earlier one in the same directory) made:
# the node daemons, then each node's router and containers (stop-all, inside
# its namespace), the API, the namespaces.  Safe to call twice.
cleanup() {
    [ -e "$run_dir/$marker" ] || return 0
    for k in $nodes; do
        stop_pidfile "$(node_dir "$k")/node.pid"
    done
    for k in $nodes; do
        conf=$(node_dir "$k")/node.conf
        [ -f "$conf" ] && ns_exists "impc-n$k" || continue
        # A home can stay busy for a moment after its container stopped
        # (stop-all then refuses to unmount the containers directory): again.
        tries=0
        until in_ns "impc-n$k" "$node_bin" stop-all -c "$conf" >>"$(node_dir "$k")/node.log" 2>&1; do
            tries=$((tries + 1))
            if [ "$tries" -ge 3 ]; then
                say "cluster: stop-all of n$k failed (see $(node_dir "$k")/node.log)" >&2
                break
            fi
            sleep 2
        done
    done
    stop_pidfile "$run_dir/api.pid"
    # Only the namespaces this script made (listed as it made them).
    if [ -f "$run_dir/namespaces" ]; then
        for ns in $(cat "$run_dir/namespaces"); do
            ! ns_exists "$ns" || ip netns del "$ns" 2>/dev/null ||
                say "cluster: cannot delete namespace $ns" >&2
        done
        rm -f "$run_dir/namespaces"
    fi
}

# A fresh state directory.  Never wipe one this script did not make; an
# earlier run killed without its trap is cleaned up first.
if [ -d "$run_dir" ] && [ -n "$(ls -A "$run_dir")" ]; then
    [ -e "$run_dir/$marker" ] || die "$run_dir exists and was not made by cluster.sh: refusing to wipe it"
    say "cluster: cleaning up an earlier run in $run_dir"
    cleanup
fi
for ns in $world impc-n1 impc-n2 impc-n3; do
    ! ns_exists "$ns" || die "network namespace $ns exists and is not this run's: delete it (ip netns del $ns)"
done
rm -rf "$run_dir"
mkdir -p "$run_dir"
chmod 0700 "$run_dir" || die "cannot make $run_dir private (chmod 0700)"
run_dir=$(cd "$run_dir" && pwd)
: >"$run_dir/$marker"

on_signal() {
    trap - INT TERM
    say ""
    say "cluster: stopping the nodes, their containers and the API; deleting the namespaces"
    exit 0
}
on_exit() {
    status=$?
    trap - EXIT INT TERM
    cleanup
    exit "$status"
}
trap on_signal INT TERM
trap on_exit EXIT
fail() {
    say "cluster: $*" >&2
    for f in "$run_dir/api.log" "$run_dir"/n*/node.log; do
        [ -f "$f" ] || continue
        say "---- last lines of $f ----" >&2
        tail -n 15 "$f" >&2 || true
    done
    exit 1
}

# ---- the namespaces ---------------------------------------------------------
add_ns() {
    ip netns add "$1" || fail "cannot create network namespace $1"
    echo "$1" >>"$run_dir/namespaces"
    ip -n "$1" link set lo up || fail "cannot bring lo up in $1"
}
add_ns "$world"
ip -n "$world" link add br0 type bridge &&
    ip -n "$world" addr add "$api_host/24" dev br0 &&
    ip -n "$world" link set br0 up || fail "cannot make the world's bridge"
for k in $nodes; do
    ns=impc-n$k
    add_ns "$ns"
    # Made in the world, its peer moved straight into the node's namespace
    # (never in this machine's own namespace).
    ip -n "$world" link add "w$k" type veth peer name world0 netns "$ns" &&
        ip -n "$world" link set "w$k" master br0 up &&
        ip -n "$ns" addr add "$net.$((k + 1))/24" dev world0 &&
        ip -n "$ns" link set world0 up &&
        ip -n "$ns" route add default via "$api_host" || fail "cannot plug $ns into the world"
done

# ---- the API, in the world ---------------------------------------------------
token=$run_dir/admin.token
write_api_conf "$run_dir/imperium-api.conf" "$api_host" "$api_port" "$run_dir" scripts/cluster.sh
in_ns "$world" "$api_bin" -c "$run_dir/imperium-api.conf" >"$run_dir/api.log" 2>&1 &
echo $! >"$run_dir/api.pid"

export IMPERIUM_API="http://$api_host:$api_port"
export IMPERIUM_ADMIN_TOKEN_FILE="$token"
unset IMPERIUM_ADMIN_TOKEN IMPERIUM_CONFIG IMPERIUM_USER IMPERIUM_PASSWORD
imp() { in_ns "$world" "$cli_bin" "$@"; }
kratos() { imp call "$@" --user kratos --password deimos --json; }

tries=0
until [ -s "$token" ] && imp admin distro list --timeout 2 >/dev/null 2>&1; do
    kill -0 "$(cat "$run_dir/api.pid")" 2>/dev/null || fail "imperium-api exited at start-up"
    tries=$((tries + 1))
    [ "$tries" -lt 200 ] || fail "imperium-api does not answer on $IMPERIUM_API"
    sleep 0.1
done

# ---- the supplier's records --------------------------------------------------
imp admin customer add kratos --password deimos --company "God of war S.r.l." >/dev/null ||
    fail "cannot create customer kratos"
imp admin domain add "$domain" --customer kratos >/dev/null || fail "cannot map $domain to kratos"
imp admin distro add "Debian 12 bookworm (host)" --path / >/dev/null ||
    fail "cannot create the distro"
for k in $nodes; do
    out=$(imp admin server add "n$k" --address "$net.$((k + 1))" --memory 8000 \
        --storage 200000 --datacenter cluster-demo) || fail "cannot create server n$k"
    secret=$(printf '%s\n' "$out" | sed -n 's/^node_secret:[[:space:]]*//p')
    [ -n "$secret" ] || fail "no node_secret in the answer of 'imperium admin server add n$k'"
    d=$(node_dir "$k")
    mkdir -p "$d"
    (
        umask 077
        cat >"$d/node.conf" <<EOF
# imperium-node settings for n$k of the \`make cluster\` demo (written by scripts/cluster.sh)
api_url = $IMPERIUM_API
server_name = n$k
secret = $secret
state_dir = $d/state
containers_dir = $d/containers
shortcuts = $root/etc/uwsgi/shortcuts.ini
cgroup_parent = imperium-cluster-n$k
distro_host_ok = true
router_http = 0.0.0.0:80
router_https = 0.0.0.0:443
# The floating address goes on this interface when this node is the Lord.
uplink = world0
nat = off
log_level = info
EOF
    ) || fail "cannot write $d/node.conf"
done
# The legion's secret: random, known only to the API and its members.
legion_key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
imp admin legion add demo --address "$floating" --key "$legion_key" --quorum 2 \
    --node n1 --node n2 --node n3 >/dev/null || fail "cannot create the legion"

# ---- the nodes ---------------------------------------------------------------
# start_node K: n$K's daemon in its namespace (detached from this shell's
# job control, so that revive can start it the same way), waited for until
# it has its first state.
cat >"$run_dir/start-node" <<EOF
#!/bin/sh
# start-node K: n\$K's imperium-node in impc-n\$K (written by scripts/cluster.sh)
set -eu
d=$run_dir/n\$1
offset=\$(cat "\$d/node.log" 2>/dev/null | wc -c)
nsenter --net=/run/netns/impc-n\$1 $node_bin run -c "\$d/node.conf" </dev/null >>"\$d/node.log" 2>&1 &
echo \$! >"\$d/node.pid"
tries=0
until tail -c +\$((offset + 1)) "\$d/node.log" | grep -q "node state received"; do
    kill -0 "\$(cat "\$d/node.pid")" 2>/dev/null || { echo "imperium-node n\$1 exited (see \$d/node.log)" >&2; exit 1; }
    tries=\$((tries + 1))
    [ "\$tries" -lt 150 ] || { echo "imperium-node n\$1 gets no state (see \$d/node.log)" >&2; exit 1; }
    sleep 0.1
done
EOF
chmod 0700 "$run_dir/start-node"
for k in $nodes; do
    "$run_dir/start-node" "$k" || fail "cannot start the node of n$k"
done

# ---- a container per node, its vassal in the cluster --------------------------
ssh-keygen -q -t ed25519 -N '' -C cluster-demo -f "$run_dir/ssh_key" </dev/null ||
    fail "cannot make an ssh key"
pubkey=$(cat "$run_dir/ssh_key.pub")
uids=
for k in $nodes; do
    uid=$(imp admin container add --customer kratos --server "n$k" --name "app$k" \
        --memory 300 --storage 1000) || fail "cannot create kratos' container on n$k"
    uids="$uids $uid"
    kratos POST "/containers/$uid" '{"distro": 1}' >/dev/null || fail "cannot give $uid a distro"
    kratos POST "/containers/$uid" "{\"ssh_keys\": [\"$pubkey\"]}" >/dev/null ||
        fail "cannot give $uid an ssh key"
done
set -- $uids
k=0
for uid in "$@"; do
    k=$((k + 1))
    home=$(node_dir "$k")/containers/$uid
    tries=0
    until grep -qs "starting uWSGI Emperor" "$home/logs/emperor.log"; do
        tries=$((tries + 1))
        [ "$tries" -lt 300 ] || fail "container $uid on n$k does not start"
        sleep 0.1
    done
    printf 'NODE = "n%s"\nUID = %s\n\ndef application(environ, start_response):\n    start_response("200 OK", [("Content-Type", "text/plain")])\n    return [("Hello from %%s (container %%s)\\n" %% (NODE, UID)).encode()]\n' \
        "$k" "$uid" >"$home/app.py"
    printf '[uwsgi]\nplugin = 0:python\nwsgi-file = $(HOME)/app.py\ncluster-domain = %s\n' \
        "$domain" >"$home/vassals/.app.ini.tmp"
    chown "$uid:$uid" "$home/app.py" "$home/vassals/.app.ini.tmp"
    mv "$home/vassals/.app.ini.tmp" "$home/vassals/app.ini"
done

# get URL [curl options]: one answer's body from the world ("" on failure).
get() {
    url=$1
    shift
    in_ns "$world" curl -s -m 2 -H "Host: $domain" "$@" "$url" 2>/dev/null || true
}
# Each node serves its own vassal (the plain `domain` behaviour).
for k in $nodes; do
    tries=0
    until get "http://$net.$((k + 1))/" | grep -q "from n$k"; do
        tries=$((tries + 1))
        [ "$tries" -lt 300 ] || fail "n$k's router does not serve $domain from its own vassal"
        sleep 0.1
    done
done
# The Lord: the node whose uplink holds the floating address.
lord() {
    for k in $nodes; do
        if ip -n "impc-n$k" -br addr show dev world0 2>/dev/null | grep " $floating/" |
            grep -q " UP "; then
            printf 'n%s' "$k"
        fi
    done
}
tries=0
until [ -n "$(lord)" ] && get "http://$floating/" | grep -q "Hello from"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 300 ]; then
        say "cluster: after 30 s no node answers on $floating (holding it: '$(lord)');" \
            "see the nodes' logs: $run_dir/n*/node.log" >&2
        break
    fi
    sleep 0.1
done

# ---- helper scripts for the guide --------------------------------------------
cat >"$run_dir/kill-lord" <<EOF
#!/bin/sh
# kill-lord: the Lord dies as a machine does: kill -9 of every process in its
# network namespace (its imperium-node, router and legion member; its
# containers have namespaces of their own and live on), then its uplink down.
for k in $nodes; do
    if ip -n impc-n\$k -br addr show dev world0 2>/dev/null | grep " $floating/" | grep -q " UP "; then
        pids=\$(ip netns pids impc-n\$k | tr '\n' ' ')
        echo "\$(date +%T.%N | cut -c1-12) killing n\$k (the Lord): kill -9 \$pids; world0 down"
        [ -z "\$pids" ] || kill -9 \$pids
        ip -n impc-n\$k link set world0 down
        exit 0
    fi
done
echo "no node holds $floating" >&2
exit 1
EOF
cat >"$run_dir/revive" <<EOF
#!/bin/sh
# revive K: n\$K comes back as after a reboot: its imperium-node starts
# again (it adopts its containers and drops the floating address the killed
# Lord left on its uplink), then its uplink comes up; it joins the legion
# as its youngest member and does not take the address back.
set -eu
case "\${1:-}" in 1|2|3) ;; *) echo "usage: \$0 1|2|3" >&2; exit 2 ;; esac
$run_dir/start-node "\$1"
tries=0
while ip -n impc-n\$1 -br addr show dev world0 | grep -q " $floating/"; do
    tries=\$((tries + 1))
    [ "\$tries" -lt 100 ] || { echo "n\$1 still holds $floating" >&2; exit 1; }
    sleep 0.1
done
ip -n impc-n\$1 link set world0 up
EOF
cat >"$run_dir/watch-lord" <<EOF
#!/bin/sh
# watch-lord: twice a second, who holds $floating and who answers on it.
while :; do
    holder=
    for k in $nodes; do
        line=\$(ip -n impc-n\$k -br addr show dev world0 2>/dev/null | grep " $floating/") || continue
        case "\$line" in
            *" UP "*) holder="\$holder n\$k" ;;
            *) holder="\$holder (n\$k: link down)" ;;
        esac
    done
    body=\$(nsenter --net=/run/netns/$world curl -s -m 1 -H 'Host: $domain' http://$floating/ 2>/dev/null) || body="(no answer)"
    echo "\$(date +%T.%N | cut -c1-12)  holder:\${holder:- none}  answer: \$body"
    sleep 0.5
done
EOF
chmod 0700 "$run_dir/kill-lord" "$run_dir/revive" "$run_dir/watch-lord"

holder=$(lord)
[ -n "$holder" ] || holder="nobody yet (see the nodes' logs)"
w="ip netns exec $world"
cat <<EOF

make cluster: a Legion of three nodes (docs/CLUSTER.md)
state: $run_dir (API log: $run_dir/api.log; nodes: $run_dir/n1..3/node.log)

  namespace   address          what
  $world  $api_host      bridge br0; imperium-api on $IMPERIUM_API; you, curling
  impc-n1     $net.2      imperium-node for server n1 (container $1)
  impc-n2     $net.3      imperium-node for server n2 (container $2)
  impc-n3     $net.4      imperium-node for server n3 (container $3)

Legion "demo": floating address $floating, quorum 2, members n1 n2 n3;
the Lord now: $holder.
Each container runs a vassal with "cluster-domain = $domain" answering its node's name.

Requests to the floating address, balanced by the Lord over the vassals of all three nodes:
  for i in 1 2 3 4 5 6; do $w curl -s -H 'Host: $domain' http://$floating/; done
Each node still serves its own vassal on its own address:
  $w curl -s -H 'Host: $domain' http://$net.3/
Who holds the floating address (the Lord):
  for k in 1 2 3; do ip -n impc-n\$k -br addr show world0; done
  grep -h 'Lord' $run_dir/n*/node.log
The customer's view (legion_address):
  $w $cli_bin call GET /containers/$1 --api $IMPERIUM_API --user kratos --password deimos
The supplier's:
  $w $cli_bin admin legion list --api $IMPERIUM_API --token-file $token

Failover: in a second terminal watch the holder and the answers, twice a second:
  $run_dir/watch-lord
then kill the Lord as a machine dies (kill -9 of every process in its namespace: its
node daemon, router and legion member; then its uplink down):
  $run_dir/kill-lord
Another node takes $floating and answers within a few seconds; the dead node's
vassal leaves the pool.  Bring it back (it joins as the youngest member: the Lord stays):
  $run_dir/revive K        (K = the node killed: 1, 2 or 3)
Only the node daemon (its legion member announces its death: ~1 s):
  kill -9 \$(cat $run_dir/nK/node.pid)

HTTPS through the floating address (ssl-cluster-domain: the key travels to the other
members only encrypted with the legion's secret), for the container on n1:
  h=$run_dir/n1/containers/$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=$domain -addext subjectAltName=DNS:$domain -keyout \$h/app.key -out \$h/app.crt
  printf '[uwsgi]\\nplugin = 0:python\\nwsgi-file = \$(HOME)/app.py\\nssl-cluster-domain = $domain \$(HOME)/app.key \$(HOME)/app.crt\\n' > \$h/vassals/app.ini
  chown $1:$1 \$h/app.key \$h/app.crt \$h/vassals/app.ini
  $w curl -s --resolve $domain:443:$floating --cacert \$h/app.crt https://$domain/

Press Ctrl-C to stop: the nodes, their containers and the API stop, the namespaces go.
EOF

# In the foreground until Ctrl-C (the trap) or the API's death.
api_pid=$(cat "$run_dir/api.pid")
while kill -0 "$api_pid" 2>/dev/null; do
    sleep 1
done
fail "imperium-api exited unexpectedly"
