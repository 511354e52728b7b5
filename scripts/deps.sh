#!/bin/sh
# Install the Debian packages listed in a file (one a line, # comments) that
# are missing: scripts/packages.txt by default (`make check`, `make run`),
# or the list given as the first argument (`make bench`: bench/packages.txt).
# Runs apt-get only when something is missing, so a second run is instant.
set -eu
here=$(dirname "$0")
list=${1:-$here/packages.txt}
[ -r "$list" ] || { echo "deps: cannot read the package list $list" >&2; exit 1; }
missing=""
for p in $(grep -v '^#' "$list"); do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages:$missing (run as root, or install them with apt-get)" >&2
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Packages such as openssh-server start their service when installed: the
# platform runs its own sshd, so keep the host's services as they are.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT
fi
apt-get update -q
apt-get install -y -q --no-install-recommends $missing
