#!/usr/bin/env bash
# make bench: every figure of docs/PERFORMANCE.md, each comparison measured
# side by side in the same run: the plugin's start-up and cost
# (integration/benchplugin, both backends) and the responder, on loopback
# and through metabind's DNAT from pods, on each backend
# (integration/benchresponder). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root (it creates network namespaces)" >&2; exit 1; }
cni="${CNI_PLUGINS_DIR:-.cache/cni/bin}"
go run ./integration/benchplugin -startup -bin bin -cni "$cni"
echo
go run ./integration/benchplugin -bin bin -cni "$cni" -pods "${PODS:-50}"
echo
go run ./integration/benchresponder -bin bin
for backend in nftables iptables; do
  echo
  go run ./integration/benchresponder -bin bin -dnat -cni "$cni" -rounds 5 -backend "$backend"
done
