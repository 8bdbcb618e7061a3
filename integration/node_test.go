package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/metabind/metabind/redirect"
)

const (
	metadataIP    = "169.254.169.254"
	responderAddr = "169.254.169.252:988"
	// nodeMetadataBody is what the simulated cloud metadata server on the
	// node answers; no pod may ever read it.
	nodeMetadataBody = "NODE-CREDENTIALS"
)

// node is a throwaway network namespace standing in for a Kubernetes node,
// with a CNI conflist ending in metabind.
type node struct {
	t        *testing.T
	ns       ns.NetNS
	dir      string
	stateDir string
	logFile  string
	cni      *libcni.CNIConfig
	list     *libcni.NetworkConfigList
	// unbound is a ptp network without metabind: its pods stand for pods
	// created before metabind was installed, or whose ADD failed.
	unbound    *libcni.NetworkConfigList
	responders int    // responder processes started, for their log files
	listen     string // the responder's --listen
	// responderArgs are more flags for the responders startResponder runs.
	responderArgs []string
	// backend is the redirect backend the conflist's metabind runs.
	backend string
}

// chain is the main plugin in front of metabind.
type chain struct {
	name   string // "ptp" or "bridge"
	subnet string
	// rangeStart/rangeEnd narrow host-local's pool (both empty: whole subnet).
	rangeStart, rangeEnd string
	// subnet6 makes the pods dual stack, and metabind bind their IPv6
	// addresses too (metadataAddress6).
	subnet6 string
	// cniVersion is the conflist's spec version; empty: 1.1.0.
	cniVersion string
	// backend is the netconf's "backend"; empty: testBackend.
	backend string
}

// testBackend is the backend of every node whose chain names none:
// METABIND_TEST_BACKEND, so the whole suite runs against either backend
// (empty: the netconf's default).
var testBackend = os.Getenv("METABIND_TEST_BACKEND")

// backendOf is the backend c's node runs, as the plugin resolves it.
func (c chain) backendOf() string {
	if c.backend != "" {
		return redirect.Resolve(c.backend)
	}
	return redirect.Resolve(testBackend)
}

// IPv6 addresses of the dual-stack set-up.
const (
	metadataAddr6  = "[fd00:ec2::254]:80"
	responderAddr6 = "[fd00:ec2::252]:988"
)

func (c chain) mainPlugin(dir string) string {
	ipam := fmt.Sprintf(`{"type": "host-local", "dataDir": %q, "routes": [{"dst": "0.0.0.0/0"}],
		"ranges": [[{"subnet": %q, "rangeStart": %q, "rangeEnd": %q}]]}`,
		filepath.Join(dir, "ipam"), c.subnet, c.rangeStart, c.rangeEnd)
	ipam = strings.ReplaceAll(strings.ReplaceAll(ipam, `, "rangeStart": ""`, ""), `, "rangeEnd": ""`, "")
	if c.subnet6 != "" {
		ipam = strings.Replace(ipam, `]]}`, fmt.Sprintf(`], [{"subnet": %q}]]}`, c.subnet6), 1)
		ipam = strings.Replace(ipam, `{"dst": "0.0.0.0/0"}`, `{"dst": "0.0.0.0/0"}, {"dst": "::/0"}`, 1)
	}
	switch c.name {
	case "bridge":
		return fmt.Sprintf(`{"type": "bridge", "bridge": "mbtest0", "isGateway": true, "ipMasq": false, "ipam": %s}`, ipam)
	default:
		return fmt.Sprintf(`{"type": "ptp", "ipMasq": false, "ipam": %s}`, ipam)
	}
}

