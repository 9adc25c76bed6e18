# Shared settings of the dev root scripts.
DEVROOT=${DEVROOT:-/var/cache/containerd-shim-wasmedge/devroot}
DEVROOT_PACKAGES="ca-certificates libwasmedge-dev wasmedge containerd runc crun gcc libc6-dev libclang-dev \
make pkg-config procps util-linux iproute2 busybox-static"
