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

.PHONY: all build test demo bench devroot toolchain toolchains clean install uninstall e2e-docker e2e-k8s soak fuzz

all: build

devroot:
	devroot/create.sh

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

test: toolchain
	$(TEST) -- --test-threads=1

demo: toolchain build
	test/demo.sh

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
build test demo e2e-docker e2e-k8s: devroot toolchain
	devroot/enter.sh $(MAKE) $@ FEATURES="$(FEATURES)"

toolchains: devroot toolchain
	devroot/enter.sh $(MAKE) toolchains LANGS="$(LANGS)"

bench: devroot toolchain
	devroot/enter.sh env $(foreach v,$(filter BENCH_%,$(.VARIABLES)),'$(v)=$($(v))') $(MAKE) $@
soak: devroot toolchain
	devroot/enter.sh $(MAKE) soak

fuzz: devroot
	devroot/enter.sh $(MAKE) fuzz FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60)
endif

# Puts the binaries `make build` made on this machine's PATH and adds the `wasmedge` runtime
# entry to containerd's config (backing it up; idempotent; config version 2 or 3). The binaries
# need libwasmedge 0.17 and a glibc as new as the build's. Restart containerd afterwards.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
CONTAINERD_CONFIG ?= /etc/containerd/config.toml
BINARIES := containerd-shim-wasmedge-v1 containerd-wasmedge-init wasmedge-image

install: build
	install -d $(DESTDIR)$(BINDIR)
	install -m 755 $(addprefix target/release/,$(BINARIES)) $(DESTDIR)$(BINDIR)/
	deploy/containerd-config.sh add $(DESTDIR)$(CONTAINERD_CONFIG)

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(BINARIES))
	deploy/containerd-config.sh remove $(DESTDIR)$(CONTAINERD_CONFIG)

clean:
	$(CARGO) clean
