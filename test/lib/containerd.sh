# shellcheck shell=bash
# A private containerd in a temp dir, for test/demo.sh and bench/run.sh: no system containerd is
# needed or touched. Source this file, then:
#   containerd_start WORK NAMESPACE  start containerd with its root, state and socket under WORK;
#                                    sets containerd_sock and containerd_pid
#   ctr ARGS...                      ctr on that socket, in NAMESPACE, with a 60 s timeout
#   containerd_stop STATUS           delete tasks and containers, stop containerd and our shims;
#                                    prints the tail of containerd's log when STATUS is not 0
#   workdir_remove WORK              unmount whatever is left under WORK and remove it
containerd_sock=
containerd_ns=
containerd_log=
containerd_pid=

ctr() { timeout 60 ctr -a "$containerd_sock" -n "$containerd_ns" "$@"; }

containerd_start() {
  local work=$1
  containerd_ns=$2
  containerd_sock=$work/containerd.sock
  containerd_log=$work/containerd.log
  mkdir -p "$work/root" "$work/state"
  # As devroot/containerd.toml, plus CRI and NRI off: neither is needed here.
  cat >"$work/config.toml" <<TOML
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
  address = "$containerd_sock"

[ttrpc]
  address = "$containerd_sock.ttrpc"
TOML
  containerd --config "$work/config.toml" >"$containerd_log" 2>&1 </dev/null &
  containerd_pid=$!
  for _ in $(seq 150); do
    ctr --connect-timeout 1s version >/dev/null 2>&1 && break
    kill -0 "$containerd_pid" 2>/dev/null || { echo "containerd exited" >&2; return 1; }
    sleep 0.2
  done
  ctr version >/dev/null
}

containerd_stop() {
  local status=${1:-0} id cmdline pid
  for id in $(ctr task ls -q 2>/dev/null); do ctr task delete -f "$id" >/dev/null 2>&1; done
  for id in $(ctr container ls -q 2>/dev/null); do ctr container delete "$id" >/dev/null 2>&1; done
  kill "$containerd_pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$containerd_pid" 2>/dev/null
  wait "$containerd_pid" 2>/dev/null
  # Shims outlive containerd by design; ours are the ones given our socket.
  for cmdline in /proc/[0-9]*/cmdline; do
    if { tr '\0' ' ' <"$cmdline"; } 2>/dev/null | grep -qF -- "$containerd_sock"; then
      pid=${cmdline#/proc/}; kill -KILL "${pid%/cmdline}" 2>/dev/null
    fi
  done
  if [ "$status" -ne 0 ]; then
    echo "--- containerd log after boot (tail) ---"
    sed -n '/successfully booted/,$p' "$containerd_log" | tail -n 30
  fi
  containerd_pid=
}

workdir_remove() {
  local work=$1
  # Unmount anything left under the work dir (deepest first) so it can be removed.
  awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
  rm -rf "$work"
}
