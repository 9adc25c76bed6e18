#!/usr/bin/env bash
# `make demo-sandbox`: start the execute service (wasmedge-sandbox serve) on a private containerd
# (test/lib/containerd.sh) and run a Python and a JavaScript snippet through it with curl.
# Expects `cargo build --release --bins` and prepared toolchains (`make toolchains LANGS="python
# javascript"`); `make demo-sandbox` does both and enters the dev root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

for bin in containerd-shim-wasmedge-v1 wasmedge-image wasmedge-sandbox; do
  [ -x "target/release/$bin" ] || { echo "target/release/$bin is missing: run cargo build --release --bins" >&2; exit 1; }
done
# containerd (and the service's readiness check) find containerd-shim-wasmedge-v1 on PATH.
export PATH="$repo/target/release:$PATH"

. test/lib/containerd.sh
work=$(mktemp -d /tmp/wasmedge-sandbox-demo.XXXXXX)
service_pid=

cleanup() {
  local status=$?
  set +e
  if [ -n "$service_pid" ]; then
    step "Stopping the service"
    kill "$service_pid" 2>/dev/null
    wait "$service_pid" 2>/dev/null
    [ "$status" = 0 ] || tail -n 30 "$work/service.log"
  fi
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

port=${SANDBOX_PORT:-18080}
step "wasmedge-sandbox serve --listen 127.0.0.1:$port --address $containerd_sock"
wasmedge-sandbox serve --listen "127.0.0.1:$port" --address "$containerd_sock" --state-dir "$work/sandbox" \
  >"$work/service.log" 2>&1 &
service_pid=$!
for _ in $(seq 150); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$service_pid" 2>/dev/null || { cat "$work/service.log"; exit 1; }
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/readyz"; echo

execute() {
  printf '%s\n' "$1"
  curl -sS -X POST "http://127.0.0.1:$port/v1/execute" -H 'Content-Type: application/json' -d "$1"
  echo
}

step "Python (the first run of the interpreter may AOT-compile it: a minute or more)"
execute '{"language": "python", "code": "import sys\nprint(\"Hello from Python,\", sys.stdin.read())", "stdin": "through WasmEdge"}'

step "JavaScript, with args, env and an exit code"
execute '{"language": "javascript", "code": "console.log(`Hello from ${process.env.WHO}:`, process.argv.slice(2).join(\" \")); process.exit(3)", "args": ["one", "two"], "env": {"WHO": "QuickJS"}}'

step "An endless loop under a 1 s limit"
execute '{"language": "python", "code": "while True: pass", "limits": {"timeout_ms": 1000}}'

step "Done"
