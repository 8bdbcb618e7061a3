#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine:
# iptables, iproute2 and etcd from apt; the reference CNI plugins and cnitool,
# pinned, built with `go install` into .cache/cni/bin (nothing lands on the
# system's own CNI path); kube-apiserver and kube-controller-manager, pinned by
# tools/kube, built into .cache/kube (the first build takes ~16 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

CNI_PLUGINS_VERSION=v1.10.0
CNI_VERSION=v1.3.1
CNI_BIN=$PWD/.cache/cni/bin

need_apt=()
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nsenter >/dev/null || need_apt+=(util-linux)
[ "${1:-}" != "--kube" ] || command -v etcd >/dev/null || need_apt+=(etcd-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp=$CNI_BIN/.versions
want="plugins=$CNI_PLUGINS_VERSION cni=$CNI_VERSION"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "install-deps: building reference CNI plugins $CNI_PLUGINS_VERSION and cnitool $CNI_VERSION into $CNI_BIN"
  mkdir -p "$CNI_BIN"
  for p in main/ptp main/bridge main/loopback ipam/host-local meta/portmap; do
    GOBIN=$CNI_BIN go install "github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION"
  done
  GOBIN=$CNI_BIN go install "github.com/containernetworking/cni/cnitool@$CNI_VERSION"
  echo "$want" > "$stamp"
fi
scripts/install-containerd.sh

# The control plane of the Kubernetes tests (integration/kubeapi), only with
# --kube (make test; the demo does not need it). Rebuilt when missing or when
# tools/kube pins another version than the one built.
[ "${1:-}" = "--kube" ] || exit 0
KUBE_BIN=${KUBE_BIN_DIR:-$PWD/.cache/kube}
kube_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' tools/kube/go.mod)
want="kubernetes=$kube_version"
# No stamp: binaries built by hand before the stamp existed; taken as they are.
have=$(cat "$KUBE_BIN/.versions" 2>/dev/null || echo "$want")
if [ ! -x "$KUBE_BIN/kube-apiserver" ] || [ ! -x "$KUBE_BIN/kube-controller-manager" ] || [ "$have" != "$want" ]; then
  echo "install-deps: building kube-apiserver and kube-controller-manager $kube_version into $KUBE_BIN (~16 min on 2 cores the first time)"
  mkdir -p "$KUBE_BIN"
  (cd tools/kube && go build -o "$KUBE_BIN/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
  echo "$want" > "$KUBE_BIN/.versions"
fi
