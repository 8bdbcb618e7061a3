// Command benchplugin measures what metabind adds to pod set-up and
// teardown: ADD and DEL through libcni for ptp + host-local alone and for
// ptp + host-local + metabind, alternating pod by pod in one throwaway node
// netns so both see the same machine at the same moment. `make bench` runs
// it as root. BENCH_KEEP_LOG=FILE keeps the plugin's log (one line per
// verb with its own time in "ms") for a look at where ADD spends it.
// With -startup it measures only the plugin's start-up (startup.go).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

func main() {
	pods := flag.Int("pods", 50, "pods per chain")
	binDir := flag.String("bin", "bin", "directory with the metabind binary")
	cniDir := flag.String("cni", ".cache/cni/bin", "directory with the reference CNI plugins")
	startupOnly := flag.Bool("startup", false, "only measure start-up: VERSION against an empty Go program (no root needed)")
	rounds := flag.Int("rounds", 10, "with -startup: alternating rounds")
	execs := flag.Int("execs", 20, "with -startup: execs per binary per round")
	var also []string
	flag.Func("startup-also", "with -startup: another binary to compare, NAME=PATH (repeatable)", func(s string) error {
		also = append(also, s)
		return nil
	})
	flag.Parse()
	err := error(nil)
	if *startupOnly {
		err = startup(*binDir, *cniDir, *rounds, *execs, also)
	} else {
		err = run(*pods, *binDir, *cniDir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchplugin:", err)
		os.Exit(1)
	}
}

type chainRun struct {
	name     string
	list     *libcni.NetworkConfigList
	add, del []time.Duration
}

func run(pods int, binDir, cniDir string) error {
	binDir, _ = filepath.Abs(binDir)
	cniDir, _ = filepath.Abs(cniDir)
	dir, err := os.MkdirTemp("", "metabind-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if keep := os.Getenv("BENCH_KEEP_LOG"); keep != "" {
			b, _ := os.ReadFile(filepath.Join(dir, "cni.log"))
			os.WriteFile(keep, b, 0o600)
		}
		os.RemoveAll(dir)
	}()
	node, err := testutils.NewNS()
	if err != nil {
		return err
	}
	defer unmount(node)
	defer node.Close()

	ptp := func(subnet string) string {
		return fmt.Sprintf(`{"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local", "dataDir": %q,
			"ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}`, filepath.Join(dir, "ipam"), subnet)
	}
	metabind := fmt.Sprintf(`{"type": "metabind", "stateDir": %q, "logFile": %q, "capabilities": {"io.kubernetes.cri.pod-annotations": true}}`,
		filepath.Join(dir, "state"), filepath.Join(dir, "cni.log"))
	portmap := `{"type": "portmap", "capabilities": {"portMappings": true}}`
	chains := []*chainRun{
		{name: "ptp+host-local", list: mustList("plain", ptp("10.195.0.0/20"))},
		{name: "+ metabind", list: mustList("metabind", ptp("10.195.16.0/20"), metabind)},
		{name: "+ portmap (one mapping)", list: mustList("portmap", ptp("10.195.32.0/20"), portmap)},
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir, cniDir}, filepath.Join(dir, "cache"), nil)

	// One warm-up pod per chain creates chains and caches, as on a node that
	// already runs pods.
	if err := alternate(cni, node, chains, -1, pods); err != nil {
		return err
	}
	base, mb, pm := chains[0], chains[1], chains[2]
	fmt.Printf("1. Plugin cost: CNI ADD/DEL through libcni, %d pods per chain, alternating, one node netns\n\n", pods)
	fmt.Printf("%-28s %10s %10s %10s %10s\n", "chain", "ADD p50", "ADD p95", "DEL p50", "DEL p95")
	for _, c := range chains {
		fmt.Printf("%-28s %10s %10s %10s %10s\n", c.name, ms(pct(c.add, 50)), ms(pct(c.add, 95)), ms(pct(c.del, 50)), ms(pct(c.del, 95)))
	}
	mbAdd, mbDel := pct(mb.add, 50)-pct(base.add, 50), pct(mb.del, 50)-pct(base.del, 50)
	pmAdd, pmDel := pct(pm.add, 50)-pct(base.add, 50), pct(pm.del, 50)-pct(base.del, 50)
	fmt.Printf("%-28s %10s %10s %10s %10s\n", "metabind adds (p50 diff)", ms(mbAdd), "", ms(mbDel), "")
	fmt.Printf("%-28s %10s %10s %10s %10s\n", "portmap adds (p50 diff)", ms(pmAdd), "", ms(pmDel), "")
	fmt.Printf("%-28s %9.2fx %10s %9.2fx %10s   (target <= 0.125x)\n", "metabind / portmap added",
		float64(mbAdd)/float64(pmAdd), "", float64(mbDel)/float64(pmDel), "")

	if err := scale(cni, node, base.list, mb.list, pods, filepath.Join(dir, "state")); err != nil {
		return err
	}
	return writerUnderLoad(cni, node, mb.list, pods, binDir, dir)
}

// alternate runs ADD then DEL for one pod of each chain in turn, pods
// times, starting at round from (negative rounds are warm-up, not kept).
func alternate(cni *libcni.CNIConfig, node ns.NetNS, chains []*chainRun, from, pods int) error {
	for round := from; round < pods; round++ {
		for _, c := range chains {
			a, d, err := addDel(cni, node, c.list, round)
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

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

// unmount removes a netns the benchmark made; a failure is reported, not
// fatal, so that the run still prints its table.
func unmount(n ns.NetNS) {
	if err := testutils.UnmountNS(n); err != nil {
		fmt.Fprintln(os.Stderr, "benchplugin: remove netns:", err)
	}
}
