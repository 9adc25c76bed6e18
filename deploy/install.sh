#!/bin/sh
# Installs containerd-shim-wasmedge from an unpacked release tarball (this script's directory):
# the files under PREFIX, the binaries linked into BINDIR, the `wasmedge` runtime handler in
# containerd's config, and the execute service's systemd unit in UNITDIR (not enabled: it needs
# its API keys first). The one install path: `make install` and the node installer run it too.
#
#   ./install.sh [--prefix DIR] [--bindir DIR] [--config FILE] [--unitdir DIR] [--uninstall]
#
# Defaults: --prefix /opt/containerd-shim-wasmedge, --bindir /usr/local/bin,
# --config /etc/containerd/config.toml, --unitdir /etc/systemd/system. Idempotent. The config is backed up
# (FILE.bak-wasmedge-TIMESTAMP) whenever it changes. Its format follows the file's own `version`
# line, or for a new file the installed containerd: version 2 for 1.6/1.7, version 3 for 2.x.
# containerd reads its config at start only: restart it afterwards.
# POSIX sh with coreutils, grep and awk: a node has nothing more to offer.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/containerd-shim-wasmedge
bindir=/usr/local/bin
config=/etc/containerd/config.toml
unitdir=/etc/systemd/system
unit=wasmedge-sandbox.service
action=install
handler=wasmedge
binaries="containerd-shim-wasmedge-v1 containerd-wasmedge-init wasmedge-image wasmedge-sandbox"
begin="# BEGIN containerd-shim-wasmedge"
end="# END containerd-shim-wasmedge"

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 [--prefix DIR] [--bindir DIR] [--config FILE] [--unitdir DIR] [--uninstall]" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
    --bindir) [ $# -ge 2 ] || usage; bindir=$2; shift 2 ;;
    --config) [ $# -ge 2 ] || usage; config=$2; shift 2 ;;
    --unitdir) [ $# -ge 2 ] || usage; unitdir=$2; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument: $1" >&2; usage ;;
  esac
done
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path, got $prefix" ;; esac
case "$bindir" in /*) ;; *) die "--bindir must be an absolute path, got $bindir" ;; esac
case "$unitdir" in /*) ;; *) die "--unitdir must be an absolute path, got $unitdir" ;; esac

[ "$(id -u)" = 0 ] || die "must run as root (it writes $prefix, $bindir and $config)"
arch=$(uname -m)
[ "$arch" = x86_64 ] || die "this release is for x86_64; this machine is $arch"
command -v containerd >/dev/null 2>&1 || die "containerd is not installed (not on PATH): install it first"

# containerd's major version from `containerd --version`: "containerd github.com/containerd/containerd
# v1.7.24 SHA", or a distribution's "... 1.6.20~ds1 1.6.20~ds1-1+b1".
containerd_major() {
  containerd --version 2>/dev/null | awk '{
    for (i = 2; i <= NF; i++) if ($i ~ /^v?[0-9]+\.[0-9]+/) { sub(/^v/, "", $i); split($i, v, "."); print v[1]; exit }
  }'
}

# The config's format version: its own `version` line, else (a new file) the one containerd
# writes by default.
config_version() {
  if [ -s "$config" ]; then
    v=$(awk '/^[ \t]*version[ \t]*=/ { gsub(/[^0-9]/, "", $0); print; exit }' "$config")
    # No version line: containerd 1.x reads it as version 1, which it no longer documents.
    echo "${v:-1}"
  else
    case "$(containerd_major)" in
      1) echo 2 ;;
      2) echo 3 ;;
      *) die "cannot tell containerd's version from: $(containerd --version 2>&1 | head -1)" ;;
    esac
  fi
}

# The block for config version $1. containerd 1.x takes a version 2 file's runtimes instead of
# its default ones: without a `runc` entry there, its CRI plugin (default runtime runc) fails to
# load, so the block brings one when the rest of the file ($2: 1 if so) has none.
block() {
  case "$1" in
    3) runtimes="plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes" ;;
    2) runtimes="plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes" ;;
    *) die "$config: containerd config version $1 is not supported (2 or 3 are)" ;;
  esac
  printf '%s\n[%s.%s]\n  runtime_type = "io.containerd.wasmedge.v1"\n' "$begin" "$runtimes" "$handler"
  if [ "$1" = 2 ] && [ "${2:-0}" = 1 ]; then
    printf '\n[%s.runc]\n  runtime_type = "io.containerd.runc.v2"\n' "$runtimes"
  fi
  echo "$end"
}

# 1 when the config outside our block defines no runc runtime.
lacks_runc() {
  if [ -s "$config" ] && without_block | grep -q 'runtimes\.runc\]\|runtimes\."runc"\]'; then echo 0; else echo 1; fi
}

# The config without our block, nor the blank line added before it.
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
  ' "$config"
}

backup() {
  [ -e "$config" ] || return 0
  b="$config.bak-wasmedge-$(date +%Y%m%d%H%M%S)"
  while [ -e "$b" ]; do b="$b.1"; done
  cp -p "$config" "$b"
  echo "$config: the old file is $b"
}

write_config() { # content on stdin; replaces the config atomically, keeping its mode
  tmp="$config.tmp-wasmedge.$$"
  cat >"$tmp"
  if [ -e "$config" ]; then chmod "$(stat -c %a "$config")" "$tmp"; fi
  mv "$tmp" "$config"
}

add_entry() {
  version=$(config_version)
  major=$(containerd_major)
  if [ "$version" = 3 ] && [ "$major" = 1 ]; then
    die "$config is a version 3 config, which containerd $major.x cannot read"
  fi
  wanted=$(block "$version" "$(lacks_runc)")
  if [ -e "$config" ] && grep -qxF "$begin" "$config"; then
    current=$(awk -v b="$begin" -v e="$end" '$0 == b { p = 1 } p { print } $0 == e { p = 0 }' "$config")
    if [ "$current" = "$wanted" ]; then
      echo "$config: the $handler runtime entry is already there"
      return 0
    fi
  fi
  mkdir -p "$(dirname "$config")"
  backup
  {
    if [ -s "$config" ]; then without_block; else echo "version = $version"; fi
    echo
    echo "$wanted"
  } | write_config
  echo "$config: added runtime handler '$handler' (runtime_type io.containerd.wasmedge.v1, config version $version)"
}

remove_entry() {
  if [ ! -e "$config" ] || ! grep -qxF "$begin" "$config"; then
    echo "$config: no $handler runtime entry to remove"
    return 0
  fi
  backup
  without_block | write_config
  echo "$config: removed runtime handler '$handler'"
}

# The files go in beside the old ones and are renamed over them: a running shim or zygote keeps
# its binary, and a failed copy leaves the old install whole.
copy_files() {
  if [ "$(cd "$prefix" 2>/dev/null && pwd)" = "$here" ]; then
    echo "$prefix: installing from the prefix itself, nothing to copy"
    return 0
  fi
  for f in bin lib; do [ -d "$here/$f" ] || die "$here/$f is missing: run install.sh from the unpacked tarball"; done
  mkdir -p "$prefix"
  staging="$prefix/.new.$$"
  rm -rf "$staging"
  mkdir "$staging"
  cp -a "$here/bin" "$here/lib" "$here/install.sh" "$staging/"
  for f in VERSION README.md share; do [ -e "$here/$f" ] && cp -a "$here/$f" "$staging/"; done
  for f in bin lib install.sh VERSION README.md share; do
    [ -e "$staging/$f" ] || continue
    rm -rf "$prefix/$f.old"
    [ -e "$prefix/$f" ] && mv "$prefix/$f" "$prefix/$f.old"
    mv "$staging/$f" "$prefix/$f"
    rm -rf "$prefix/$f.old"
  done
  rmdir "$staging"
  echo "$prefix: installed $(cat "$prefix/VERSION" 2>/dev/null || echo files)"
}

link_binaries() {
  mkdir -p "$bindir"
  for b in $binaries; do
    ln -sfn "$prefix/bin/$b" "$bindir/$b"
  done
  echo "$bindir: linked $binaries"
}

unlink_binaries() {
  for b in $binaries; do
    # Only our own links: a file of the same name from elsewhere stays.
    if [ -L "$bindir/$b" ] && [ "$(readlink "$bindir/$b")" = "$prefix/bin/$b" ]; then
      rm -f "$bindir/$b"
    fi
  done
  echo "$bindir: removed the links"
}

# The unit runs the service through BINDIR's link.
install_unit() {
  [ -f "$prefix/share/systemd/$unit" ] || die "$prefix/share/systemd/$unit is missing"
  mkdir -p "$unitdir"
  sed "s|/usr/local/bin/wasmedge-sandbox |$bindir/wasmedge-sandbox |" "$prefix/share/systemd/$unit" >"$unitdir/$unit.tmp-wasmedge.$$"
  mv "$unitdir/$unit.tmp-wasmedge.$$" "$unitdir/$unit"
  echo "$unitdir/$unit: installed (write /etc/wasmedge-sandbox/api-keys, then systemctl daemon-reload && systemctl enable --now wasmedge-sandbox)"
}

uninstall_unit() {
  # Only our own unit: it runs our binary.
  if [ -f "$unitdir/$unit" ] && grep -q "^ExecStart=$bindir/wasmedge-sandbox serve" "$unitdir/$unit"; then
    rm -f "$unitdir/$unit"
    echo "$unitdir/$unit: removed"
  fi
}

case "$action" in
  install)
    copy_files
    link_binaries
    install_unit
    add_entry
    echo "done: restart containerd to load the runtime handler (systemctl restart containerd)"
    ;;
  uninstall)
    remove_entry
    uninstall_unit
    unlink_binaries
    if [ -x "$prefix/bin/containerd-shim-wasmedge-v1" ]; then
      rm -rf "$prefix"
      echo "$prefix: removed"
    fi
    echo "done: the AOT cache /var/lib/containerd-shim-wasmedge is left; remove it by hand if you want"
    ;;
esac
