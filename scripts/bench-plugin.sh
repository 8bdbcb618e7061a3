#!/usr/bin/env bash
# make bench: what metabind adds to CNI ADD and DEL, measured side by side
# against the same chain without it. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root (it creates network namespaces)" >&2; exit 1; }
go run ./integration/benchplugin -bin bin -cni "${CNI_PLUGINS_DIR:-.cache/cni/bin}" -pods "${PODS:-50}"
