#!/usr/bin/env bash
# A kind cluster (sigs.k8s.io/kind) made without any image registry, for the e2e suite's
# E2E_EXISTING_CLUSTER path (see test/e2e/README.md, "On a machine with Docker: kind"). A user's path,
# not part of `npm test`. Needs root, Docker, mmdebstrap, Go, and the cluster tools
# (test/e2e/cluster/build-tools.sh). Everything is cached under ${XDG_CACHE_HOME:-~/.cache}/mce-operator;
# a warm run only checks and starts the cluster.
#
#   1. kind v0.33.0 (go install) and kubeadm of the cluster's Kubernetes version (go build, like
#      build-tools.sh builds the other binaries).
#   2. The node's Debian tree: mmdebstrap bookworm with kind's base packages plus Debian's containerd,
#      runc and CNI plugins. Bookworm, not kind's trixie: trixie's systemd 257 refuses cgroup v1.
#   3. The control-plane images, FROM scratch around the static binaries: kube-apiserver,
#      kube-controller-manager, kube-scheduler (the tools' own), etcd (the tools' v3.6.13 under the tag
#      kubeadm asks for) and pause (a static C program). No kube-proxy, CoreDNS or kindnetd image.
#   4. The node image, assembled as kind's images/base/Dockerfile and `kind build node-image` would
#      (kind's base files from its module, the binaries in /usr/bin, /kind/version, the images in
#      containerd's store), then `docker import`. `kind build node-image` itself cannot be used: it
#      `ctr content fetch`es every image it did not build (etcd, CoreDNS, pause, kindnetd,
#      local-path-provisioner) from their registries.
#   5. `kind create cluster` on an --internal Docker network (no route off this machine: nothing in the
#      node can reach a registry or a DNS server), with kube-proxy and the default CNI off (a static
#      bridge CNI config in the image stands in for kindnetd), CoreDNS skipped and the kubelet's
#      failCgroupV1: false. The kubeconfig points at the node's address on that network.
#   6. kwok as a host process against it, as test/e2e/cluster/control-plane.ts runs it.
# Prints `export KUBECONFIG=...`. test/e2e/kind/down.sh removes the cluster.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../debian.sh
source "$here/../debian.sh"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mce-operator
out=$cache/kind
name=${MCE_KIND_NAME:-mce-e2e}
network=${MCE_KIND_NETWORK:-mce-kind}
kind_version=v0.33.0
started=$(date +%s%N)
step() { printf '[kind %6.1fs] %s\n' "$(( ($(date +%s%N) - started) / 1000000 ))e-3" "$*"; }
fail() { printf 'kind: %s\n' "$*" >&2; exit 1; }
quiet() { # NAME CMD...: output in $out/logs/NAME.log, its end shown on failure
  local log=$out/logs/$1.log rc=0
  shift
  "$@" >"$log" 2>&1 || rc=$?
  [ "$rc" = 0 ] || { tail -n 25 "$log" >&2; fail "$(basename "$log" .log) failed (exit $rc): $log"; }
}

for tool in docker go mmdebstrap gcc jq ctr containerd sha256sum; do
  command -v "$tool" >/dev/null || fail "$tool not found"
done
[ "$(id -u)" = 0 ] || fail "needs root (mmdebstrap, a private containerd)"
# shellcheck source=../cluster/versions
source "$here/../cluster/versions"
tools=$cache/tools
kbin=$tools/kubernetes-$KUBERNETES_VERSION/bin
etcd=$tools/etcd-$ETCD_VERSION/bin/etcd
kwok=$tools/kwok-$KWOK_VERSION/bin/kwok
for b in "$kbin"/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kubectl} "$etcd" "$kwok"; do
  [ -x "$b" ] || fail "$b missing: run test/e2e/cluster/build-tools.sh"
done
if [ -e "$here/../node/dockerd.sh" ]; then bash "$here/../node/dockerd.sh"; fi
timeout 10 docker info >/dev/null 2>&1 || fail "no Docker engine answers"
mkdir -p "$out/logs"
export DOCKER_BUILDKIT=0 GOFLAGS=-buildvcs=false

# --- 1. kind and kubeadm ---------------------------------------------------------------------------
kind=$tools/kind-$kind_version/bin/kind
if [ ! -x "$kind" ]; then
  step "go install sigs.k8s.io/kind@$kind_version"
  quiet go-install-kind env GOBIN="$(dirname "$kind")" nice -n 19 go install "sigs.k8s.io/kind@$kind_version"
