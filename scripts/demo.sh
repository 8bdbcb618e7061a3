#!/usr/bin/env bash
# make demo: a throwaway node netns, two pods created through a real conflist
# (ptp + host-local + metabind) with cnitool, the responder with
# conf/responder.yaml, and the real Go metadata clients inside each pod.
# Everything it creates is removed on exit, failure or Ctrl-C. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }

ROOT=$PWD
BIN=$ROOT/bin
CNI_PLUGINS_DIR=${CNI_PLUGINS_DIR:-$ROOT/.cache/cni/bin}
for b in "$BIN/metabind" "$BIN/metabind-responder" "$BIN/metabindctl" "$CNI_PLUGINS_DIR/ptp" "$CNI_PLUGINS_DIR/cnitool"; do
  [ -x "$b" ] || { echo "demo: $b missing: run 'make demo' (it builds and installs what the demo needs)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/metabind-demo.XXXXXX)
NODE=mbdemo-node-$$
NODE_NS=/run/netns/$NODE
PODS=("payments api-7f9c" "web frontend-5d2b")
RESPONDER_PID=
created_pods=()

in_node() { nsenter --net="$NODE_NS" -- "$@"; }
# cnitool, run on the node as the runtime would run the conflist. CNI_ARGS
# and CAP_ARGS (pod identity and annotations) come from the caller.
cnitool_node() {
  in_node env CNI_PATH="$BIN:$CNI_PLUGINS_DIR" NETCONFPATH="$WORK/net.d" "$CNI_PLUGINS_DIR/cnitool" "$@"
}

cleanup() {
  set +e
  for p in "${created_pods[@]}"; do
    CNI_ARGS="IgnoreUnknown=1" cnitool_node del metabind-demo "/run/netns/$p" >/dev/null 2>&1
    ip netns del "$p" 2>/dev/null
  done
  [ -n "$RESPONDER_PID" ] && kill "$RESPONDER_PID" 2>/dev/null && wait "$RESPONDER_PID" 2>/dev/null
  ip netns del "$NODE" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> building the pod client (the real cloud.google.com/go/compute/metadata and golang.org/x/oauth2/google)"
go build -o "$WORK/podclient" ./integration/podclient

echo "==> node netns $NODE"
ip netns add "$NODE"
ip -n "$NODE" link set lo up

mkdir -p "$WORK/net.d"
cat > "$WORK/net.d/10-demo.conflist" <<CONF
{
  "cniVersion": "1.1.0",
  "name": "metabind-demo",
  "plugins": [
    {"type": "ptp", "ipMasq": false,
     "ipam": {"type": "host-local", "dataDir": "$WORK/ipam", "ranges": [[{"subnet": "10.244.7.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "metabind", "stateDir": "$WORK/state", "logFile": "$WORK/cni.log",
     "capabilities": {"io.kubernetes.cri.pod-annotations": true}}
  ]
}
CONF

echo "==> responder on 169.254.169.252:988 with conf/responder.yaml"
# nsenter execs the responder, so $! is the responder itself (a function in
# the background would be a subshell, and killing it would leave the
# responder running).
nsenter --net="$NODE_NS" -- "$BIN/metabind-responder" --state-dir "$WORK/state" --config conf/responder.yaml \
  --listen 169.254.169.252:988 >"$WORK/responder.log" 2>&1 &
RESPONDER_PID=$!
for _ in $(seq 100); do
  in_node bash -c 'exec 3<>/dev/tcp/169.254.169.252/988' 2>/dev/null && break
  kill -0 "$RESPONDER_PID" 2>/dev/null || { cat "$WORK/responder.log"; exit 1; }
  sleep 0.1
done

for entry in "${PODS[@]}"; do
  read -r ns name <<<"$entry"
  pod=mbdemo-$name-$$
  ip netns add "$pod"
  created_pods+=("$pod")
  uid=$(cat /proc/sys/kernel/random/uuid)
  CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=$ns;K8S_POD_NAME=$name;K8S_POD_UID=$uid;K8S_POD_INFRA_CONTAINER_ID=$pod" \
  CAP_ARGS="{\"io.kubernetes.cri.pod-annotations\": {\"demo/team\": \"$ns\"}}" \
    cnitool_node add metabind-demo "/run/netns/$pod" >/dev/null
done

echo
for i in "${!PODS[@]}"; do
  read -r ns name <<<"${PODS[$i]}"
  pod=${created_pods[$i]}
  ip=$(ip -n "$pod" -4 -o addr show dev eth0 | awk '{print $4}')
  echo "pod $ns/$name  ip $ip"
  nsenter --net="/run/netns/$pod" -- "$WORK/podclient" -o text -audience https://demo.example
  echo
done

echo "==> metabindctl bindings list"
in_node "$BIN/metabindctl" --state-dir "$WORK/state" bindings list
echo
echo "demo: done; removing everything it created"
