#!/bin/sh
# is a home mounted on the host after sshd's namespace was made visible inside it?
set -u
cd /tmp/research16
findmnt -n cd >/dev/null || { mount --bind cd cd; }
mount --make-shared cd
unshare -m --propagation slave sh -c 'mount --rbind /tmp/research16/cd /tmp/research16/sshdrun; echo $$ > /tmp/research16/ns.pid; exec sleep 5' &
sleep 0.5
NSPID=$(cat ns.pid)
./loopmount small.ext4 cd/30999 >/dev/null
echo "in the sshd-like namespace:"; nsenter -t "$NSPID" -m findmnt -n -o TARGET,SOURCE /tmp/research16/sshdrun/30999 || echo "NOT visible"
umount cd/30999
sleep 0.2
echo "after the host's umount:"; nsenter -t "$NSPID" -m findmnt -n /tmp/research16/sshdrun/30999 || echo "gone there too"
wait
umount cd
