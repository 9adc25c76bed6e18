# Every target that needs WasmEdge, containerd or runc runs natively when the host has them
# (or we are already inside the dev root) and otherwise re-enters itself in the dev root.
SHELL := /bin/bash
NATIVE := $(shell if [ -n "$$IN_DEVROOT" ] || { pkg-config --atleast-version=0.17 wasmedge 2>/dev/null && command -v containerd && command -v runc; } >/dev/null 2>&1; then echo 1; fi)
CARGO ?= cargo
WASM_TARGET := wasm32-wasip1

.PHONY: all build test demo bench devroot toolchain toolchains clean

all: build

devroot:
	devroot/create.sh

# The wasm target lives in ~/.rustup, which the dev root shares with the host.
toolchain:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

ifeq ($(NATIVE),1)
build:
	$(CARGO) build --release --bins

# What the build helper's languages need (apt, npm, PyPI), and their runtimes prepared:
# `make toolchains` for all, `make toolchains LANGS="go python"` for some. Idempotent.
toolchains: toolchain build
	target/release/wasmedge-image toolchains $(LANGS)

test: toolchain
	$(CARGO) test --release -- --test-threads=1

demo: toolchain build
	test/demo.sh

# Not part of `make test`: about 3 minutes on 2 cores. BENCH_* variables are passed on (bench/bench.py).
bench: toolchain build
	bench/run.sh
else
build test demo: devroot toolchain
	devroot/enter.sh $(MAKE) $@

toolchains: devroot toolchain
	devroot/enter.sh $(MAKE) toolchains LANGS="$(LANGS)"

bench: devroot toolchain
	devroot/enter.sh env $(foreach v,$(filter BENCH_%,$(.VARIABLES)),'$(v)=$($(v))') $(MAKE) $@
endif

clean:
	$(CARGO) clean
