#!/usr/bin/env bash
# Boot a node root's systemd as PID 1, as a container manager would: new PID, mount and cgroup
# namespaces, the cgroup namespace's root a fresh cgroup CGROUP (in every hierarchy), and the
# cgroup filesystems mounted anew inside, so systemd sees its own tree in the layout of the host
# (cgroup v1, hybrid or v2). As test/nodes/enter.sh: ROOT's /run and SHARE are also what commands
# run by enter.sh see (ctr makes FIFOs in /run). Usage: boot-systemd.sh ROOT SHARE CGROUP
set -euo pipefail

if [ "${1:-}" != "--inside-ns" ]; then
  cgroup=$3
  for dir in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -e "$dir/cgroup.procs" ] || continue
    mkdir -p "$dir$cgroup"
    # A v1 cpuset cgroup takes processes only once it has CPUs and memory nodes.
    for file in cpuset.cpus cpuset.mems; do
      [ -e "$dir$cgroup/$file" ] && cat "$dir$file" >"$dir$cgroup/$file"
    done
    echo $$ >"$dir$cgroup/cgroup.procs"
  done
  exec unshare --pid --fork --mount --cgroup --propagation private "$0" --inside-ns "$@"
fi
root=$2 share=$3

mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount --bind "$root/run" "$root/run"
# Each cgroup filesystem of the host, mounted inside the new cgroup namespace: rooted at CGROUP.
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
  mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
else
  mount -t tmpfs -o mode=755 tmpfs "$root/sys/fs/cgroup"
  awk '$3 == "/sys/fs/cgroup" {next} $3 ~ "^/sys/fs/cgroup/" {print $3, $4, $6}' /proc/self/mounts |
    while read -r dir type options; do
      mkdir -p "$root$dir"
      opts=$(echo "$options" | tr , '\n' | grep -v -e '^rw$' -e '^ro$' -e '^relatime$' | paste -sd, -)
      mount -t "$type" ${opts:+-o "$opts"} "$type" "$root$dir"
    done
fi
mkdir -p "$root$share" "$root/.oldroot"
mount --bind "$share" "$root$share"
cd "$root"
if command -v pivot_root >/dev/null; then pivot_root . .oldroot; else busybox pivot_root . .oldroot; fi
umount -l /.oldroot
rmdir /.oldroot
cd /
# basic.target: the node's own containerd.service stays down; the test starts containerd.
exec /usr/bin/env -i container=e2e-node PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd --unit=basic.target
