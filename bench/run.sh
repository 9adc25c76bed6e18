#!/usr/bin/env bash
# `make bench`: build the workloads and images, start one private containerd (test/lib/containerd.sh)
# and run bench/bench.py against it. Expects `cargo build --release --bins` to have run; `make bench`
# does that and enters the dev root. Figures go to target/bench/results.json.
# BENCH_EXTRA_RUNTIME=io.containerd.foo.v1 (or an absolute path to a shim binary) adds a runtime,
# given the same wasm images as this shim.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=$repo/target/bench
wasm=wasm32-wasip1

step() { printf '\n==> %s\n' "$*" >&2; }

for bin in containerd-shim-wasmedge-v1 wasmedge-image wasmedge-sandbox; do
  [ -x "target/release/$bin" ] || { echo "target/release/$bin is missing: run cargo build --release --bins" >&2; exit 1; }
done
export PATH="$repo/target/release:$PATH"
mkdir -p "$out"

step "Building images/hello and images/primes (wasm and native)"
(cd images/hello && cargo build -q --release --target $wasm --target-dir target)
(cd images/primes && cargo build -q --release --target $wasm --target-dir target && cargo build -q --release --target-dir target)

if [ "${BENCH_EXECUTE:-1}" != 0 ]; then
  step "Preparing the execute section's toolchains (Python, JavaScript, Rust)"
  wasmedge-image toolchains python javascript rust >&2
fi

step "Packing the images"
wasmedge-image pack --module images/hello/target/$wasm/release/hello.wasm \
  --tag docker.io/library/hello-wasm:bench --out "$out/hello.tar"
# A fresh digest each run: the shim's first primes run is then a true AOT cache miss.
python3 bench/salt_wasm.py images/primes/target/$wasm/release/primes.wasm "$out/primes.wasm"
wasmedge-image pack --module "$out/primes.wasm" \
  --tag docker.io/library/primes-wasm:bench --out "$out/primes.tar"
python3 bench/busybox_image.py docker.io/library/busybox:bench "$out/busybox.tar" /bin/busybox

. test/lib/containerd.sh
work=$(mktemp -d /tmp/wasmedge-bench.XXXXXX)
cleanup() {
  local status=$?
  set +e
  [ -n "$containerd_pid" ] && containerd_stop "$status"
  workdir_remove "$work"
  exit "$status"
}
trap cleanup EXIT

step "Starting a private containerd in $work"
containerd_start "$work" bench
ctr image import --platform wasi/wasm "$out/hello.tar" >/dev/null
ctr image import --platform wasi/wasm "$out/primes.tar" >/dev/null
ctr image import "$out/busybox.tar" >/dev/null

python3 bench/bench.py --address "$containerd_sock" --namespace bench --work "$work" \
  --containerd-log "$containerd_log" --containerd-pid "$containerd_pid" --out "$out/results.json" \
  --hello-wasm images/hello/target/$wasm/release/hello.wasm --primes-wasm "$out/primes.wasm" \
  --primes-native images/primes/target/release/primes
