#!/usr/bin/env bash
# make bench: every figure of docs/PERFORMANCE.md, each comparison measured
# side by side in the same run: the plugin (integration/benchplugin) and the
# responder (integration/benchresponder). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root (it creates network namespaces)" >&2; exit 1; }
go run ./integration/benchplugin -bin bin -cni "${CNI_PLUGINS_DIR:-.cache/cni/bin}" -pods "${PODS:-50}"
echo
go run ./integration/benchresponder -bin bin
