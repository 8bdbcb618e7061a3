#!/usr/bin/env bash
# Installs what the containerd end-to-end test (integration/containerd_test.go)
# needs: containerd and runc from Debian's packages, and crictl, pinned, built
# with `go install` into .cache/cni/bin (beside the reference CNI plugins).
# Nothing is started or configured here: the test runs its own containerd,
# with its own root, state, socket and config, inside a throwaway netns.
# Idempotent; quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

CRICTL_VERSION=v1.37.0
BIN=$PWD/.cache/cni/bin

need_apt=()
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-containerd: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  echo "install-containerd: apt-get install ${need_apt[*]}"
  apt-get update -qq
  # The package's own service is of no use to the test; on machines without
  # systemd it does not start anyway, and where it does, it is left alone.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

stamp=$BIN/.crictl-version
if [ ! -x "$BIN/crictl" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$CRICTL_VERSION" ]; then
  echo "install-containerd: building crictl $CRICTL_VERSION into $BIN"
  mkdir -p "$BIN"
  GOBIN=$BIN go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  echo "$CRICTL_VERSION" > "$stamp"
fi
