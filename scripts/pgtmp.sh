#!/bin/sh
# scripts/pgtmp.sh - a throwaway PostgreSQL cluster for tests and `make run`
# (docs/design/issue20/CONTRACT.md): the one place that starts PostgreSQL.
#
#   pgtmp.sh start DIR PORT          initdb DIR/data if absent, then start it on
#                                    127.0.0.1:PORT only (socket dir DIR/sock,
#                                    fsync off); prints postgresql://imperium:PASSWORD@127.0.0.1:PORT/
#   pgtmp.sh createdb DIR PORT NAME  CREATE DATABASE NAME (template0, C collation);
#                                    prints the database's URL
#   pgtmp.sh stop DIR                stop it (-m fast), data kept; nothing to stop is fine
#   pgtmp.sh destroy DIR             stop it (-m immediate) and remove DIR; an absent DIR is fine
#
# The cluster has one superuser, `imperium`: over TCP (127.0.0.1 only) with a
# random password (DIR/password, 0600: any local user can reach the port, and
# a superuser can run programs as the server's user), without one on the
# socket inside DIR (0700).  initdb refuses to run as root, so as root the
# server runs as `postgres` (runuser) and DIR is made its own; otherwise as the
# caller.  DIR must be absent or made by this script for that user: as root on
# a shared /tmp, a DIR or a file in it that another user prepared (a symbolic
# link to elsewhere) is refused.  Any failure: exit 1 with a message on stderr.
set -eu

me="pgtmp"
die() { echo "$me: $*" >&2; exit 1; }
usage() {
    die "usage: pgtmp.sh start DIR PORT | createdb DIR PORT NAME | stop DIR | destroy DIR"
}

# The newest installed server's binaries.
pg_bindir() {
    d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    [ -x "$d/initdb" ] ||
        die "no PostgreSQL server in /usr/lib/postgresql/*/bin: apt-get install postgresql (scripts/packages.txt)"
    echo "$d"
}

# Run a server program as the cluster's owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

check_port() {
    case "$1" in
        ''|*[!0-9]*) die "port must be a number from 1 to 65535, not '$1'" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
        die "port must be a number from 1 to 65535, not '$1'"
    fi
}

