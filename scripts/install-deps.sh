#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine:
# iptables, iproute2 and etcd from apt; the reference CNI plugins and cnitool,
# pinned, built with `go install` into .cache/cni/bin (nothing lands on the
# system's own CNI path); with --kube, kube-apiserver, kube-controller-manager,
# kube-scheduler and kubelet, pinned by tools/kube and built in one `go build`
# (shared compilation: ~20 min the first time on 2 cores), and CoreDNS, all
# into .cache/kube.
set -euo pipefail
cd "$(dirname "$0")/.."

CNI_PLUGINS_VERSION=v1.10.0
CNI_VERSION=v1.3.1
CNI_BIN=$PWD/.cache/cni/bin

need_apt=()
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nsenter >/dev/null || need_apt+=(util-linux)
command -v nft >/dev/null || need_apt+=(nftables) # the nftables backend's tests read the ruleset with it
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

# The Kubernetes node of the tests (integration/kubeapi, integration/kubenode),
# only with --kube (make test; the demo does not need it). Rebuilt when one is
# missing or when tools/kube or COREDNS_VERSION pins another version than the
# one built.
[ "${1:-}" = "--kube" ] || exit 0
COREDNS_VERSION=v1.15.0
KUBE_BIN=${KUBE_BIN_DIR:-$PWD/.cache/kube}
kube_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' tools/kube/go.mod)
kube_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
want="kubernetes=$kube_version"
have=$(cat "$KUBE_BIN/.versions" 2>/dev/null || true)
missing=0
for c in "${kube_cmds[@]}"; do [ -x "$KUBE_BIN/$c" ] || missing=1; done
if [ $missing = 1 ] || [ "$have" != "$want" ]; then
  echo "install-deps: building ${kube_cmds[*]} $kube_version into $KUBE_BIN (~20 min on 2 cores the first time)"
  mkdir -p "$KUBE_BIN"
  pkgs=()
  for c in "${kube_cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd tools/kube && go build -o "$KUBE_BIN/" "${pkgs[@]}")
  echo "$want" > "$KUBE_BIN/.versions"
fi
if [ ! -x "$KUBE_BIN/coredns" ] || [ "$(cat "$KUBE_BIN/.coredns-version" 2>/dev/null)" != "$COREDNS_VERSION" ]; then
  echo "install-deps: building CoreDNS $COREDNS_VERSION into $KUBE_BIN (~3 min)"
  GOBIN=$KUBE_BIN go install "github.com/coredns/coredns@$COREDNS_VERSION"
  echo "$COREDNS_VERSION" > "$KUBE_BIN/.coredns-version"
fi
