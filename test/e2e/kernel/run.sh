#!/usr/bin/env bash
# The kernel tier on every kernel it is asked for, one after the other: prepare (cached), then every
# scenario. MCE_KERNEL_PACKAGE names one Debian kernel package; MCE_KERNEL_PACKAGES several (spaces);
# by default Debian's newest 6.1 (bookworm) and newest 6.12 (bookworm security/backports). Each kernel's
# vitest report is .test-results/kernel-<major.minor>.json, its figures
# .test-results/figures/kernel-conformance-<major.minor>.json; the scenario x kernel matrix is printed
# at the end. Extra arguments go to vitest (e.g. -t 'free 2 MiB').
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
# Node 24 and vitest from the project, as npm scripts run them.
export PATH="$PWD/node_modules/.bin:$PATH"

newest() { apt-cache search --names-only "$1" | cut -d' ' -f1 | sort -V | tail -n1; }
defaults() {
  local p61 p612
  p61=$(newest '^linux-image-6\.1\.0-[0-9]+-amd64$')
  p612=$(newest '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$')
  if { [ -z "$p61" ] || [ -z "$p612" ]; } && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2
    p61=$(newest '^linux-image-6\.1\.0-[0-9]+-amd64$')
    p612=$(newest '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$')
  fi
  [ -n "$p61" ] || { echo "kernel tier: apt knows no linux-image-6.1.0-*-amd64 package" >&2; return 1; }
  [ -n "$p612" ] || { echo "kernel tier: apt knows no linux-image-6.12.*+deb12-amd64-unsigned package" >&2; return 1; }
  echo "$p61 $p612"
}

if [ -n "${MCE_KERNEL_PACKAGE:-}" ]; then
  packages=$MCE_KERNEL_PACKAGE
elif [ -n "${MCE_KERNEL_PACKAGES:-}" ]; then
  packages=$MCE_KERNEL_PACKAGES
else
  packages=$(defaults) || exit 1
fi

rc=0
series_run=()
for package in $packages; do
  # linux-image-6.12.115+deb12-amd64-unsigned -> 6.12; linux-image-6.1.0-57-amd64 -> 6.1
  series=$(sed -E 's/^linux-image-([0-9]+\.[0-9]+).*/\1/' <<<"$package")
  started=$(date +%s)
  printf '\n=== kernel tier on %s\n' "$package"
  if MCE_KERNEL_PACKAGE=$package bash "$here/prepare.sh"; then
    vitest run --project kernel --reporter=default --reporter=json \
      --outputFile.json=".test-results/kernel-$series.json" "$@" || rc=1
  else
    rc=1
  fi
  printf '=== kernel tier on %s: %d s\n' "$package" "$(($(date +%s) - started))"
  series_run+=("$series")
done
node "$here/matrix.ts" "${series_run[@]}" || rc=1
exit $rc
