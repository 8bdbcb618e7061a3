// Package kubenode runs a real Kubernetes node for tests, all of it inside
// one throwaway network namespace of its own: the control plane of
// integration/kubeapi (with kube-scheduler and the controller-manager's
// default controllers), CoreDNS, containerd with its CRI plugin and a
// kubelet that registers the node and runs pods through containerd, which
// calls the CNI plugins in CNIBinDir with the conflist in CNIConfDir. Pods
// are real: a pod created through the API is scheduled, gets a sandbox, a
// network namespace and an IP from the CNI chain, and resolves names through
// CoreDNS at DNSAddress.
//
// The node's network namespace has lo up with DNSAddress (169.254.20.10/32
// by default) on it, an interface node0 (one end of a veth pair) with the
// node's IP (10.250.0.1/24) and a default route through it. Nothing touches the host's own network
// namespace; the namespace is deleted at Stop.
//
// No registry is reachable: images come from tarballs (ImportImage), and
// the pod sandboxes run PauseImage, built from integration/pause. Pods must
// use imagePullPolicy Never.
//
// Binaries: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
// and coredns from $KUBE_BIN_DIR (default <repo>/.cache/kube); etcd,
// containerd, containerd-shim-runc-v2, ctr, runc and nsenter from PATH
// (Debian); crictl and the reference CNI plugins from $CNI_PLUGINS_DIR
// (default <repo>/.cache/cni/bin). When one is missing, or the test does
// not run as root, the test is skipped, or fails under CI=true.
package kubenode

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/metabind/metabind/integration/kubeapi"
	"github.com/metabind/metabind/integration/testproc"
)

// Defaults of the options.
const (
	DefaultName       = kubeapi.DefaultNodeName
	DefaultDNSAddress = "169.254.20.10"
	DefaultNodeIP     = "10.250.0.1/24"
	// DefaultCorefile answers nothing (SERVFAIL: hosts without fallthrough).
	DefaultCorefile = ". {\n    errors\n    hosts {\n    }\n}\n"
)

// startTimeout bounds each wait of Start; a node here is Ready within
// seconds.
const startTimeout = 90 * time.Second

// Option changes how Start runs the node.
type Option func(*options)

type options struct {
	name     string
	nodeIP   netip.Prefix
	dns      netip.Addr
	corefile string
	taints   []corev1.Taint
}

// Name names the node (its kubelet's --hostname-override and credential).
func Name(name string) Option { return func(o *options) { o.name = name } }

// NodeIP is the node's address and its subnet, on its interface node0.
func NodeIP(p netip.Prefix) Option { return func(o *options) { o.nodeIP = p } }

// DNSAddress is where CoreDNS answers (port 53) and the kubelet's
// clusterDNS: an address on the node's lo.
func DNSAddress(a netip.Addr) Option { return func(o *options) { o.dns = a } }

// Corefile is CoreDNS's configuration. Its server blocks listen on port 53
// (of every address of the node, DNSAddress among them, unless they bind).
func Corefile(text string) Option { return func(o *options) { o.corefile = text } }

// Taints registers the node with taints (the kubelet's registerWithTaints).
func Taints(taints ...corev1.Taint) Option {
	return func(o *options) { o.taints = append(o.taints, taints...) }
}

// Node is a running node. Its helpers report failures with t.Fatal: call
// them from the test's goroutine.
type Node struct {
	// Cluster is the control plane (in NetNSPath).
	Cluster *kubeapi.Cluster
	// Name is the node's name, IP its address (on its interface node0),
	// DNSAddress CoreDNS's (on lo) and every pod's nameserver.
	Name       string
	IP         netip.Addr
	DNSAddress netip.Addr
	// NetNSName and NetNSPath are the node's network namespace (ip netns
	// NAME works on it while the node runs).
	NetNSName string
	NetNSPath string
	// CNIBinDir and CNIConfDir are containerd's CNI directories: real
	// directories, the bin dir holding the reference plugins (ptp, bridge,
	// host-local, loopback, portmap).
	CNIBinDir  string
	CNIConfDir string
	// Dir holds all of the node's state, configs and logs; Stop removes it.
	Dir string
	// Containerd is containerd's socket (the kubelet's runtime endpoint).
	Containerd string

	t          testing.TB
	tools      tools
	spawn      *testproc.Spawner
	coredns    *testproc.Proc
	containerd *testproc.Proc
	kubelet    *testproc.Proc
	kubeletDir string
	netnsIno   uint64
	hostDirs   []string // made by the node's processes outside Dir
	stopOnce   sync.Once
}

