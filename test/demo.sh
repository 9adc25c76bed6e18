#!/usr/bin/env bash
# `make demo`: run the images/hello module through containerd and the WasmEdge shim. It uses a
# private containerd in a temp dir, so no system containerd is needed or touched. Expects
# `cargo build --release --bins` to have run; `make demo` does that and enters the dev root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

image=docker.io/library/hello-wasm:demo
runtime=io.containerd.wasmedge.v1

step() { printf '\n==> %s\n' "$*"; }

for bin in containerd-shim-wasmedge-v1 wasmedge-image; do
  [ -x "target/release/$bin" ] || { echo "target/release/$bin is missing: run cargo build --release --bins" >&2; exit 1; }
done
# containerd looks up containerd-shim-wasmedge-v1 (for io.containerd.wasmedge.v1) on its PATH.
export PATH="$repo/target/release:$PATH"

work=$(mktemp -d /tmp/wasmedge-demo.XXXXXX)
sock=$work/containerd.sock
containerd_pid=
ctr() { timeout 60 ctr -a "$sock" -n demo "$@"; }

cleanup() {
  local status=$?
  set +e
  if [ -n "$containerd_pid" ]; then
    step "Stopping containerd"
    for id in $(ctr task ls -q 2>/dev/null); do ctr task delete -f "$id" >/dev/null 2>&1; done
    for id in $(ctr container ls -q 2>/dev/null); do ctr container delete "$id" >/dev/null 2>&1; done
    kill "$containerd_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$containerd_pid" 2>/dev/null
    wait "$containerd_pid" 2>/dev/null
    # Shims outlive containerd by design; ours are the ones given our socket.
    for cmdline in /proc/[0-9]*/cmdline; do
      if tr '\0' ' ' <"$cmdline" 2>/dev/null | grep -qF -- "$sock"; then
        pid=${cmdline#/proc/}; kill -KILL "${pid%/cmdline}" 2>/dev/null
      fi
    done
    if [ "$status" -ne 0 ]; then
      echo "--- containerd log after boot (tail) ---"
      sed -n '/successfully booted/,$p' "$work/containerd.log" | tail -n 30
    fi
  fi
  # Unmount anything left under the work dir (deepest first) so it can be removed.
  awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

step "Starting a private containerd in $work"
mkdir -p "$work/root" "$work/state"
# As devroot/containerd.toml, plus CRI and NRI off: the demo needs neither.
cat >"$work/config.toml" <<EOF
version = 3
root = "$work/root"
state = "$work/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.grpc.v1.cri",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"
EOF
containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 </dev/null &
containerd_pid=$!
for _ in $(seq 150); do
  ctr --connect-timeout 1s version >/dev/null 2>&1 && break
  kill -0 "$containerd_pid" 2>/dev/null || { echo "containerd exited" >&2; exit 1; }
  sleep 0.2
done
ctr version >/dev/null

step "Building images/hello for wasm32-wasip1"
(cd images/hello && cargo build --release --target wasm32-wasip1 --target-dir target)
wasm=images/hello/target/wasm32-wasip1/release/hello.wasm

step "Packing $image with wasmedge-image"
echo "This file was packed into the image next to /app.wasm." >"$work/greeting.txt"
wasmedge-image pack --module "$wasm" --tag "$image" --out "$work/hello.tar" --file "$work/greeting.txt:/data/greeting.txt"

step "Importing it into containerd"
ctr image import --platform wasi/wasm "$work/hello.tar"

run() { ctr run --rm --platform wasi/wasm --runtime "$runtime" "$image" "$@"; }

step "ctr run --rm --runtime $runtime $image demo"
run demo

# ctr replaces the whole argv with what follows the container id, entrypoint included.
step "ctr run ... demo-args /app.wasm echo Arguments reach the module too"
run demo-args /app.wasm echo Arguments reach the module too

step "ctr run ... demo-file /app.wasm cat /data/greeting.txt"
run demo-file /app.wasm cat /data/greeting.txt

step "Done"
