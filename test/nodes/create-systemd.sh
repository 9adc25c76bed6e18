#!/usr/bin/env bash
# Build (or reuse) the systemd node root: the bookworm node root of create.sh plus Debian's systemd
# and D-Bus (the system bus, as on every node systemd runs),
# which test/nodes/boot-systemd.sh boots as PID 1 for the systemd cgroup driver case of
# test/e2e_nodes.rs. A root of its own, so that the other cases run on nodes without systemd.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../devroot/config.sh"

"$here/create.sh" bookworm
base=$NODES/bookworm root=$NODES/bookworm-systemd
want=$( { cat "$here/create-systemd.sh" "$base/.stamp"; } | sha256sum | cut -c1-16)
if [ -f "$root/.stamp" ] && [ "$(cat "$root/.stamp")" = "$want" ]; then
  exit 0
fi
echo "nodes: building the bookworm root with systemd in $root" >&2
rm -rf "$root.tmp"
cp -a "$base" "$root.tmp"
printf '#!/bin/sh\nexit 101\n' >"$root.tmp/usr/sbin/policy-rc.d"
chmod 755 "$root.tmp/usr/sbin/policy-rc.d"
chroot "$root.tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive bash -c "
  set -e
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends systemd dbus
  apt-get clean
" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.tmp/usr/sbin/policy-rc.d"
echo "$want" >"$root.tmp/.stamp"
rm -rf "$root"
mv "$root.tmp" "$root"
echo "nodes: bookworm-systemd ready" >&2
