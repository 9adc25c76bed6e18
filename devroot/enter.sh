#!/usr/bin/env bash
# Run a command inside the dev root: a private mount namespace plus chroot, with the repo and the
# host's Rust toolchain bind-mounted at the same paths. Usage: devroot/enter.sh CMD [ARGS...]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/config.sh"
repo=$(cd "$here/.." && pwd)
[ -f "$DEVROOT/.stamp" ] || "$here/create.sh"

if [ "${1:-}" != "--inside-ns" ]; then
  exec unshare --mount --propagation private --fork "$0" --inside-ns "$@"
fi
shift

r=$DEVROOT
# runc needs / to be a mount point, and the cgroup mounts under /sys.
mount --bind "$r" "$r"
mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"
mount --rbind /dev "$r/dev"
mount -t tmpfs tmpfs "$r/run"
mount -t tmpfs tmpfs "$r/tmp"
mkdir -p "$r$repo" "$r/root/.rustup" "$r/root/.cargo"
mount --bind "$repo" "$r$repo"
mount --bind "${RUSTUP_HOME:-$HOME/.rustup}" "$r/root/.rustup"
mount --bind "${CARGO_HOME:-$HOME/.cargo}" "$r/root/.cargo"
cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
# The node roots of test/e2e_nodes.rs (test/nodes/create.sh), at the same path inside.
if [ -d "$NODES" ]; then
  mkdir -p "$r$NODES"
  mount --bind "$NODES" "$r$NODES"
fi

# pivot_root rather than chroot: the dev root becomes the root of this mount namespace, as a
# host's root is. `runc exec` (CRI ExecSync, docker exec) enters a container's mount namespace
# at that namespace's root, which is the container's rootfs only when runc's pivot_root started
# from a namespace root; under a chroot it lands on the host's root and finds nothing.
mkdir -p "$r/.oldroot"
cd "$r"
pivot_root . .oldroot
exec /usr/bin/env -i \
  HOME=/root TERM="${TERM:-dumb}" CI="${CI:-}" RUST_LOG="${RUST_LOG:-}" \
  PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  WASMEDGE_INCLUDE_DIR=/usr/include WASMEDGE_LIB_DIR=/usr/lib/x86_64-linux-gnu \
  IN_DEVROOT=1 \
  bash -c 'umount -l /.oldroot && cd "$0" && exec "$@"' "$repo" "$@"
