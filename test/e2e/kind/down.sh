#!/usr/bin/env bash
# Removes what test/e2e/kind/up.sh started: its kwok process, the kind cluster and its --internal Docker
# network, and puts back the kernel-global sysctls the node's kubelet changed. Keeps the cached tools,
# Debian tree, images and node image (delete ${XDG_CACHE_HOME:-~/.cache}/mce-operator/kind and
# `docker rmi mce-operator.local/kind-node:...` to drop them). Safe to run when nothing is up.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${XDG_CACHE_HOME:-$HOME/.cache}/mce-operator/kind
name=${MCE_KIND_NAME:-mce-e2e}
network=${MCE_KIND_NETWORK:-mce-kind}
# shellcheck source=../cluster/versions
source "$here/../cluster/versions"
kind=${XDG_CACHE_HOME:-$HOME/.cache}/mce-operator/tools/kind-v0.33.0/bin/kind

pidfile=$out/$name.kwok.pid
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
fi

path=$PATH
[ -x "$out/bin/docker" ] && path=$out/bin:$PATH
if [ -x "$kind" ] && "$kind" get clusters 2>/dev/null | grep -qxF "$name"; then
  PATH=$path "$kind" delete cluster --name "$name" --kubeconfig "$out/$name.kind-kubeconfig"
fi
rm -f "$out/$name.kubeconfig" "$out/$name.kind-kubeconfig"
if docker network inspect "$network" >/dev/null 2>&1 && [ -z "$(docker network inspect -f '{{range .Containers}}x{{end}}' "$network")" ]; then
  docker network rm "$network" >/dev/null
fi
if [ -f "$out/host-sysctls.conf" ]; then
  sysctl -q -p "$out/host-sysctls.conf"
  rm -f "$out/host-sysctls.conf"
fi
echo "kind: cluster $name removed"
