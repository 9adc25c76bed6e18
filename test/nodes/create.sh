#!/usr/bin/env bash
# Build (or reuse) a node root: `debootstrap --variant=minbase` of a Debian release with only that
# release's containerd and runc (test/nodes/packages), for the node matrix of test/e2e_nodes.rs.
# No Rust and no WasmEdge: the release tarball under test brings its own. Usage: create.sh NAME...
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../devroot/config.sh"
. "$here/../../devroot/mirror.sh"

build() {
  local name=$1 packages want root mirror
  packages=$(awk -v n="$name" '$1 == n {$1 = ""; print}' "$here/packages")
  [ -n "$packages" ] || { echo "nodes: no $name in $here/packages" >&2; exit 1; }
  root=$NODES/$name
  # The stamp hashes this recipe and the release's line: another release's change keeps this root.
  want=$( { cat "$here/create.sh" "$here/../../devroot/mirror.sh"; echo "$name $packages"; } | sha256sum | cut -c1-16)
  if [ -f "$root/.stamp" ] && [ "$(cat "$root/.stamp")" = "$want" ]; then
    return 0
  fi
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  mirror=$(mirror_uri)
  echo "nodes: building Debian $name root in $root" >&2
  mkdir -p "$NODES"
  rm -rf "$root.tmp"
  debootstrap --variant=minbase "$name" "$root.tmp" "$mirror" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; exit 1; }
  # sid's Release file on the mirror may be past its Valid-Until date.
  echo 'Acquire::Check-Valid-Until "false";' >"$root.tmp/etc/apt/apt.conf.d/99no-valid-until"
  echo "deb $mirror $name main" >"$root.tmp/etc/apt/sources.list"
  # A chroot has no init: package scripts must not try to start daemons.
  printf '#!/bin/sh\nexit 101\n' >"$root.tmp/usr/sbin/policy-rc.d"
  chmod 755 "$root.tmp/usr/sbin/policy-rc.d"
  chroot "$root.tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive bash -c "
    set -e
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $packages
    apt-get clean
  " >>"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
  rm -f "$root.tmp/usr/sbin/policy-rc.d"
  echo "$want" >"$root.tmp/.stamp"
  rm -rf "$root"
  mv "$root.tmp" "$root"
  echo "nodes: $name ready" >&2
}

[ $# -gt 0 ] || set -- bookworm trixie sid
for name in "$@"; do build "$name"; done