fi
kind_src=$(go env GOMODCACHE)/sigs.k8s.io/kind@$kind_version
[ -d "$kind_src/images/base/files" ] || quiet go-mod-download-kind sh -c "cd / && go mod download sigs.k8s.io/kind@$kind_version"
kubeadm_dir=$out/kubeadm-$KUBERNETES_VERSION
kubeadm=$kubeadm_dir/bin/kubeadm
if [ ! -x "$kubeadm" ]; then
  step "go build k8s.io/kubernetes/cmd/kubeadm@$KUBERNETES_VERSION"
  src=$tools/kubernetes-$KUBERNETES_VERSION/src
  [ -f "$src/go.mod" ] || fail "$src/go.mod missing: run test/e2e/cluster/build-tools.sh"
  mkdir -p "$kubeadm_dir/src" "$kubeadm_dir/bin"
  cp "$src/go.mod" "$src/go.sum" "$kubeadm_dir/src/"
  gomod=$(cd / && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | jq -r .GoMod)
  build_date=$(jq -r .Time "${gomod%.mod}.info")
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitCommit="
    ldflags+=" -X $p.gitTreeState=archive -X $p.buildDate=$build_date"
  done
  quiet build-kubeadm sh -c "cd '$kubeadm_dir/src' && nice -n 19 go get k8s.io/kubernetes/cmd/kubeadm@$KUBERNETES_VERSION &&
    CGO_ENABLED=0 nice -n 19 go build -p=2 -trimpath -ldflags='$ldflags' -o '$kubeadm.tmp' k8s.io/kubernetes/cmd/kubeadm"
  mv "$kubeadm.tmp" "$kubeadm"
fi
# The images kubeadm's manifests name (etcd and pause tags come from kubeadm itself).
mapfile -t wanted < <("$kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION")
image_of() { printf '%s\n' "${wanted[@]}" | grep -m1 "/$1:" || fail "kubeadm names no $1 image"; }
pause_ref=$(image_of pause)
etcd_ref=$(image_of etcd)