// Start runs a node in a new network namespace, with its state under a new
// directory in dir, and waits until the kubelet has registered the node.
// The node is not Ready until CNIConfDir holds a network config: write one
// (WriteCNIConfig, PodNetworkConflist), then WaitReady. t.Cleanup stops it.
func Start(t testing.TB, dir string, opts ...Option) *Node {
	t.Helper()
	o := options{
		name:     DefaultName,
		nodeIP:   netip.MustParsePrefix(DefaultNodeIP),
		dns:      netip.MustParseAddr(DefaultDNSAddress),
		corefile: DefaultCorefile,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if os.Geteuid() != 0 {
		kubeapi.Unavailable(t, "needs root (a network namespace, containerd, a kubelet)")
	}
	tools := lookTools(t)

	dir, err := os.MkdirTemp(dir, "kubenode-")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{
		t: t, tools: tools, spawn: testproc.NewSpawner(), Dir: dir,
		Name: o.name, IP: o.nodeIP.Addr(), DNSAddress: o.dns,
		CNIBinDir:  filepath.Join(dir, "cni", "bin"),
		CNIConfDir: filepath.Join(dir, "cni", "net.d"),
		kubeletDir: filepath.Join(dir, "kubelet"),
	}
	t.Cleanup(n.Stop)
	began := time.Now()
	phase := began
	lap := func() time.Duration {
		d := time.Since(phase)
		phase = time.Now()
		return d.Round(time.Millisecond)
	}

	n.hostDirs = missing(hostDirs)
	if err := n.makeNetNS(o.nodeIP); err != nil {
		t.Fatalf("kubenode: %v", err)
	}
	n.Cluster = kubeapi.Start(t, dir, kubeapi.NetNS(n.NetNSPath), kubeapi.NodeName(o.name),
		kubeapi.Scheduler(), kubeapi.Controllers("*"), kubeapi.KubeletRegistersNode())
	// Cleanups run last first: the node stops before kubeapi's own
	// cleanup would take the API away from the kubelet.
	t.Cleanup(n.Stop)
	controlPlane := lap()
	n.startCoreDNS(o.corefile)
	if err := n.prepareCNI(); err != nil {
		t.Fatalf("kubenode: %v", err)
	}
	n.startContainerd()
	pauseDir := filepath.Join(dir, "pause")
	if err := os.Mkdir(pauseDir, 0o755); err != nil {
		t.Fatal(err)
	}
	n.ImportImage(t, BuildPauseImage(t, pauseDir))
	runtime := lap()
	n.startKubelet(o.taints)
	n.waitRegistered()
	kubelet := lap()
	t.Logf("kubenode: node %s (%s, DNS %s) in netns %s registered in %v: control plane %v, CoreDNS+containerd+pause image %v, kubelet %v",
		n.Name, n.IP, n.DNSAddress, n.NetNSName, time.Since(began).Round(time.Millisecond),
		controlPlane, runtime, kubelet)
	return n
}

// Stop stops the kubelet, removes every pod sandbox through CRI (so their
// CNI DELs run), stops containerd, CoreDNS and the control plane, kills
// any shim or pause process of this containerd left over, unmounts
// everything under Dir, deletes the network namespace and removes Dir.
// Start registers it with t.Cleanup; calling it earlier is fine.
func (n *Node) Stop() {
	n.stopOnce.Do(n.stop)
}

// Logs writes the last lines of every process's log to the test log, the
// control plane's included.
func (n *Node) Logs(t testing.TB) {
	t.Helper()
	cluster := ""
	if n.Cluster != nil {
		cluster = n.Cluster.Logs(30)
	}
	t.Logf("kubenode %s: logs (end):\n%s%s", n.Name, n.nodeLogs(), cluster)
}

// nodeLogs are the last lines of the logs of the node's own processes.
func (n *Node) nodeLogs() string {
	var b strings.Builder
	for _, p := range []*testproc.Proc{n.kubelet, n.containerd, n.coredns} {
		if p != nil {
			fmt.Fprintf(&b, "--- %s (%s):\n%s\n", p.Name, p.LogPath, p.Tail(60))
		}
	}
	return b.String()
}

// ctx is the bound of one call to the API or a tool.
func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// poll calls cond until it reports done or an error, or until timeout; why
// describes the last state for the timeout's error.
func poll(timeout time.Duration, cond func() (done bool, why string, err error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, why, err := cond()
		if done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %s", timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
