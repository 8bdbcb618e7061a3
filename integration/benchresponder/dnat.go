package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/metabind/metabind/plugin"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// Targets of issue 14 for the DNAT path.
const (
	targetDNATCeilingRatio = 0.9
	targetDNATScaleRatio   = 0.95
)

// dnatBackend is the redirect backend of the -dnat nodes (-backend).
var dnatBackend string

// dnatNode is a throwaway node netns with metabind's real rules: pods
// ADDed through ptp + host-local + metabind, other bindings written as the
// plugin leaves them (scale.go in benchplugin does the same), and a server
// on the responder address behind them.
type dnatNode struct {
	name     string
	ns       ns.NetNS
	dir      string
	stateDir string
	list     *libcni.NetworkConfigList
	cni      *libcni.CNIConfig
	pods     []pod
	podNS    []ns.NetNS
	rts      []*libcni.RuntimeConf
}

// runDNAT measures cached-token throughput from pods whose metadata traffic
// is DNATed by metabind's rules: the responder against the ceiling server
// placed behind the very same rules (a node of its own, the same plugin,
// the same responder address), and the responder on a node with 1,000
// bound pods against one with 10. Rounds alternate between the three.
// Needs root (network namespaces, iptables).
func (b *bench) runDNAT(binDir, cniDir string) error {
	binDir, _ = filepath.Abs(binDir)
	cniDir, _ = filepath.Abs(cniDir)
	dir, err := os.MkdirTemp("", "metabind-benchdnat-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	load1, _ := os.ReadFile("/proc/loadavg")
	started := time.Now()

	var nodes []*dnatNode
	defer func() {
		b.stopAll()
		for _, n := range nodes {
			n.close()
		}
	}()
	// Every node: the load pods ADDed first (the first ADD sets up the base
	// rules), then the other bindings. Each pod's source-check rule goes on
	// top of METABIND-SOURCE, so every packet of the load pods is checked
	// against every other pod's rule first: the per-packet cost at its
	// worst. (The DNAT rules are appended, but NAT is decided once per
	// connection, and the clients keep theirs.)
	for i, spec := range []struct {
		name  string
		total int
	}{{"ceiling", smallStore}, {"responder", smallStore}, {"responder1000", memStore}} {
		n, err := newDNATNode(spec.name, filepath.Join(dir, spec.name), fmt.Sprintf("10.%d.0.0/16", 180+i), binDir, cniDir)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
		for k := range loadPodCount {
			p, err := n.addPod(fmt.Sprintf("load-%d", k))
			if err != nil {
				return err
			}
			n.pods = append(n.pods, p)
		}
		if err := n.others(spec.total - loadPodCount); err != nil {
			return err
		}
	}
	writeConfig := func(n *dnatNode) (string, error) {
		cfg := filepath.Join(n.dir, "responder.yaml")
		return cfg, os.WriteFile(cfg, []byte(responderConfig), 0o600)
	}
	ceilNode, respNode, resp1000Node := nodes[0], nodes[1], nodes[2]
	if err := ceilNode.ns.Do(func(ns.NetNS) error { return addLocal(responderIP()) }); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	listen := plugin.DefaultResponderAddress
	if _, err := b.start("ceiling", ceilNode.command(self, "-ceiling", listen), listen, ceilNode.client()); err != nil {
		return err
	}
	for _, n := range []*dnatNode{respNode, resp1000Node} {
		cfg, err := writeConfig(n)
		if err != nil {
			return err
		}
		cmd := n.command(b.bin, "--state-dir", n.stateDir, "--listen", listen, "--config", cfg, "--log-level", "info", "--admin-listen", "")
		if _, err := b.start("responder", cmd, listen, n.client()); err != nil {
			return err
		}
	}

	meta := "http://" + plugin.DefaultMetadataAddress
	ceil := &series{name: "ceiling (1 KiB 200) via DNAT, 10 pods", work: workload{paths: []string{"/"}}}
	tok := &series{name: "responder token (cached) via DNAT, 10 pods", work: workload{paths: []string{tokenPath}}}
	tok1000 := &series{name: "responder token (cached) via DNAT, 1000 pods", work: workload{paths: []string{tokenPath}}}
	runs := []struct {
		s *series
		n *dnatNode
	}{{ceil, ceilNode}, {tok, respNode}, {tok1000, resp1000Node}}
	for r := range b.rounds {
		for k := range runs {
			run := runs[(r+k)%len(runs)]
			res, err := load(meta, run.s.work, run.n.pods, b.clients, b.duration)
			if err != nil {
				return fmt.Errorf("%s: %w", run.s.name, err)
			}
			run.s.results = append(run.s.results, res)
		}
	}
	load2, _ := os.ReadFile("/proc/loadavg")

	fmt.Printf("metabind-responder through the DNAT path: %d keep-alive clients from %d pods per node (ptp veths, metabind's real rules),\n",
		b.clients, loadPodCount)
	fmt.Printf("to %s; %d rounds x %v per row, rows alternating; medians of the rounds. %d CPUs, %s;\n",
		plugin.DefaultMetadataAddress, b.rounds, b.duration, runtime.NumCPU(), cpuModel())
	fmt.Printf("load average before %s, after %s; %v in all.\n\n",
		strings.Join(strings.Fields(string(load1))[:3], " "), strings.Join(strings.Fields(string(load2))[:3], " "),
		time.Since(started).Round(time.Second))
	fmt.Printf("%-48s %9s %9s %9s  %-22s %s\n", "", "req/s", "p50", "p99", "req/s per round", "target")
	row := func(s *series) {
		fmt.Printf("%-48s %9.0f %9s %9s  %-22s\n", s.name, s.rps(), ms(s.p50()), ms(s.p99()), s.perRound())
	}
	ratio := func(name string, num, den *series, target float64) {
		r := num.rps() / den.rps()
		verdict := "met"
		if r < target {
			verdict = "NOT MET"
		}
		fmt.Printf("%-48s %8.2fx %9s %9s  %-22s >= %.2gx: %s\n", name, r, "", "", "", target, verdict)
	}
	fmt.Println("7. Cached tokens from pods, through metabind's DNAT and source check")
	row(ceil)
	row(tok)
	ratio("   responder / ceiling", tok, ceil, targetDNATCeilingRatio)
	row(tok1000)
	ratio(fmt.Sprintf("   %d / %d bound pods", memStore, smallStore), tok1000, tok, targetDNATScaleRatio)
	return nil
}

func responderIP() netip.Addr {
	return netip.MustParseAddrPort(plugin.DefaultResponderAddress).Addr()
}

// addLocal puts ip on the loopback link of the current netns (the
// responder does this for itself, see server.EnsureListenAddress).
func addLocal(ip netip.Addr) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(ip.String() + "/32")
	if err != nil {
		return err
	}
	return netlink.AddrAdd(lo, addr)
}

