#!/bin/sh
# Adds (or removes) the containerd runtime entry for the WasmEdge shim, idempotently.
#
#   containerd-config.sh add    [CONFIG]   # default /etc/containerd/config.toml
#   containerd-config.sh remove [CONFIG]
#
# The entry is a marked block at the end of the file, in the config's own format: version 3
# (containerd 2.x) or version 2 (containerd 1.7). A file that does not exist yet gets a version 3
# config (CONTAINERD_CONFIG_VERSION=2 for containerd 1.7). The old file is kept as
# CONFIG.bak-wasmedge-TIMESTAMP whenever it changes. containerd reads its config at start only:
# restart it afterwards (RESTART=1 runs `systemctl restart containerd`).
# POSIX sh + awk: it runs on a node, in make install and in the node-installer DaemonSet alike.
set -eu

action=${1:-}
config=${2:-/etc/containerd/config.toml}
runtime_name=${RUNTIME_HANDLER:-wasmedge}
begin="# BEGIN containerd-shim-wasmedge"
end="# END containerd-shim-wasmedge"

usage() { echo "usage: $0 add|remove [CONFIG]" >&2; exit 2; }

version_of() {
  if [ -s "$1" ]; then
    v=$(awk '/^[ \t]*version[ \t]*=/ { gsub(/[^0-9]/, "", $0); print; exit }' "$1")
    # No version line: containerd 1.x reads it as version 1, which it no longer documents.
    echo "${v:-1}"
  else
    echo "${CONTAINERD_CONFIG_VERSION:-3}"
  fi
}

block() {
  case "$1" in
    3) table="plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.$runtime_name" ;;
    2) table="plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.$runtime_name" ;;
    *) echo "$config: containerd config version $1 is not supported (2 or 3 are)" >&2; exit 1 ;;
  esac
  printf '%s\n[%s]\n  runtime_type = "io.containerd.wasmedge.v1"\n%s\n' "$begin" "$table" "$end"
}

# The file without our block, nor the blank line add puts before it.
without_block() {
  awk -v b="$begin" -v e="$end" '
    { line[NR] = $0 }
    END {
      n = 0
      for (i = 1; i <= NR; i++) {
        if (line[i] == b) { if (n > 0 && out[n] == "") n--; skip = 1; continue }
        if (skip) { if (line[i] == e) skip = 0; continue }
        out[++n] = line[i]
      }
      for (i = 1; i <= n; i++) print out[i]
    }
  ' "$1"
}

backup() {
  [ -e "$config" ] || return 0
  b="$config.bak-wasmedge-$(date +%Y%m%d%H%M%S)"
  while [ -e "$b" ]; do b="$b.1"; done
  cp -p "$config" "$b"
  echo "$config: the old file is $b"
}

write() { # content on stdin, replaces $config atomically
  tmp="$config.tmp-wasmedge.$$"
  cat >"$tmp"
  [ -e "$config" ] && chmod --reference="$config" "$tmp" 2>/dev/null || true
  mv "$tmp" "$config"
}

case "$action" in
  add)
    version=$(version_of "$config")
    wanted=$(block "$version")
    if [ -e "$config" ] && grep -qxF "$begin" "$config"; then
      current=$(awk -v b="$begin" -v e="$end" '$0 == b { p = 1 } p { print } $0 == e { p = 0 }' "$config")
      if [ "$current" = "$wanted" ]; then
        echo "$config: the wasmedge runtime entry is already there"
        exit 0
      fi
    fi
    mkdir -p "$(dirname "$config")"
    backup
    {
      if [ -s "$config" ]; then without_block "$config"; else echo "version = $version"; fi
      echo
      echo "$wanted"
    } | write
    echo "$config: added runtime handler '$runtime_name' (runtime_type io.containerd.wasmedge.v1, config version $version)"
    ;;
  remove)
    if [ ! -e "$config" ] || ! grep -qxF "$begin" "$config"; then
      echo "$config: no wasmedge runtime entry to remove"
      exit 0
    fi
    backup
    without_block "$config" | write
    echo "$config: removed runtime handler '$runtime_name'"
    ;;
  *) usage ;;
esac

if [ "${RESTART:-0}" = 1 ]; then
  systemctl restart containerd
fi
