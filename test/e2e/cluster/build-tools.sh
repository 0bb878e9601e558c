#!/usr/bin/env bash
# Builds the e2e cluster's tools from their Go modules into a cache keyed by
# version: ${XDG_CACHE_HOME:-$HOME/.cache}/mce-operator/tools/<component>-<version>/bin.
# A component whose binaries are all present is skipped, so a warm run is instant.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions
source "$here/versions"

tools_dir="${XDG_CACHE_HOME:-$HOME/.cache}/mce-operator/tools"
# Static binaries, no VCS stamping (module sources have none); two cores, so two
# compile jobs at a time.
export CGO_ENABLED=0
export GOFLAGS="-p=2 -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

start=$SECONDS
step_name=""
report_failure() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "build-tools: FAILED at step \"$step_name\" (exit $rc)" >&2
  fi
}
trap report_failure EXIT

# step NAME CMD...: runs one step, logs its elapsed time; output goes to a log
# that is printed only when the step fails. CMD runs as an `if` condition,
# where errexit is off, so step functions chain their commands with && or return.
step() {
  step_name="$1"
  shift
  local t0=$SECONDS log
  log="$(mktemp)"
  printf '[%4ds] %s ...\n' "$((SECONDS - start))" "$step_name"
  if ! "$@" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
  printf '[%4ds] %s done (%ds)\n' "$((SECONDS - start))" "$step_name" "$((SECONDS - t0))"
}

# have DIR NAME...: true when every named binary is already in DIR/bin.
have() {
  local dir="$1" name
  shift
  for name in "$@"; do
    [[ -x "$dir/bin/$name" ]] || return 1
  done
}

# init_module DIR MODULE VERSION [REPLACES]: a throwaway module that requires
# MODULE@VERSION; replace directives of a dependency are ignored by Go, so the
# ones that matter are restated here.
init_module() {
  local dir="$1" module="$2" version="$3" replaces="${4:-}"
  rm -rf "$dir/src"
  mkdir -p "$dir/src"
  cat >"$dir/src/go.mod" <<MOD
module mce-operator.io/e2e-tools

go 1.26

require $module $version
$replaces
MOD
}

# go_build DIR PKG OUT LDFLAGS: builds PKG into DIR/bin/OUT atomically.
go_build() {
  local dir="$1" pkg="$2" out="$3" ldflags="$4"
  mkdir -p "$dir/bin" &&
    (cd "$dir/src" && go build -trimpath -ldflags="-s -w $ldflags" -o "$dir/bin/.$out.tmp" "$pkg") &&
    mv "$dir/bin/.$out.tmp" "$dir/bin/$out"
}

# go_get DIR PKG@VERSION...: resolves the packages' dependencies into go.sum.
go_get() {
  local dir="$1"
  shift
  (cd "$dir/src" && go get "$@")
}

# Every k8s.io staging module is published as v0.<minor>.<patch> of the release;
# k8s.io/kubernetes' own go.mod replaces them with ./staging/src paths, which Go
# ignores in a dependency, so the list is taken from it and pinned here.
kubernetes_replaces() {
  local gomod="$1" staging="v0.${KUBERNETES_VERSION#v1.}"
  echo "replace ("
  sed -nE 's#^[[:space:]]*(k8s\.io/[^[:space:]]+)[[:space:]]+=>[[:space:]]+\./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
  echo ")"
}

# fetch_kubernetes VERSION: downloads k8s.io/kubernetes and sets kubernetes_gomod.
kubernetes_gomod=""
fetch_kubernetes() {
  kubernetes_gomod="$(cd / && go mod download -json "k8s.io/kubernetes@$1" |
    sed -nE 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p')"
  [[ -f "$kubernetes_gomod" ]]
}

