#!/bin/sh
# Install the Debian packages listed in scripts/packages.txt that are missing.
# Runs apt-get only when something is missing, so a second run is instant.
set -eu
here=$(dirname "$0")
missing=""
for p in $(grep -v '^#' "$here/packages.txt"); do
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
