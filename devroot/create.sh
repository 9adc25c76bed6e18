#!/usr/bin/env bash
# Build (or reuse) the Debian sid dev root that holds WasmEdge, containerd and runc.
# The host is Debian 12, whose glibc is too old for sid's packages, so tests run in a chroot.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/config.sh"

# The stamp records what the root was built from; a changed package list or config rebuilds it.
want=$(cat "$here/create.sh" "$here/config.sh" "$here/containerd.toml" | sha256sum | cut -c1-16)
if [ -f "$DEVROOT/.stamp" ] && [ "$(cat "$DEVROOT/.stamp")" = "$want" ]; then
  exit 0
fi

. "$here/mirror.sh"

# Runs a script in root $1 as apt needs it: /proc mounted (maintainer scripts such as
# systemd-tmpfiles need it) in a private mount namespace, and no service started by a package.
in_root() {
  mkdir -p "$1/usr/sbin" && printf '#!/bin/sh\nexit 101\n' >"$1/usr/sbin/policy-rc.d" && chmod 755 "$1/usr/sbin/policy-rc.d"
  unshare --mount --propagation private sh -c 'mount -t proc proc "$1/proc" && exec chroot "$1" /usr/bin/env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive bash -c "$2"' in_root "$1" "$2"
}

# A root that exists is brought up to date in place (packages added, config copied): rebuilding
# it would pull it from under the sessions that are using it.
if [ -f "$DEVROOT/.stamp" ]; then
  echo "devroot: updating $DEVROOT in place" >&2
  in_root "$DEVROOT" "
    set -e
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold $DEVROOT_PACKAGES
  " >>"$DEVROOT.log" 2>&1 || { tail -20 "$DEVROOT.log" >&2; exit 1; }
  cp "$here/containerd.toml" "$DEVROOT/etc/containerd/config.toml"
  echo "$want" >"$DEVROOT/.stamp"
  echo "devroot: ready" >&2
  exit 0
fi

command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }

mirror=$(mirror_uri)
echo "devroot: building Debian sid root in $DEVROOT" >&2
rm -rf "$DEVROOT.tmp"
mkdir -p "$(dirname "$DEVROOT")"
debootstrap --variant=minbase sid "$DEVROOT.tmp" "$mirror" >"$DEVROOT.log" 2>&1 \
  || { tail -20 "$DEVROOT.log" >&2; exit 1; }

r="$DEVROOT.tmp"
# The mirror's sid Release file may be past its Valid-Until date.
echo 'Acquire::Check-Valid-Until "false";' >"$r/etc/apt/apt.conf.d/99no-valid-until"
echo "deb $mirror sid main" >"$r/etc/apt/sources.list"
# Some mirrors are reached through a proxy with its own CA: cargo inside needs it too.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$r/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$r/usr/local/share/ca-certificates/"
fi
cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true

in_root "$r" "
  set -e
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold $DEVROOT_PACKAGES
  update-ca-certificates >/dev/null
" >>"$DEVROOT.log" 2>&1 || { tail -20 "$DEVROOT.log" >&2; exit 1; }

mkdir -p "$r/etc/containerd"
cp "$here/containerd.toml" "$r/etc/containerd/config.toml"
echo "$want" >"$r/.stamp"
rm -rf "$DEVROOT"
mv "$r" "$DEVROOT"
echo "devroot: ready" >&2