build_kubernetes() {
  local v="$KUBERNETES_VERSION" dir="$tools_dir/kubernetes-$KUBERNETES_VERSION"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
  if have "$dir" "${bins[@]}"; then
    echo "kubernetes $v: cached in $dir"
    return
  fi
  step "kubernetes $v: fetch module" fetch_kubernetes "$v"
  local gomod="$kubernetes_gomod" major minor build_date
  init_module "$dir" k8s.io/kubernetes "$v" "$(kubernetes_replaces "$gomod")"
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  build_date="$(sed -nE 's/.*"Time": ?"([^"]+)".*/\1/p' "${gomod%.mod}.info")"
  # What hack/lib/version.sh stamps, so `--version` prints the release.
  local ldflags="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    # A module zip carries no commit; empty beats client-go's "$Format:%H$".
    ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=archive -X $pkg.buildDate=$build_date"
  done
  local pkgs=() b
  for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b@$v"); done
  step "kubernetes $v: resolve dependencies" go_get "$dir" "${pkgs[@]}"
  for b in "${bins[@]}"; do
    have "$dir" "$b" || step "kubernetes $v: build $b" go_build "$dir" "k8s.io/kubernetes/cmd/$b" "$b" "$ldflags"
  done
}

build_etcd() {
  local v="$ETCD_VERSION" dir="$tools_dir/etcd-$ETCD_VERSION"
  if have "$dir" etcd; then
    echo "etcd $v: cached in $dir"
    return
  fi
  init_module "$dir" go.etcd.io/etcd/server/v3 "$v"
  step "etcd $v: resolve dependencies" go_get "$dir" "go.etcd.io/etcd/server/v3@$v"
  step "etcd $v: build etcd" go_build "$dir" go.etcd.io/etcd/server/v3 etcd ""
}

# The stages kwokctl embeds as its defaults (nodes become Ready and keep a lease;
# pods become Running, complete, and go away on delete); the bare kwok binary
# has none, so they are kept next to it as one multi-document file.
kwok_stages=(
  node/fast/node-initialize.yaml
  node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml
  pod/fast/pod-complete.yaml
  pod/fast/pod-delete.yaml
)

copy_kwok_stages() {
  local dir="$1" src stage
  src="$(cd "$dir/src" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)" || return 1
  for stage in "${kwok_stages[@]}"; do
    echo "---"
    cat "$src/kustomize/stage/$stage" || return 1
  done >"$dir/.stages.yaml.tmp" &&
    mv "$dir/.stages.yaml.tmp" "$dir/stages.yaml"
}

build_kwok() {
  local v="$KWOK_VERSION" dir="$tools_dir/kwok-$KWOK_VERSION"
  if have "$dir" kwok && [[ -f "$dir/stages.yaml" ]]; then
    echo "kwok $v: cached in $dir"
    return
  fi
  init_module "$dir" sigs.k8s.io/kwok "$v"
  step "kwok $v: resolve dependencies" go_get "$dir" "sigs.k8s.io/kwok/cmd/kwok@$v"
  have "$dir" kwok ||
    step "kwok $v: build kwok" go_build "$dir" sigs.k8s.io/kwok/cmd/kwok kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$v"
  step "kwok $v: copy default stages" copy_kwok_stages "$dir"
}

build_helm() {
  local v="$HELM_VERSION" dir="$tools_dir/helm-$HELM_VERSION" major="${HELM_VERSION%%.*}"
  if have "$dir" helm; then
    echo "helm $v: cached in $dir"
    return
  fi
  init_module "$dir" "helm.sh/helm/$major" "$v"
  step "helm $v: resolve dependencies" go_get "$dir" "helm.sh/helm/$major/cmd/helm@$v"
  step "helm $v: build helm" go_build "$dir" "helm.sh/helm/$major/cmd/helm" helm "-X helm.sh/helm/$major/internal/version.version=$v"
}

# Node Problem Detector, for bench/peer.ts only: built when asked for by name, never by the default run
# (CI's). Its go.mod (v1.36.0) has no replace directives, so nothing needs restating. CGO_ENABLED=0 and
# no `journald` tag leave out the journald watcher (cgo, sdjournal), as NPD's own Makefile does without
# ENABLE_JOURNALD=1; the filelog and kmsg watchers are pure Go. The Makefile stamps the version so. Its
# stock kernel monitor for the filelog plugin is kept next to the binary, as kwok's stages are.
npd_config=kernel-monitor-filelog.json

copy_npd_config() {
  local dir="$1" src
  src="$(cd "$dir/src" && go list -m -f '{{.Dir}}' k8s.io/node-problem-detector)" || return 1
  cp "$src/config/$npd_config" "$dir/.$npd_config.tmp" &&
    chmod 644 "$dir/.$npd_config.tmp" &&
    mv "$dir/.$npd_config.tmp" "$dir/$npd_config"
}

build_node_problem_detector() {
  local v="$NODE_PROBLEM_DETECTOR_VERSION" dir="$tools_dir/node-problem-detector-$NODE_PROBLEM_DETECTOR_VERSION"
  local module=k8s.io/node-problem-detector
  if have "$dir" node-problem-detector && [[ -f "$dir/$npd_config" ]]; then
    echo "node-problem-detector $v: cached in $dir"
    return
  fi
  init_module "$dir" "$module" "$v"
  step "node-problem-detector $v: resolve dependencies" go_get "$dir" "$module/cmd/nodeproblemdetector@$v"
  have "$dir" node-problem-detector ||
    step "node-problem-detector $v: build node-problem-detector" go_build "$dir" "$module/cmd/nodeproblemdetector" node-problem-detector \
      "-X $module/pkg/version.version=$v"
  step "node-problem-detector $v: copy its kernel monitor config" copy_npd_config "$dir"
}

command -v go >/dev/null || { step_name="check go"; echo "go is not on PATH" >&2; exit 1; }
case "${1:-}" in
  "")
    build_etcd
    build_kwok
    build_kubernetes
    build_helm
    ;;
  node-problem-detector) build_node_problem_detector ;;
  *)
    step_name="arguments"
    echo "usage: build-tools.sh [node-problem-detector]   (no argument: the e2e cluster's tools)" >&2
    exit 2
    ;;
esac
step_name=""
printf '[%4ds] all tools ready in %s\n' "$((SECONDS - start))" "$tools_dir"
