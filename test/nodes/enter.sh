#!/usr/bin/env bash
# Run a command on a node root (test/nodes/create.sh) as on that node: a private mount namespace
# whose root is ROOT, with proc, sys (the host's cgroups) and dev, and SHARE bind-mounted at the
# same path inside: what the test and the node both see (the tarball, images, containerd's socket
# and root). ROOT is a test's writable overlay on a cached root: its /run and /tmp are shared by
# every command on the node (ctr makes the FIFOs the shim opens), and thrown away with it.
# Usage: test/nodes/enter.sh ROOT SHARE CMD...
set -euo pipefail

if [ "${1:-}" != "--inside-ns" ]; then
  # No --fork: CMD ends up as this very process, so the caller can signal it and wait for it.
  exec unshare --mount --propagation private "$0" --inside-ns "$@"
fi
root=$2 share=$3
shift 3

mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mkdir -p "$root$share" "$root/.oldroot"
mount --bind "$share" "$root$share"
# pivot_root, not chroot, as in devroot/enter.sh: runc exec enters a container's mount namespace
# at that namespace's root.
# The dev root's util-linux (sid) has no pivot_root; its busybox-static has.
cd "$root"
if command -v pivot_root >/dev/null; then pivot_root . .oldroot; else busybox pivot_root . .oldroot; fi
exec /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /bin/sh -c 'umount -l /.oldroot && cd / && exec "$@"' sh "$@"
