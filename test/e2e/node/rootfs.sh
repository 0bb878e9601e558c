#!/usr/bin/env bash
# Builds the real node's disk: a Debian bookworm root filesystem (containerd, runc, CNI plugins,
# iptables) with the guest kernel's modules, the kubelet and kube-proxy built with the control plane,
# and the tier's images already in containerd (importing them in the emulated guest runs at ~3 MB/s).
# Also a small initramfs that mounts the disk and switches to it. Cached under
# ${XDG_CACHE_HOME:-~/.cache}/mce-operator/node/: the Debian tree by its package list, the disk by a
# hash of everything in it; a warm run only checks. Writes prepared.json there for the tests.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../debian.sh
source "$here/../debian.sh"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mce-operator
out=$cache/node
started=$(date +%s%N)
step() { printf '[node %6.1fs] %s\n' "$(( ($(date +%s%N) - started) / 1000000 ))e-3" "$*"; }
fail() { printf 'real-node tier: %s\n' "$*" >&2; exit 1; }

for tool in mmdebstrap mkfs.ext4 containerd ctr jq sha256sum; do
  command -v "$tool" >/dev/null || fail "$tool not found: install the packages in .ci/apt-packages"
done
[ "$(id -u)" = 0 ] || fail "building the node's disk needs root (mmdebstrap, containerd)"
kernel_json=$cache/kernel/prepared.json
images_json=$cache/images/images.json
[ -f "$kernel_json" ] || fail "$kernel_json missing: run test/e2e/kernel/prepare.sh"
[ -f "$images_json" ] || fail "$images_json missing: run test/e2e/node/images.sh"
# shellcheck source=../cluster/versions
source "$here/../cluster/versions"
bin=$cache/tools/kubernetes-$KUBERNETES_VERSION/bin
for b in kubelet kube-proxy; do [ -x "$bin/$b" ] || fail "$bin/$b missing: run test/e2e/cluster/build-tools.sh"; done
kernel=$(jq -r .kernel "$kernel_json")
release=$(jq -r .release "$kernel_json")
modules=$(dirname "$(dirname "$kernel")")/lib/modules/$release
mkdir -p "$out"