check_dir() {
    [ -n "$1" ] || usage
    case "$1" in
        *[!A-Za-z0-9/._-]*) die "DIR may hold only letters, digits and / . _ -, not '$1'" ;;
        /*) ;;
        *) die "DIR must be an absolute path, not '$1'" ;;
    esac
}

# The user the server runs as.
owner() {
    if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi
}

# DIR absent, or a real directory of the server's user (or root's) with no
# symbolic link where this script writes or removes: what another user could
# have prepared to make root write or stop elsewhere is refused.
check_owned() {
    [ -e "$1" ] || [ -L "$1" ] || return 0
    [ ! -L "$1" ] && [ -d "$1" ] || die "$1 is not a directory (a symbolic link?): not using it"
    u=$(stat -c %U "$1")
    [ "$u" = "$(owner)" ] || [ "$u" = root ] || die "$1 belongs to $u, not to $(owner): not using it"
    for f in data sock initdb.log server.log password; do
        [ ! -L "$1/$f" ] || die "$1/$f is a symbolic link: not using $1"
    done
}

# DIR made 0700 and owned by the user the server runs as, who must reach it.
make_dir() {
    check_owned "$1"
    mkdir -p "$1" || die "cannot create $1"
    chmod 0700 "$1" || die "cannot chmod $1"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 ||
            die "user postgres is missing (the server cannot run as root): apt-get install postgresql"
        chown postgres: "$1" || die "cannot give $1 to user postgres"
        runuser -u postgres -- test -w "$1" ||
            die "user postgres cannot reach $1: a directory above it is closed to it (use one under /tmp)"
    fi
}

running() {
    check_owned "$1"
    [ -f "$1/data/PG_VERSION" ] && as_owner "$(pg_bindir)/pg_ctl" -D "$1/data" status >/dev/null 2>&1
}

cmd_start() {
    [ $# = 2 ] || usage
    dir=$1 port=$2
    check_dir "$dir"
    check_port "$port"
    bin=$(pg_bindir)
    if running "$dir"; then
        echo "postgresql://imperium:$(password "$dir")@127.0.0.1:$port/"
        return 0
    fi
    make_dir "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        # 48 hex digits, written by the server's user, 0600.
        od -An -N24 -tx1 /dev/urandom | tr -d ' \n' |
            as_owner sh -c 'umask 077 && cat >"$1"' sh "$dir/password" ||
            die "cannot write $dir/password"
        as_owner "$bin/initdb" -D "$dir/data" -U imperium --auth-local=trust \
            --auth-host=scram-sha-256 --pwfile="$dir/password" --locale=C -E UTF8 \
            --no-sync >"$dir/initdb.log" 2>&1 ||
            die "initdb of $dir/data failed: $(tail -n 5 "$dir/initdb.log")"
    fi
    as_owner mkdir -p "$dir/sock" || die "cannot create $dir/sock"
    # fsync off: a throwaway cluster, speed over durability.  300 connections:
    # every imperium-api instance holds one per pool slot plus a listener.
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
            -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
            start >/dev/null 2>&1; then
        die "PostgreSQL did not start on 127.0.0.1:$port (is the port taken?): $(tail -n 5 "$dir/server.log" 2>/dev/null)"
    fi
    echo "postgresql://imperium:$(password "$dir")@127.0.0.1:$port/"
}

# The superuser's password (hex: nothing to escape in a URL).
password() {
    pw=$(as_owner cat "$1/password") || die "cannot read $1/password"
    case "$pw" in
        ''|*[!0-9a-f]*) die "$1/password is not what pgtmp.sh wrote" ;;
    esac
    echo "$pw"
}

cmd_createdb() {
    [ $# = 3 ] || usage
    dir=$1 port=$2 name=$3
    check_dir "$dir"
    check_port "$port"
    case "$name" in
        ''|[!a-z_]*|*[!a-z0-9_]*) die "database name must be lower-case letters, digits and _, not '$name'" ;;
    esac
    running "$dir" || die "no cluster is running in $dir (pgtmp.sh start $dir $port first)"
    out=$(as_owner "$(pg_bindir)/psql" -X -q -h "$dir/sock" -p "$port" -U imperium -d postgres \
            -v ON_ERROR_STOP=1 \
            -c "CREATE DATABASE $name TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'" 2>&1) ||
        die "CREATE DATABASE $name on port $port failed: $out"
    echo "postgresql://imperium:$(password "$dir")@127.0.0.1:$port/$name?sslmode=disable&gssencmode=disable"
}

cmd_stop() {
    [ $# = 1 ] || usage
    check_dir "$1"
    running "$1" || return 0
    as_owner "$(pg_bindir)/pg_ctl" -D "$1/data" -m fast -w -t 30 stop >/dev/null ||
        die "PostgreSQL in $1 did not stop"
}

cmd_destroy() {
    [ $# = 1 ] || usage
    dir=$1
    check_dir "$dir"
    [ -e "$dir" ] || [ -L "$dir" ] || return 0
    check_owned "$dir"
    # Remove only a directory this script made: a typo must not rm -rf a home.
    for f in "$dir"/* "$dir"/.[!.]*; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        case "${f##*/}" in
            data|sock|initdb.log|server.log|password) ;;
            *) die "$dir holds ${f##*/}, which pgtmp.sh did not make: not removing it" ;;
        esac
    done
    if running "$dir"; then
        as_owner "$(pg_bindir)/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null ||
            die "PostgreSQL in $dir did not stop"
    fi
    rm -rf "$dir" || die "cannot remove $dir"
}

[ $# -ge 1 ] || usage
verb=$1
shift
case "$verb" in
    start) cmd_start "$@" ;;
    createdb) cmd_createdb "$@" ;;
    stop) cmd_stop "$@" ;;
    destroy) cmd_destroy "$@" ;;
    *) usage ;;
esac