# --- 2. The Debian tree ----------------------------------------------------------------------------
packages=systemd,containerd,runc,containernetworking-plugins,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,e2fsprogs,bash,ca-certificates,jq,procps
deb_key=$( { echo "$packages"; sha256sum "$here/../debian.sh"; } | sha256sum | cut -c1-16)
debian=$out/debian-$deb_key
if [ ! -d "$debian" ]; then
  step "mmdebstrap bookworm ($packages)"
  rm -rf "$debian.tmp"
  quiet mmdebstrap debian_tree "$debian.tmp" "$packages"
  rm -rf "$debian.tmp"/var/cache/apt/* "$debian.tmp"/var/lib/apt/lists/* "$debian.tmp"/var/log/*
  mv "$debian.tmp" "$debian"
  find "$out" -maxdepth 1 -name 'debian-*' ! -name "debian-$deb_key" -exec rm -rf {} +
fi

# --- 3. The control-plane images, saved for the node's containerd ---------------------------------
local_repo=mce-operator.local/kind-images
img_key=$( { echo images-1; sha256sum "$kbin"/kube-{apiserver,controller-manager,scheduler} "$etcd" "$here/../node/pause.c"; gcc --version | head -n1; } | sha256sum | cut -c1-16)
images_tar=$out/images-$img_key.tar
if [ ! -e "$images_tar" ]; then
  step "control-plane images FROM scratch (kube-apiserver, kube-controller-manager, kube-scheduler, etcd, pause)"
  ctx=$(mktemp -d "$out/ctx.XXXXXX")
  trap 'rm -rf "$ctx"' EXIT
  cp "$here/../node/pause.c" "$ctx/pause.c"
  mkdir -p "$ctx/pause"
  gcc -static -Os -s -o "$ctx/pause/pause" "$ctx/pause.c" || fail "gcc -static pause.c failed"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/pause/Dockerfile"
  refs=()
  quiet build-pause docker build -t "$local_repo/pause:$img_key" "$ctx/pause"
  refs+=("$local_repo/pause:$img_key")
  for b in kube-apiserver kube-controller-manager kube-scheduler etcd; do
    mkdir -p "$ctx/$b"
    if [ "$b" = etcd ]; then cp "$etcd" "$ctx/$b/"; else cp "$kbin/$b" "$ctx/$b/"; fi
    printf 'FROM scratch\nCOPY %s /usr/local/bin/%s\nENV PATH=/usr/local/bin\nENTRYPOINT ["/usr/local/bin/%s"]\n' "$b" "$b" "$b" >"$ctx/$b/Dockerfile"
    quiet "build-$b" docker build -t "$local_repo/$b:$img_key" "$ctx/$b"
    refs+=("$local_repo/$b:$img_key")
  done
  quiet docker-save docker save -o "$images_tar.tmp" "${refs[@]}"
  mv "$images_tar.tmp" "$images_tar"
  docker rmi "${refs[@]}" >/dev/null
  rm -rf "$ctx"; trap - EXIT
  find "$out" -maxdepth 1 -name 'images-*.tar' ! -name "images-$img_key.tar" -delete
fi

# --- 4. The node image -----------------------------------------------------------------------------
node_key=$( { echo "$deb_key $img_key $kind_version $pause_ref $etcd_ref"; sha256sum "$here/up.sh" "$kubeadm" "$kbin/kubelet" "$kbin/kubectl"; } | sha256sum | cut -c1-16)
node_image=mce-operator.local/kind-node:$KUBERNETES_VERSION-$node_key
if ! docker image inspect "$node_image" >/dev/null 2>&1; then
  step "assembling $node_image"
  stage=$(mktemp -d "$out/stage.XXXXXX")
  trap 'rm -rf "$stage"; [ -n "${cpid:-}" ] && kill "$cpid" 2>/dev/null' EXIT
  root=$stage/root
  cp -a "$debian" "$root"
  files=$kind_src/images/base/files
  # kind's base files, with the modes its Dockerfile gives them.
  install -m 0755 "$files"/usr/local/bin/* "$root/usr/local/bin/"
  mkdir -p "$root/kind/bin" "$root/LICENSES" "$root/etc/containerd" "$root/etc/default" "$root/etc/sysctl.d" \
    "$root/etc/systemd/system/kubelet.service.d" "$root/etc/kubernetes/manifests" "$root/kind/manifests"
  install -m 0644 "$files"/kind/README.txt "$root/kind/"
  install -m 0755 "$files"/kind/bin/* "$root/kind/bin/"
  install -m 0644 "$files"/LICENSES/* "$root/LICENSES/"
  install -m 0644 "$files"/etc/crictl.yaml "$root/etc/"
  install -m 0644 "$files"/etc/containerd/* "$root/etc/containerd/"
  install -m 0644 "$files"/etc/default/* "$root/etc/default/"
  install -m 0644 "$files"/etc/sysctl.d/* "$root/etc/sysctl.d/"
  install -m 0644 "$files"/etc/systemd/system/*.service "$files"/etc/systemd/system/*.slice "$root/etc/systemd/system/"
  install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
  # The network magic takes the Docker host's address from the default route; an --internal network
  # has none, so Docker's DNS rules and resolv.conf are left as they are.
  grep -q 'docker_host_ip=$(ip -4 route show default' "$root/usr/local/bin/entrypoint" || fail "kind's entrypoint changed: no default-route lookup"
  sed -i '/docker_host_ip=$(ip -4 route show default/a\    docker_host_ip=${docker_host_ip:-127.0.0.11}' "$root/usr/local/bin/entrypoint"
  # Without CAP_SYS_RESOURCE (see the docker wrapper below) Docker mounts the cgroup hierarchies
  # read-only and systemd cannot raise rlimits or lower OOM scores: make the cgroups writable before
  # kind's fix_cgroup, drop those settings from containerd's unit, and let containerd clamp OOM scores.
  grep -qx 'fix_cgroup' "$root/usr/local/bin/entrypoint" || fail "kind's entrypoint changed: no fix_cgroup call"
  sed -i '/^fix_cgroup$/i\
findmnt -lun -o target,options -R /sys/fs/cgroup | awk '"'"'$2 ~ /(^|,)ro(,|$)/ { print $1 }'"'"' | while read -r m; do mount -o remount,bind,rw "$m"; done' \
    "$root/usr/local/bin/entrypoint"
  sed -i -e '/^LimitNPROC=/d' -e '/^LimitNOFILE=/d' -e '/^OOMScoreAdjust=/d' "$root/etc/systemd/system/containerd.service"
  # The node image is made for the --internal network, which still gives the node a default route to
  # the host (which forwards, with no Docker iptables rules here): the node drops it first thing, so
  # nothing in it can reach beyond this machine.
  sed -i '/^validate_userns$/i\
ip route del default 2>/dev/null || true' "$root/usr/local/bin/entrypoint"
  # Debian's containerd where kind's unit runs it; Debian's CNI plugins where containerd looks.
  ln -sf /usr/bin/containerd "$root/usr/local/bin/containerd"
  mkdir -p "$root/opt/cni"
  ln -sfn /usr/lib/cni "$root/opt/cni/bin"
  # containerd: kind's configuration, the sandbox image kubeadm names, no fuse-overlayfs proxy plugin
  # (its snapshotter is not installed).
  sed -i -e "s#sandbox_image = .*#sandbox_image = \"$pause_ref\"#" \
    -e '/^\[proxy_plugins\]/,/^  address = /d' -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
    "$root/etc/containerd/config.toml"
  chroot "$root" ctr oci spec \
    | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
    | jq 'del(.process.rlimits)' >"$root/etc/containerd/cri-base.json"
  # In place of kindnetd: one node, one bridge, the pod subnet's first /24 (kind's default 10.244.0.0/16).
  mkdir -p "$root/etc/cni/net.d"
  cat >"$root/etc/cni/net.d/10-mce-bridge.conflist" <<'EOF'
{
  "cniVersion": "0.4.0",
  "name": "mce-kind",
  "plugins": [
    { "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.244.0.0/24" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  # kind's own legacy default storage: a StorageClass without a provisioner image.
  cat >"$root/kind/manifests/default-storage.yaml" <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
EOF
  # systemd as kind's Dockerfile sets it up.
  find "$root/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
    "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
    "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$root/sbin/init"
  quiet systemctl-enable chroot "$root" sh -c 'systemctl enable kubelet.service containerd.service undo-mount-hacks.service && systemctl mask systemd-binfmt.service'
  # What `kind build node-image` adds: the binaries, the version, the images.
  install -m 0755 "$kubeadm" "$kbin/kubelet" "$kbin/kubectl" "$root/usr/bin/"
  printf '%s' "$KUBERNETES_VERSION" >"$root/kind/version"
  mkdir -p "$stage/state"
  printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' >"$stage/containerd.toml"
  containerd --config "$stage/containerd.toml" --root "$root/var/lib/containerd" --state "$stage/state" \
    --address "$stage/containerd.sock" >"$out/logs/containerd-import.log" 2>&1 &
  cpid=$!
  c() { ctr --address "$stage/containerd.sock" -n k8s.io "$@"; }
  for _ in $(seq 100); do c version >/dev/null 2>&1 && break; sleep 0.1; done
  c version >/dev/null 2>&1 || fail "a private containerd did not start: $(tail -n 5 "$out/logs/containerd-import.log")"
  quiet ctr-import c images import --label=io.cri-containerd.pinned=pinned --no-unpack "$images_tar"
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    c images tag --force "$local_repo/$b:$img_key" "registry.k8s.io/$b:$KUBERNETES_VERSION" >/dev/null
  done
  c images tag --force "$local_repo/etcd:$img_key" "$etcd_ref" >/dev/null
  c images tag --force "$local_repo/pause:$img_key" "$pause_ref" >/dev/null
  for b in pause kube-apiserver kube-controller-manager kube-scheduler etcd; do c images rm "$local_repo/$b:$img_key" >/dev/null; done
  c images label "$pause_ref" io.cri-containerd.pinned=pinned >/dev/null
  kill "$cpid"; wait "$cpid" 2>/dev/null || true; cpid=
  rm -rf "$root/var/lib/containerd/tmpmounts" "$root"/tmp/*
  step "docker import $node_image"
  tar -C "$root" --numeric-owner -c . | quiet docker-import docker import - "$node_image-rootfs"
  # `docker import` cannot set STOPSIGNAL; a build adds the metadata without a layer.
  printf '%s\n' "FROM $node_image-rootfs" 'ENV container=docker' 'STOPSIGNAL SIGRTMIN+3' \
    'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' "LABEL io.mce-operator.kind-node=$node_key" >"$stage/Dockerfile"
  quiet docker-build-node docker build -t "$node_image" -f "$stage/Dockerfile" "$stage/state"
  docker rmi "$node_image-rootfs" >/dev/null
  rm -rf "$stage"; trap - EXIT
fi
step "node image $node_image ($(( $(docker image inspect -f '{{.Size}}' "$node_image") / 1048576 )) MiB)"

# --- 5. The cluster --------------------------------------------------------------------------------
kubeconfig=$out/$name.kubeconfig
export KIND_EXPERIMENTAL_DOCKER_NETWORK=$network
if ! docker network inspect "$network" >/dev/null 2>&1; then
  quiet network docker network create --internal --label io.mce-operator.kind=1 "$network"
fi
[ "$(docker network inspect -f '{{.Internal}}' "$network")" = true ] || fail "Docker network $network exists and is not --internal"
node=$name-control-plane
# kind runs its nodes with --privileged, which asks for every capability. Where the machine's own
# bounding set lacks one (here CAP_SYS_RESOURCE), runc fails with "unable to apply caps: operation not
# permitted". kind cannot be told otherwise, so it runs with a `docker` in front of the real one that
# turns --privileged into what it means less that capability.
bnd=$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)
if (( (16#$bnd >> 24) & 1 )); then
  kind_path=$PATH
else
  mkdir -p "$out/bin"
  real_docker=$(command -v docker)
  cat >"$out/bin/docker" <<EOF
#!/usr/bin/env bash
# Written by test/e2e/kind/up.sh: --privileged without CAP_SYS_RESOURCE, which this machine lacks.
# \`docker exec\` just drops it: an exec gets the container's capabilities. The node's network is
# --internal, so Docker publishes no port: kind's question for the apiserver's published port is
# answered with the node's address on that network and 6443 (in the apiserver's certificate).
if [ "\$1" = inspect ] && [[ "\$*" == *'.NetworkSettings.Ports "6443/tcp"'* ]]; then
  ip=\$($real_docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "\${@: -1}") || exit
  printf '%s\\t6443\\n' "\$ip"
  exit 0
fi
args=()
for a in "\$@"; do
  if [ "\$a" = --privileged ]; then
    [ "\$1" = exec ] || args+=(--cap-add=ALL --cap-drop=SYS_RESOURCE --security-opt=systempaths=unconfined
      --device-cgroup-rule='a *:* rwm' --device=/dev/kmsg)
  else
    args+=("\$a")
  fi
done
exec $real_docker "\${args[@]}"
EOF
  chmod 0755 "$out/bin/docker"
  kind_path=$out/bin:$PATH
fi
# The kubelet sets kernel-global sysctls (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops, ...)
# through the node's /proc/sys; down.sh puts back what this machine had.
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
[ -f "$out/host-sysctls.conf" ] || sysctl "${sysctls[@]}" >"$out/host-sysctls.conf"
if [ "$(docker inspect -f '{{.Config.Image}}' "$node" 2>/dev/null)" != "$node_image" ]; then
  if "$kind" get clusters 2>/dev/null | grep -qxF "$name"; then
    step "replacing cluster $name"
    PATH=$kind_path "$kind" delete cluster --name "$name" >/dev/null 2>&1
  fi
  config=$out/$name.yaml
  cat >"$config" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true   # the static bridge in /etc/cni/net.d stands in for kindnetd
  kubeProxyMode: "none"     # no kube-proxy image; the e2e suite's clients run on the host
kubeadmConfigPatches:
- |
  kind: InitConfiguration
  skipPhases: ["preflight", "addon/kube-proxy", "addon/coredns"]
- |
  kind: KubeletConfiguration
  failCgroupV1: false
EOF
  step "kind create cluster --name $name (network $network)"
  PATH=$kind_path quiet kind-create nice -n 10 "$kind" create cluster --name "$name" --image "$node_image" --config "$config" \
    --kubeconfig "$out/$name.kind-kubeconfig" --wait 5m
fi
# Older node images of ours, once no node runs them.
docker image ls --format '{{.Repository}}:{{.Tag}}' mce-operator.local/kind-node | grep -vxF "$node_image" | xargs -r docker rmi >/dev/null 2>&1 || true
docker exec "$node" ip route show default | grep -q . && fail "$node has a default route: it could reach beyond this machine"
ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$node")
[ -n "$ip" ] || fail "$node has no address on $network"
PATH=$kind_path "$kind" get kubeconfig --name "$name" >"$kubeconfig.tmp"
mv "$kubeconfig.tmp" "$kubeconfig"
kubectl=$kbin/kubectl
"$kubectl" --kubeconfig "$kubeconfig" wait --for=condition=Ready "node/$node" --timeout=120s >/dev/null ||
  fail "node $node not Ready: $("$kubectl" --kubeconfig "$kubeconfig" get nodes 2>&1 | tail -n 2)"

# --- 6. kwok on the host ---------------------------------------------------------------------------
pidfile=$out/$name.kwok.pid
if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  setsid "$kwok" --kubeconfig="$kubeconfig" --config="$tools/kwok-$KWOK_VERSION/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --server-address="127.0.0.1:$port" --cidr=10.244.128.0/17 --node-lease-duration-seconds=40 \
    </dev/null >"$out/logs/$name.kwok.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 || fail "kwok did not become healthy: $(tail -n 5 "$out/logs/$name.kwok.log")"
fi
step "cluster $name ready: node $node ($ip) Ready, kwok pid $(cat "$pidfile")"
echo "export KUBECONFIG=$kubeconfig"
