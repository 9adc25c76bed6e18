# Every target that needs WasmEdge, containerd or runc runs natively when the host has them
# (or we are already inside the dev root) and otherwise re-enters itself in the dev root.
SHELL := /bin/bash
NATIVE := $(shell if [ -n "$$IN_DEVROOT" ] || { pkg-config --atleast-version=0.17 wasmedge 2>/dev/null && command -v containerd && command -v runc; } >/dev/null 2>&1; then echo 1; fi)
CARGO ?= cargo
# Cargo features of `make build`/`make install`: `make build FEATURES=otlp` adds OTLP export.
FEATURES ?=
# The tests build with every feature, so the OTLP export is tested too (test/e2e_trace.rs); one
# feature set for every test target, so they share one build.
TEST := $(CARGO) test --release --features otlp
WASM_TARGET := wasm32-wasip1

VERSION := $(shell awk -F'"' '/^version *=/ { print $$2; exit }' Cargo.toml)
DIST_NAME := containerd-shim-wasmedge-$(VERSION)-x86_64-linux
DIST_TARBALL := dist/$(DIST_NAME).tar.gz

.PHONY: all build dist test demo bench devroot toolchain toolchains clean install uninstall e2e-docker e2e-k8s soak fuzz \
  nodes test-nodes demo-sandbox soak-sandbox

all: build

devroot:
	devroot/create.sh

# The node roots of test/e2e_nodes.rs (test/nodes/create.sh): Debian bookworm, trixie and sid with
# only their own containerd and runc (trixie also Docker), and bookworm with systemd to boot
# (test/nodes/create-systemd.sh), rebuilt when their recipe changes.
nodes:
	test/nodes/create.sh
	test/nodes/create-systemd.sh

# The wasm target lives in ~/.rustup, which the dev root shares with the host.
toolchain:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

ifeq ($(NATIVE),1)
build:
	$(CARGO) build --release --bins $(if $(FEATURES),--features $(FEATURES))

# What the build helper's languages need (apt, npm, PyPI), and their runtimes prepared:
# `make toolchains` for all, `make toolchains LANGS="go python"` for some. Idempotent.
toolchains: toolchain build
	target/release/wasmedge-image toolchains $(LANGS)

# The release tarball (deploy/dist.sh): static shim, wasmedge-image and wasmedge-sandbox (with its
# systemd unit), the runner with its libraries.
dist: toolchain
	deploy/dist.sh

# The tests take the tarball too (its ELF, install.sh), so it is made first; the node matrix
# (test/e2e_nodes.rs) also needs the node roots, which inside the dev root are the host's to make.
NODE_ROOTS := $(if $(IN_DEVROOT),,nodes)
test: toolchain dist $(NODE_ROOTS)
	NODE_TARBALL=$(CURDIR)/$(DIST_TARBALL) $(TEST) -- --test-threads=1

# The node matrix alone: the tarball installed by its install.sh on each node root, then wasm
# containers through that root's containerd (Docker and CRI too). About a minute.
test-nodes: toolchain dist $(NODE_ROOTS)
	NODE_TARBALL=$(CURDIR)/$(DIST_TARBALL) $(TEST) --test e2e_nodes -- --test-threads=1

demo: toolchain build
	test/demo.sh

# The execute service (wasmedge-sandbox) on a private containerd: a Python and a JavaScript
# snippet with curl.
demo-sandbox: toolchain build
	target/release/wasmedge-image toolchains python javascript
	test/demo-sandbox.sh

# The execute service's leak test, longer: 20000 executions from 8 clients, then nothing may be
# left and the service's RSS flat (make test runs 2000, about a minute).
soak-sandbox: toolchain
	SANDBOX_SOAK=20000 $(TEST) --test e2e_sandbox -- --test-threads=1 many_concurrent_executions

# The Docker and Kubernetes (CRI) doors alone; `make test` runs them too.
e2e-docker e2e-k8s: toolchain
	$(TEST) --test $(if $(filter e2e-docker,$@),e2e_docker,e2e_cri) -- --test-threads=1

# Not part of `make test`: about 3 minutes on 2 cores. BENCH_* variables are passed on (bench/bench.py).
bench: toolchain build
	bench/run.sh
# The soak of test/soak.rs at full length (`make test` runs a short one through the same code):
# 1000 runs one after the other, 400 with 8 at a time, 200 through one pod's shim, then nothing
# may be left (processes, mounts, cgroups, state directories, descriptors). A few minutes.
soak: toolchain
	SOAK_SEQUENTIAL=1000 SOAK_CONCURRENT=400 SOAK_PARALLEL=8 SOAK_POD=200 $(TEST) --test soak -- --nocapture

# The cargo-fuzz targets of fuzz/ (fuzz/README.md), FUZZ_SECONDS each (default 60).
FUZZ_SECONDS ?= 60
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh
else
build dist test demo demo-sandbox soak-sandbox e2e-docker e2e-k8s test-nodes: devroot toolchain
	devroot/enter.sh $(MAKE) $@ FEATURES="$(FEATURES)"
# The node roots are made on the host, before entering the dev root (debootstrap).
test test-nodes: nodes

toolchains: devroot toolchain
	devroot/enter.sh $(MAKE) toolchains LANGS="$(LANGS)"

bench: devroot toolchain
	devroot/enter.sh env $(foreach v,$(filter BENCH_%,$(.VARIABLES)),'$(v)=$($(v))') $(MAKE) $@
soak: devroot toolchain
	devroot/enter.sh $(MAKE) soak

fuzz: devroot
	devroot/enter.sh $(MAKE) fuzz FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60)
endif

# Installs the release tarball on this machine with its install.sh, as a node would
# (`--prefix`, `--bindir`, `--config`, `--unitdir` from PREFIX, BINDIR, CONTAINERD_CONFIG,
# UNITDIR: the binaries, wasmedge-sandbox's systemd unit; idempotent; the config is backed up). The tarball runs on any x86_64 Linux. Restart containerd afterwards.
PREFIX ?= /opt/containerd-shim-wasmedge
BINDIR ?= /usr/local/bin
CONTAINERD_CONFIG ?= /etc/containerd/config.toml
UNITDIR ?= /etc/systemd/system
INSTALL_ARGS = --prefix $(PREFIX) --bindir $(BINDIR) --config $(CONTAINERD_CONFIG) --unitdir $(UNITDIR)

install: dist
	rm -rf dist/.unpacked && mkdir -p dist/.unpacked
	tar -xzf $(DIST_TARBALL) -C dist/.unpacked
	dist/.unpacked/$(DIST_NAME)/install.sh $(INSTALL_ARGS)

uninstall:
	$(PREFIX)/install.sh --uninstall $(INSTALL_ARGS)

clean:
	$(CARGO) clean
	rm -rf dist