func newDNATNode(name, dir, subnet, binDir, cniDir string) (*dnatNode, error) {
	nodeNS, err := testutils.NewNS()
	if err != nil {
		return nil, err
	}
	n := &dnatNode{name: name, ns: nodeNS, dir: dir, stateDir: filepath.Join(dir, "state")}
	err = nodeNS.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		n.close()
		return nil, err
	}
	conflist := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "bench-%s", "plugins": [
		{"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
		{"type": "metabind", "stateDir": %q, "logFile": %q, "backend": %q}]}`,
		name, filepath.Join(dir, "ipam"), subnet, n.stateDir, filepath.Join(dir, "cni.log"), redirect.Resolve(dnatBackend))
	if n.list, err = libcni.ConfListFromBytes([]byte(conflist)); err != nil {
		n.close()
		return nil, err
	}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir, cniDir}, filepath.Join(dir, "cache"), nil)
	return n, nil
}

// addPod ADDs a pod of namespace bench through the real plugins.
func (n *dnatNode) addPod(name string) (pod, error) {
	podNS, err := testutils.NewNS()
	if err != nil {
		return pod{}, err
	}
	n.podNS = append(n.podNS, podNS)
	id := make([]byte, 16)
	rand.Read(id)
	cid := hex.EncodeToString(id)
	rt := &libcni.RuntimeConf{ContainerID: cid, NetNS: podNS.Path(), IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", name},
		{"K8S_POD_UID", "uid-" + cid[:12]}, {"K8S_POD_INFRA_CONTAINER_ID", cid},
	}}
	var res *current.Result
	err = n.ns.Do(func(ns.NetNS) error {
		r, err := n.cni.AddNetworkList(context.Background(), n.list, rt)
		if err != nil {
			return fmt.Errorf("ADD %s on %s: %w", name, n.name, err)
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return pod{}, err
	}
	n.rts = append(n.rts, rt)
	if len(res.IPs) == 0 {
		return pod{}, fmt.Errorf("ADD %s: no IP in the result", name)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	return pod{ip: ip, uid: "uid-" + cid[:12], netns: podNS}, nil
}

// others binds count more pods, with their rules, as the plugin leaves
// them, but without veths or netns behind them.
func (n *dnatNode) others(count int) error {
	if count <= 0 {
		return nil
	}
	resp := netip.MustParseAddrPort(plugin.DefaultResponderAddress)
	newBackend, err := redirect.MakerFor(dnatBackend)
	if err != nil {
		return err
	}
	var rd redirect.Backend
	err = n.ns.Do(func(ns.NetNS) error {
		rd, err = newBackend(netip.MustParseAddrPort(plugin.DefaultMetadataAddress), resp)
		return err
	})
	if err != nil {
		return err
	}
	bs := make([]store.Binding, count)
	rules := make([]redirect.Rule, count)
	for i := range bs {
		bs[i] = store.Binding{
			IP: netip.AddrFrom4([4]byte{10, 194, byte(i / 250), byte(1 + i%250)}), ContainerID: fmt.Sprintf("other-%d", i),
			IfName: "eth0", HostInterface: fmt.Sprintf("vother%d", i), Responder: resp,
			Namespace: "bench", Pod: fmt.Sprintf("other-%d", i), PodUID: fmt.Sprintf("uid-other-%d", i), Created: time.Now(),
		}
		b := bs[i]
		rules[i] = redirect.Rule{HostInterface: b.HostInterface, IP: b.IP, Responder: b.Responder, ContainerID: b.ContainerID, IfName: b.IfName}
	}
	if err := putAll(n.stateDir, bs); err != nil {
		return err
	}
	return n.ns.Do(func(ns.NetNS) error { return rd.AddBatch(rules, false) })
}

// command runs name in the node netns.
func (n *dnatNode) command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.ns.Path(), "--", name}, args...)...)
}

// client connects from the node netns itself.
func (n *dnatNode) client() *http.Client {
	in := pod{netns: n.ns}
	return &http.Client{Transport: &http.Transport{DialContext: in.dialContext, DisableKeepAlives: true}, Timeout: time.Second}
}

// close DELs the pods and removes the namespaces; errors are reported, not
// fatal.
func (n *dnatNode) close() {
	for _, rt := range n.rts {
		n.ns.Do(func(ns.NetNS) error { return n.cni.DelNetworkList(context.Background(), n.list, rt) })
	}
	for _, p := range append(n.podNS, n.ns) {
		p.Close()
		if err := testutils.UnmountNS(p); err != nil {
			fmt.Fprintln(os.Stderr, "benchresponder: remove netns:", err)
		}
	}
}
