# Shared settings of the dev root scripts.
DEVROOT=${DEVROOT:-/var/cache/containerd-shim-wasmedge/devroot}
# The node roots of test/nodes/create.sh (test/e2e_nodes.rs knows this path too).
NODES=${NODES:-/var/cache/containerd-shim-wasmedge/nodes}
# The runtime world (WasmEdge, containerd, runc, crun, Docker, CNI, kubectl) and the toolchains the
# build helper uses for C/C++, Go, JavaScript and TypeScript.
DEVROOT_PACKAGES="ca-certificates libwasmedge-dev wasmedge containerd runc crun docker.io docker-cli kubectl \
containernetworking-plugins iptables gcc libc6-dev libclang-dev make pkg-config procps util-linux iproute2 \
busybox-static git patchelf binutils clang lld wasi-libc libclang-rt-dev-wasm32 libc++-dev-wasm32 golang-go nodejs npm esbuild \
docker-registry skopeo protobuf-compiler apache2-utils python3-pip curl"
