#!/usr/bin/env bash
# Prepares the kernel tier: a Debian kernel package unpacked with its modules, and an initramfs of
# busybox-static, the static C workload and the modules the guest needs. Both are cached under
# ${XDG_CACHE_HOME:-~/.cache}/mce-operator/kernel/, the initramfs keyed by a hash of its inputs, so a
# warm run only checks. Writes prepared.json there for the tests. MCE_KERNEL_PACKAGE names another
# Debian kernel package (default: the newest linux-image-6.1.0-N-amd64 apt knows).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mce-operator/kernel
started=$(date +%s%N)
step() { printf '[kernel %5.1fs] %s\n' "$(( ($(date +%s%N) - started) / 1000000 ))e-3" "$*"; }
fail() { printf 'kernel tier: %s\n' "$*" >&2; exit 1; }

for tool in qemu-system-x86_64 gcc dpkg-deb depmod apt-get apt-cache sha256sum xz; do
  command -v "$tool" >/dev/null || fail "$tool not found: install the packages in .ci/apt-packages"
done
busybox=/bin/busybox
# The guest has no libc: only a static busybox runs there (busybox-static, not busybox).
{ [ -x "$busybox" ] && ! "$busybox" ldd "$busybox" >/dev/null 2>&1 && LC_ALL=C od -An -c -N4 "$busybox" | grep -q 'E   L   F'; } \
  || fail "$busybox missing: install busybox-static"
"$busybox" nc --help >/dev/null 2>&1 || fail "$busybox has no nc applet (QEMU's guestfwd runs it)"

# The kernel package and its version, from apt's lists (refreshed once when they know no 6.1 kernel).
find_package() {
  if [ -n "${MCE_KERNEL_PACKAGE:-}" ]; then
    echo "$MCE_KERNEL_PACKAGE"
  else
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -n1
  fi
}
package=$(find_package)
if [ -z "$package" ] || ! apt-cache show --no-all-versions "$package" >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "apt knows no package ${package:-linux-image-6.1.0-*-amd64}: run apt-get update"
  step "apt-get update"
  apt-get update -qq
  package=$(find_package)
fi
[ -n "$package" ] || fail "no linux-image-6.1.0-*-amd64 package in apt's lists"
version=$(apt-cache show --no-all-versions "$package" | sed -n 's/^Version: //p' | head -n1)
[ -n "$version" ] || fail "apt-cache show $package printed no version"
dir=$cache/${package}_$version
mkdir -p "$dir"

if [ ! -e "$dir/unpacked" ]; then
  step "downloading $package $version"
  work=$(mktemp -d "$dir/download.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  # As root apt warns that it downloads unsandboxed; only a failure's message matters.
  (cd "$work" && apt-get download -qq "$package=$version" 2>"$work/stderr") || fail "apt-get download $package=$version: $(cat "$work/stderr")"
  deb=$(find "$work" -name '*.deb' | head -n1)
  [ -n "$deb" ] || fail "apt-get download $package=$version produced no .deb"
  rm -rf "$dir/root"
  dpkg-deb -x "$deb" "$dir/root"
  release=$(basename "$(find "$dir/root/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
  depmod -b "$dir/root" "$release"
  rm -rf "$work"
  trap - EXIT
  touch "$dir/unpacked"
  step "unpacked $release into $dir/root"
fi
release=$(basename "$(find "$dir/root/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
kernel=$dir/root/boot/vmlinuz-$release
[ -f "$kernel" ] || fail "no $kernel in $package"
modules=$dir/root/lib/modules/$release

# The modules the guest loads, with what they depend on, dependencies first.
# shellcheck source=modules.sh
source "$here/modules.sh"
wanted=(virtio_pci virtio_console virtio_net 9p 9pnet_virtio hwpoison-inject mce-inject)
order_text=$(module_order "$modules" "${wanted[@]}") || fail "$package lacks a module the guest needs"
mapfile -t order <<<"$order_text"

# Everything the initramfs is made of; a change to any of it makes a new one.
key=$( {
  sha256sum "$here/prepare.sh" "$here/modules.sh" "$here/guest/init" "$here/guest/hwp.c" "$busybox"
  gcc --version | head -n1
  printf '%s\n' "$package" "$version" "${order[@]}"
} | sha256sum | cut -c1-16)
initramfs=$dir/initramfs-$key.cpio.gz
if [ ! -e "$initramfs" ]; then
  step "building the initramfs ($key)"
  stage=$(mktemp -d "$dir/initramfs.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{bin,dev,proc,sys,run,tmp,host,shared,etc,lib/modules}
  cp "$busybox" "$stage/bin/busybox"
  ln -s busybox "$stage/bin/sh"
  gcc -static -O2 -Wall -Wextra -Werror -o "$stage/bin/hwp" "$here/guest/hwp.c"
  install -m 0755 "$here/guest/init" "$stage/init"
  # busybox insmod loads plain ELF only: compressed modules (6.12 ships .ko.xz) are unpacked here.
  for path in "${order[@]}"; do
    plain=${path%.ko.*}.ko
    mkdir -p "$(dirname "$stage/lib/modules/$plain")"
    case "$path" in
      *.ko) install -m 0644 "$modules/$path" "$stage/lib/modules/$plain" ;;
      *.ko.xz) xz -dc "$modules/$path" >"$stage/lib/modules/$plain" ;;
      *.ko.gz) gzip -dc "$modules/$path" >"$stage/lib/modules/$plain" ;;
      *.ko.zst) command -v zstd >/dev/null || fail "$path is zstd-compressed: install zstd"; zstd -qdc "$modules/$path" >"$stage/lib/modules/$plain" ;;
      *) fail "$path: a module in a form this script does not know" ;;
    esac
    echo "$plain" >>"$stage/etc/modules"
  done
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null | gzip -6n >"$initramfs.tmp")
  mv "$initramfs.tmp" "$initramfs"
  rm -rf "$stage"
  trap - EXIT
  find "$dir" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -name "initramfs-$key.cpio.gz" -delete
fi

cat >"$cache/prepared.json" <<EOF
{
  "package": "$package",
  "version": "$version",
  "release": "$release",
  "kernel": "$kernel",
  "initramfs": "$initramfs",
  "busybox": "$busybox"
}
EOF
step "ready: $package $version ($release), $(basename "$initramfs")"
