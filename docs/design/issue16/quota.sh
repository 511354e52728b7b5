#!/bin/sh
# Prototype of the `quota -s` stand-in (kernel quotas absent): the usage and limit of the
# filesystem holding $HOME (the container's ext4 image), in quota(1)'s layout.
# The node would write it to /run/imperium/bin/quota with the limit from `storage` as $1 (MB).
set -eu
h=${HOME:?}
set -- "${1:-}" $(stat -f -c '%b %f %S %c %d' "$h")
lim_mb=$1 blocks=$2 free=$3 bsize=$4 files=$5 ffree=$6
used_kb=$(( (blocks - free) * bsize / 1024 ))
[ -n "$lim_mb" ] || lim_mb=$(( blocks * bsize / 1048576 ))
fmt() { if [ "$1" -ge 1048576 ]; then echo "$(( $1 / 1048576 ))G"; elif [ "$1" -ge 1024 ]; then echo "$(( $1 / 1024 ))M"; else echo "${1}K"; fi; }
u=$(id -u)
echo "Disk quotas for user $u (uid $u):"
printf '%15s %8s %8s %8s %7s %8s %8s %8s %7s\n' Filesystem space quota limit grace files quota limit grace
printf '%15s %8s %8s %8s %7s %8s %8s %8s %7s\n' "$h" "$(fmt $used_kb)" "$(fmt $(( lim_mb * 1024 )))" \
    "$(fmt $(( lim_mb * 1024 )))" "" "$(( files - ffree ))" 0 0 ""
