#!/usr/bin/env bash
# `make dist`: the release tarball, dist/containerd-shim-wasmedge-VERSION-x86_64-linux.tar.gz and
# its .sha256. It needs nothing of a node but the Linux kernel:
# - the shim, wasmedge-image and the execute service wasmedge-sandbox are static musl binaries
#   (they do not link WasmEdge); the service's systemd unit is in share/systemd/;
# - containerd-wasmedge-init links WasmEdge: it travels with libwasmedge and every library it
#   loads, glibc and its dynamic loader included, from the Debian root it was built in. Its ELF
#   interpreter is the bundled loader at the default prefix, its RPATH `$ORIGIN/../lib`; the shim
#   executes it through the bundled loader, so any other prefix works as well.
# Runs where the binaries build: the dev root (Debian sid: libwasmedge 0.17, patchelf).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/opt/containerd-shim-wasmedge
musl=x86_64-unknown-linux-musl
version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
name=containerd-shim-wasmedge-$version-x86_64-linux
cargo=${CARGO:-cargo}
# The feature set of `make test`, so the tests and the tarball share one build of the runner.
features=${DIST_FEATURES:-otlp}

rustup target list --installed | grep -qx $musl || rustup target add $musl
# ring (TLS of wasmedge-image's registry client) compiles C for musl: clang does that, gcc needs musl-gcc.
export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-clang}
$cargo build --release --features "$features" --bin containerd-wasmedge-init
# The static binaries report the WasmEdge the runner loads.
WASMEDGE_VERSION=$(target/release/containerd-wasmedge-init --version | sed -n 's/^WasmEdge: //p')
export WASMEDGE_VERSION
$cargo build --release --target $musl --no-default-features --features "$features" \
  --bin containerd-shim-wasmedge-v1 --bin wasmedge-image
# Apart, so that the service's feature does not change the shim's build.
$cargo build --release --target $musl --no-default-features --features "$features sandbox" --bin wasmedge-sandbox

stage=dist/$name
rm -rf "$stage" "dist/$name.tar.gz" "dist/$name.tar.gz.sha256"
mkdir -p "$stage/bin" "$stage/lib" "$stage/share/doc" "$stage/share/systemd"
for b in containerd-shim-wasmedge-v1 wasmedge-image wasmedge-sandbox; do
  install -m 755 "target/$musl/release/$b" "$stage/bin/$b"
done
runner=$stage/bin/containerd-wasmedge-init
install -m 755 target/release/containerd-wasmedge-init "$runner"
strip --strip-all "$stage"/bin/*

# Every library the runner loads, as the loader resolves them here; the loader itself under its
# canonical name. Libraries are copied as they are: patching or stripping glibc breaks it.
ldd "$runner" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }' | sort -u |
  while read -r lib; do
    cp -L "$lib" "$stage/lib/$(basename "$lib")"
    # Each library's licence, from the Debian package that holds it.
    pkg=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -1 | cut -d: -f1) || true
    if [ -n "$pkg" ] && [ -f "/usr/share/doc/$pkg/copyright" ]; then
      mkdir -p "$stage/share/doc/$pkg"
      cp "/usr/share/doc/$pkg/copyright" "$stage/share/doc/$pkg/"
    fi
  done
[ -f "$stage/lib/ld-linux-x86-64.so.2" ] || { echo "dist: ldd named no ld-linux-x86-64.so.2" >&2; exit 1; }
patchelf --set-interpreter "$prefix/lib/ld-linux-x86-64.so.2" --force-rpath --set-rpath '$ORIGIN/../lib' "$runner"

# What the binaries say of themselves, and the install script.
"$stage/bin/containerd-shim-wasmedge-v1" --version >"$stage/VERSION"
install -m 755 deploy/install.sh "$stage/install.sh"
install -m 644 deploy/wasmedge-sandbox.service "$stage/share/systemd/wasmedge-sandbox.service"
cat >"$stage/README.md" <<EOF
# containerd-shim-wasmedge $version (x86_64 Linux)

    sudo ./install.sh            # files in $prefix, binaries linked into /usr/local/bin,
                                 # runtime handler 'wasmedge' added to /etc/containerd/config.toml,
                                 # the execute service's unit to /etc/systemd/system (not enabled)
    sudo systemctl restart containerd
    sudo ./install.sh --uninstall

\`./install.sh --help\` lists the options (--prefix, --bindir, --config, --unitdir). bin/ holds the
shim, wasmedge-image and the execute service wasmedge-sandbox (static) and
containerd-wasmedge-init, which runs containers with the WasmEdge, glibc and libraries in lib/
(their licences are in share/doc/).
EOF

# Reproducible bytes: fixed order, owners and times.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -C dist -cf - "$name" | gzip -9n >"dist/$name.tar.gz"
(cd dist && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
size=$(stat -c %s "dist/$name.tar.gz")
echo "dist/$name.tar.gz: $((size / 1024 / 1024)) MiB ($size bytes), unpacked $(du -sh "$stage" | cut -f1)"