# 1. The Debian tree, by its package list.
packages=containerd,runc,containernetworking-plugins,iptables,conntrack,kmod,iproute2,procps,util-linux,ca-certificates
base_key=$( { echo "$packages"; sha256sum "$here/../debian.sh"; } | sha256sum | cut -c1-16)
base=$out/debian-$base_key
if [ ! -d "$base" ]; then
  step "mmdebstrap bookworm ($packages)"
  rm -rf "$base.tmp"
  debian_tree "$base.tmp" "$packages" >"$out/mmdebstrap.log" 2>&1 || fail "mmdebstrap failed: $(tail -n 20 "$out/mmdebstrap.log")"
  rm -rf "$base.tmp"/var/cache/apt/* "$base.tmp"/var/lib/apt/lists/*
  mv "$base.tmp" "$base"
  find "$out" -maxdepth 1 -name 'debian-*' ! -name "debian-$base_key" -exec rm -rf {} +
fi

# 2. The disk: everything that goes on it is in its key.
image_ids=$(jq -r '[.[] | .id] | join(" ")' "$images_json")
disk_key=$( {
  echo "$base_key" "$image_ids"
  sha256sum "$here/rootfs.sh" "$here/../kernel/modules.sh" "$here"/guest/* "$bin/kubelet" "$bin/kube-proxy"
  jq -r '.package + " " + .version' "$kernel_json"
} | sha256sum | cut -c1-16)
disk=$out/disk-$disk_key.ext4
initramfs=$out/initramfs-$disk_key.cpio.gz
if [ ! -e "$disk" ] || [ ! -e "$initramfs" ]; then
  stage=$(mktemp -d "$out/stage.XXXXXX")
  trap 'rm -rf "$stage"; [ -n "${cpid:-}" ] && kill "$cpid" 2>/dev/null' EXIT
  step "copying the Debian tree"
  cp -a "$base" "$stage/root"
  root=$stage/root
  step "kernel modules of $release (no sound, graphics, media, USB or SCSI drivers)"
  mkdir -p "$root/usr/lib/modules/$release"
  cp -a "$modules"/modules.* "$root/usr/lib/modules/$release/"
  (cd "$modules" && find kernel -name '*.ko*' \
    ! -path 'kernel/sound/*' ! -path 'kernel/drivers/gpu/*' ! -path 'kernel/drivers/media/*' \
    ! -path 'kernel/drivers/usb/*' ! -path 'kernel/drivers/scsi/*' ! -path 'kernel/drivers/infiniband/*' \
    ! -path 'kernel/drivers/net/wireless/*' ! -path 'kernel/drivers/net/ethernet/*' \
    -print0 | xargs -0 cp --parents -t "$root/usr/lib/modules/$release")
  depmod -b "$root" "$release"
  step "kubelet, kube-proxy $KUBERNETES_VERSION and the node's configuration"
  install -m 0755 "$bin/kubelet" "$bin/kube-proxy" "$root/usr/local/bin/"
  install -m 0755 "$here/guest/init" "$root/sbin/mce-node-init"
  install -D -m 0644 "$here/guest/containerd.toml" "$root/etc/containerd/config.toml"
  install -D -m 0644 "$here/guest/10-pods.conflist" "$root/etc/cni/net.d/10-pods.conflist"
  echo mce-node >"$root/etc/hostname"
  : >"$root/etc/machine-id"
  printf '127.0.0.1 localhost\n' >"$root/etc/hosts"
  : >"$root/etc/resolv.conf"

  step "images into the node's containerd ($(jq -r '[.[] | .ref] | join(", ")' "$images_json"))"
  mkdir -p "$root/var/lib/containerd" "$stage/state"
  printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' >"$stage/containerd.toml"
  containerd --config "$stage/containerd.toml" --root "$root/var/lib/containerd" --state "$stage/state" \
    --address "$stage/containerd.sock" >"$stage/containerd.log" 2>&1 &
  cpid=$!
  for _ in $(seq 100); do ctr --address "$stage/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr --address "$stage/containerd.sock" version >/dev/null 2>&1 || fail "a private containerd did not start: $(tail -n 5 "$stage/containerd.log")"
  for tar in $(jq -r '.[] | .tar' "$images_json"); do
    ctr --address "$stage/containerd.sock" -n k8s.io images import --snapshotter overlayfs "$tar" >/dev/null \
      || fail "ctr images import $tar failed"
  done
  kill "$cpid"; wait "$cpid" 2>/dev/null || true; cpid=
  rm -rf "$root/var/lib/containerd/tmpmounts"

  step "ext4 disk"
  size_mb=$(( $(du -sm "$root" | cut -f1) + 3072 ))
  truncate -s "${size_mb}M" "$disk.tmp"
  mkfs.ext4 -q -F -L mce-node -d "$root" "$disk.tmp" || fail "mkfs.ext4 -d $root failed"
  mv "$disk.tmp" "$disk"

  step "initramfs"
  # shellcheck source=../kernel/modules.sh
  source "$here/../kernel/modules.sh"
  order_text=$(module_order "$modules" virtio_pci virtio_blk crc32c_generic ext4) || fail "the kernel lacks a module to read the disk"
  ird=$stage/initramfs
  mkdir -p "$ird"/{bin,dev,proc,sys,root,etc}
  cp /bin/busybox "$ird/bin/busybox"
  ln -s busybox "$ird/bin/sh"
  install -m 0755 "$here/guest/initramfs-init" "$ird/init"
  while read -r path; do
    install -D -m 0644 "$modules/$path" "$ird/lib/modules/$path"
    echo "$path" >>"$ird/etc/modules"
  done <<<"$order_text"
  (cd "$ird" && find . -mindepth 1 | LC_ALL=C sort | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -6n >"$initramfs.tmp")
  mv "$initramfs.tmp" "$initramfs"
  find "$out" -maxdepth 1 \( -name 'disk-*.ext4' -o -name 'initramfs-*.cpio.gz' \) ! -name "*-$disk_key.*" -delete
fi

jq -n --arg kernel "$kernel" --arg release "$release" --arg initramfs "$initramfs" --arg disk "$disk" \
  --slurpfile images "$images_json" '{kernel: $kernel, release: $release, initramfs: $initramfs, disk: $disk, images: $images[0]}' >"$out/prepared.json"
step "ready: $(basename "$disk") ($(du -h --apparent-size "$disk" | cut -f1) apparent, $(du -h "$disk" | cut -f1) used), $(basename "$initramfs")"
