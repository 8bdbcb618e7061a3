package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// bench holds what every table shares: the temp dir, libcni and the node
// netns it has made, to be removed at the end.
type bench struct {
	dir   string
	cni   *libcni.CNIConfig
	nodes []*node
}

// node is one throwaway node netns with a metabind state directory and log
// of its own. Every chain gets one: two metabind netconfs with different
// backends must never share a node (an ADD under one backend retires the
// other's objects), and ptp + host-local cost the same in any of them.
type node struct {
	id       string
	ns       ns.NetNS
	stateDir string
	logFile  string
}

// chainRun is one chain on its node and the times measured through it.
type chainRun struct {
	name     string
	node     *node
	list     *libcni.NetworkConfigList
	add, del []time.Duration
}

// newBench makes the temp dir and builds the empty chained plugin into it;
// libcni finds plugins in binDir, cniDir and there.
func newBench(binDir, cniDir string) (*bench, error) {
	dir, err := os.MkdirTemp("", "metabind-bench-")
	if err != nil {
		return nil, err
	}
	plugins := filepath.Join(dir, "plugins")
	if err := buildEmptyPlugin(plugins); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir, cniDir, plugins}, filepath.Join(dir, "cache"), nil)
	return &bench{dir: dir, cni: cni}, nil
}

// close removes every node netns and the temp dir. BENCH_KEEP_LOG=FILE
// first keeps each metabind node's log as FILE.<node> (one line per verb,
// with the plugin's own time in "ms").
func (b *bench) close() {
	keep := os.Getenv("BENCH_KEEP_LOG")
	for _, n := range b.nodes {
		if keep != "" {
			if log, err := os.ReadFile(n.logFile); err == nil {
				os.WriteFile(keep+"."+n.id, log, 0o600)
			}
		}
		n.ns.Close() // first: an open handle keeps the mount busy
		unmount(n.ns)
	}
	os.RemoveAll(b.dir)
}

// chain makes a chain, ptp + host-local then the netconfs extra returns
// for its node, on a node of its own. id names the node and the network
// (host-local's and libcni's files are per network). Each chain takes the
// next /20 of 10.195.0.0/16; the existing bindings of the scale table are
// in 10.194.0.0/16.
func (b *bench) chain(name, id string, extra ...func(*node) string) (*chainRun, error) {
	if len(b.nodes) >= 16 {
		return nil, fmt.Errorf("chain %s: no /20 of 10.195.0.0/16 left", name)
	}
	nodeNS, err := testutils.NewNS()
	if err != nil {
		return nil, err
	}
	n := &node{id: id, ns: nodeNS, stateDir: filepath.Join(b.dir, id, "state"), logFile: filepath.Join(b.dir, id, "cni.log")}
	subnet := fmt.Sprintf("10.195.%d.0/20", 16*len(b.nodes))
	b.nodes = append(b.nodes, n)
	plugins := []string{fmt.Sprintf(`{"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local", "dataDir": %q,
		"ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}`, filepath.Join(b.dir, "ipam"), subnet)}
	for _, e := range extra {
		plugins = append(plugins, e(n))
	}
	return &chainRun{name: name, node: n, list: mustList(id, plugins...)}, nil
}

// metabindConf is metabind's netconf on a node, with backend.
func metabindConf(backend string) func(*node) string {
	return func(n *node) string {
		return fmt.Sprintf(`{"type": "metabind", "backend": %q, "stateDir": %q, "logFile": %q,
			"capabilities": {"io.kubernetes.cri.pod-annotations": true}}`, backend, n.stateDir, n.logFile)
	}
}

func emptyConf(*node) string { return fmt.Sprintf(`{"type": %q}`, emptyPluginType) }

func portmapConf(*node) string {
	return `{"type": "portmap", "capabilities": {"portMappings": true}}`
}

func mustList(name string, plugins ...string) *libcni.NetworkConfigList {
	js := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": %q, "plugins": [`, name)
	for i, p := range plugins {
		if i > 0 {
			js += ","
		}
		js += p
	}
	list, err := libcni.ConfListFromBytes([]byte(js + "]}"))
	if err != nil {
		panic(err)
	}
	return list
}

// alternate runs ADD then DEL for one pod of each chain in turn, pods
// times, starting at round from (negative rounds are warm-up, not kept):
// every chain sees the machine as it is at the same moment. Each round
// starts one chain further on, so that no chain always follows the same
// one (portmap's iptables work, say) or always opens the round.
func alternate(cni *libcni.CNIConfig, chains []*chainRun, from, pods int) error {
	for round := from; round < pods; round++ {
		for i := range chains {
			c := chains[(i+max(round, 0))%len(chains)]
			a, d, err := addDel(cni, c.node.ns, c.list, round)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			if round >= 0 {
				c.add = append(c.add, a)
				c.del = append(c.del, d)
			}
		}
	}
	return nil
}

// addDel creates one pod netns, runs ADD then DEL on the node and times each.
func addDel(cni *libcni.CNIConfig, node ns.NetNS, list *libcni.NetworkConfigList, i int) (add, del time.Duration, err error) {
	podNS, err := testutils.NewNS()
	if err != nil {
		return 0, 0, err
	}
	defer unmount(podNS)
	defer podNS.Close()
	b := make([]byte, 32)
	rand.Read(b)
	id := hex.EncodeToString(b)
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: podNS.Path(), IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", fmt.Sprintf("pod-%d", i)},
		{"K8S_POD_UID", id[:16]}, {"K8S_POD_INFRA_CONTAINER_ID", id},
	}, CapabilityArgs: map[string]any{
		"portMappings": []map[string]any{{"hostPort": 20000 + (i+1000)%20000, "containerPort": 80, "protocol": "tcp"}},
	}}
	err = node.Do(func(ns.NetNS) error {
		start := time.Now()
		if _, err := cni.AddNetworkList(context.Background(), list, rt); err != nil {
			return fmt.Errorf("ADD: %w", err)
		}
		add = time.Since(start)
		start = time.Now()
		if err := cni.DelNetworkList(context.Background(), list, rt); err != nil {
			return fmt.Errorf("DEL: %w", err)
		}
		del = time.Since(start)
		return nil
	})
	return add, del, err
}

// unmount removes a netns the benchmark made; a failure is reported, not
// fatal, so that the run still prints its table.
func unmount(n ns.NetNS) {
	if err := testutils.UnmountNS(n); err != nil {
		fmt.Fprintln(os.Stderr, "benchplugin: remove netns:", err)
	}
}