func newNode(t *testing.T, c chain) *node {
	t.Helper()
	requireEnv(t)
	nodeNS, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create node netns: %v", err)
	}
	t.Cleanup(func() {
		nodeNS.Close()
		testutils.UnmountNS(nodeNS)
	})
	n := &node{t: t, ns: nodeNS, dir: t.TempDir()}
	n.stateDir = filepath.Join(n.dir, "state")
	n.logFile = filepath.Join(n.dir, "log", "cni.log")
	err = nodeNS.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatal(err)
	}
	dual := ""
	n.listen = responderAddr
	if c.subnet6 != "" {
		dual = fmt.Sprintf(`, "metadataAddress6": %q, "responderAddress6": %q`, metadataAddr6, responderAddr6)
		n.listen += "," + responderAddr6
	}
	cniVersion := c.cniVersion
	if cniVersion == "" {
		cniVersion = "1.1.0"
	}
	if b := c.backend; b != "" || testBackend != "" {
		if b == "" {
			b = testBackend
		}
		dual += fmt.Sprintf(`, "backend": %q`, b)
	}
	n.backend = c.backendOf()
	conflist := fmt.Sprintf(`{"cniVersion": %q, "name": "metabind-test", "plugins": [%s,
		{"type": "metabind", "stateDir": %q, "logFile": %q%s, "capabilities": {"io.kubernetes.cri.pod-annotations": true}}]}`,
		cniVersion, c.mainPlugin(n.dir), n.stateDir, n.logFile, dual)
	n.list, err = libcni.ConfListFromBytes([]byte(conflist))
	if err != nil {
		t.Fatalf("conflist: %v\n%s", err, conflist)
	}
	unbound := chain{name: "ptp", subnet: strings.Replace(c.subnet, "10.197.", "10.196.", 1)}
	n.unbound, err = libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "no-metabind", "plugins": [%s]}`,
		unbound.mainPlugin(n.dir))))
	if err != nil {
		t.Fatal(err)
	}
	n.usePluginFrom(binDir)
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(n.logFile); err == nil {
				t.Logf("plugin log:\n%s", b)
			}
		}
	})
	return n
}

// usePluginFrom makes the conflist run the metabind binary in dir from now
// on, as a DaemonSet's init container installing another release does; the
// reference plugins and the runtime's result cache stay.
func (n *node) usePluginFrom(dir string) {
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{dir, cniPluginsDir}, filepath.Join(n.dir, "cache"), nil)
}

// pod is a pod sandbox: its own netns with one interface from the conflist.
type pod struct {
	namespace, name, uid string
	ns                   ns.NetNS
	rt                   *libcni.RuntimeConf
	ip                   netip.Addr
	ip6                  netip.Addr      // dual stack only
	result               *current.Result // what the conflist's ADD returned
	resultVersion        string          // its spec version, as the runtime got it
}

func randomID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newPodNS makes a pod netns that outlives any one sandbox in it.
func newPodNS(t *testing.T) ns.NetNS {
	t.Helper()
	podNS, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create pod netns: %v", err)
	}
	t.Cleanup(func() {
		podNS.Close()
		testutils.UnmountNS(podNS)
	})
	return podNS
}

// addPod runs the conflist's ADD for a new pod, as kubelet's runtime would.
func (n *node) addPod(t *testing.T, namespace, name string) *pod {
	t.Helper()
	p, err := n.addPodWith(n.list, newPodNS(t), namespace, name)
	if err != nil {
		t.Fatalf("ADD %s/%s: %v", namespace, name, err)
	}
	return p
}

// addUnboundPod creates a pod through the network without metabind.
func (n *node) addUnboundPod(t *testing.T, namespace, name string) *pod {
	t.Helper()
	p, err := n.addPodWith(n.unbound, newPodNS(t), namespace, name)
	if err != nil {
		t.Fatalf("ADD %s/%s without metabind: %v", namespace, name, err)
	}
	return p
}

func (n *node) addPodIn(podNS ns.NetNS, namespace, name string) (*pod, error) {
	return n.addPodWith(n.list, podNS, namespace, name)
}

func (n *node) addPodWith(list *libcni.NetworkConfigList, podNS ns.NetNS, namespace, name string) (*pod, error) {
	id := randomID()
	return n.addPodWithID(list, podNS, id, namespace, name, "uid-"+id[:12])
}

// addPodWithID is addPodWith for a container ID and pod UID of the caller's.
func (n *node) addPodWithID(list *libcni.NetworkConfigList, podNS ns.NetNS, id, namespace, name, uid string) (*pod, error) {
	p := &pod{namespace: namespace, name: name, uid: uid, ns: podNS}
	p.rt = &libcni.RuntimeConf{
		ContainerID: id,
		NetNS:       podNS.Path(),
		IfName:      "eth0",
		Args: [][2]string{
			{"K8S_POD_UID", p.uid}, {"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", namespace},
			{"K8S_POD_NAME", name}, {"K8S_POD_INFRA_CONTAINER_ID", id},
		},
		CapabilityArgs: map[string]interface{}{
			"io.kubernetes.cri.pod-annotations": map[string]string{"example.com/team": namespace},
		},
	}
	var res *current.Result
	err := n.ns.Do(func(ns.NetNS) error {
		r, err := n.cni.AddNetworkList(context.Background(), list, p.rt)
		if err != nil {
			return err
		}
		p.resultVersion = r.Version()
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return nil, err
	}
	p.result = res
	for _, ipc := range res.IPs {
		if ip, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok {
			p.ip = ip
		} else if ip, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			p.ip6 = ip
		}
	}
	if !p.ip.IsValid() {
		return nil, fmt.Errorf("ADD result has no IPv4 address: %+v", res)
	}
	return p, nil
}

// delPod runs the conflist's DEL (metabind first, then the main plugin).
func (n *node) delPod(t *testing.T, p *pod) {
	t.Helper()
	if err := n.del(p.rt); err != nil {
		t.Fatalf("DEL %s/%s: %v", p.namespace, p.name, err)
	}
}

func (n *node) del(rt *libcni.RuntimeConf) error {
	return n.ns.Do(func(ns.NetNS) error {
		return n.cni.DelNetworkList(context.Background(), n.list, rt)
	})
}

func (n *node) check(p *pod) error {
	return n.ns.Do(func(ns.NetNS) error {
		return n.cni.CheckNetworkList(context.Background(), n.list, p.rt)
	})
}

// run runs a command inside the node netns and returns its output.
func (n *node) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + n.ns.Path(), "--", name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// natRules lists metabind's per-pod redirect rules on the node.
func (n *node) natRules(t *testing.T) string {
	if n.backend == redirect.BackendNFTables {
		return n.run(t, "nft", "list", "map", "ip", redirect.NFTTable, "pod_dnat")
	}
	return n.run(t, "iptables", "-t", "nat", "-S", "METABIND-DNAT")
}

func (n *node) pluginLog() string {
	b, _ := os.ReadFile(n.logFile)
	return string(b)
}

// responderLog is everything every responder of this node logged.
func (n *node) responderLog() string {
	var all strings.Builder
	for i := 1; i <= n.responders; i++ {
		b, _ := os.ReadFile(filepath.Join(n.dir, fmt.Sprintf("responder-%d.log", i)))
		all.Write(b)
	}
	return all.String()
}

// startResponder runs the real responder binary in the node netns and waits
// until it answers.
func (n *node) startResponder(t *testing.T, config string) *exec.Cmd {
	t.Helper()
	return n.startResponderFrom(t, binDir, config)
}

// startResponderFrom is startResponder for the metabind-responder in dir.
func (n *node) startResponderFrom(t *testing.T, dir, config string) *exec.Cmd {
	t.Helper()
	cfg := filepath.Join(n.dir, "responder.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	n.responders++
	logPath := filepath.Join(n.dir, fmt.Sprintf("responder-%d.log", n.responders))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.ns.Path(), "--", filepath.Join(dir, "metabind-responder"),
		"--state-dir", n.stateDir, "--listen", n.listen, "--config", cfg}, n.responderArgs...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("responder log:\n%s", b)
		}
	})
	client := n.httpClient()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://" + responderAddr + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("responder did not answer within 10s (last error %v); log:\n%s", err, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startNodeMetadataServer stands in for the cloud's metadata server as the
// node sees it: 169.254.169.254:80, local to the node netns (on its
// loopback: these machines' kernels have no dummy links). The node's own
// processes reach it; no pod may.
func (n *node) startNodeMetadataServer(t *testing.T) {
	t.Helper()
	var ln net.Listener
	err := n.ns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr(metadataIP + "/32")
		if err := netlink.AddrAdd(lo, addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", metadataIP+":80")
		return err
	})
	if err != nil {
		t.Fatalf("node metadata server: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Metadata-Flavor", "Google")
		fmt.Fprint(w, nodeMetadataBody)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// httpClient makes connections from inside the node netns.
func (n *node) httpClient() *http.Client {
	return nsHTTPClient(n.ns, nil)
}

// jsonRoundTrip copies in into out through JSON (a deep copy of a result).
func jsonRoundTrip(in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
