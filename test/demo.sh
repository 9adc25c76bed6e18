#!/usr/bin/env bash
# `make demo`: run the images/hello module through containerd and the WasmEdge shim. It uses a
# private containerd in a temp dir (test/lib/containerd.sh), so no system containerd is needed or
# touched. Expects `cargo build --release --bins` to have run; `make demo` does that and enters the
# dev root.
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

. test/lib/containerd.sh
work=$(mktemp -d /tmp/wasmedge-demo.XXXXXX)

cleanup() {
  local status=$?
  set +e
  if [ -n "$containerd_pid" ]; then
    step "Stopping containerd"
    containerd_stop "$status"
  fi
  workdir_remove "$work"
  exit "$status"
}
trap cleanup EXIT

step "Starting a private containerd in $work"
containerd_start "$work" demo

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
