#!/usr/bin/env bash
# Prepares the real-node tier (see README.md beside this file): the cluster's tools (with the kubelet
# and kube-proxy), the Debian kernel the guest boots, the images built by a real engine, and the
# guest's root filesystem with those images in its containerd. Everything is cached under
# ${XDG_CACHE_HOME:-~/.cache}/mce-operator/, keyed by its inputs, so a warm run only checks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/../cluster/build-tools.sh"
bash "$here/../kernel/prepare.sh"
bash "$here/images.sh"
bash "$here/rootfs.sh"
