package main

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/metabind/metabind/plugin"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// scaleTarget bounds what metabind adds on a node holding 1,000 bindings
// against one holding 10, for ADD and DEL each.
const scaleTarget = 1.1

// scaleSizes are the existing bindings of the two nodes of each backend.
var scaleSizes = []int{10, 1000}

// scale measures table 2: what metabind adds to ADD and DEL on a node
// already holding 10 and one holding 1,000 bindings with their rules. Each
// backend has both nodes, and ptp + host-local has one for the baseline;
// the chains alternate pod by pod, so the 10 and the 1,000 of a backend
// are measured at the same moments.
func scale(b *bench, pods int, backends []string) error {
	base, err := b.chain("ptp+host-local", "scale-plain")
	if err != nil {
		return err
	}
	chains := []*chainRun{base}
	by := map[string]map[int]*chainRun{}
	for _, be := range backends {
		by[be] = map[int]*chainRun{}
		for _, n := range scaleSizes {
			c, err := b.chain(fmt.Sprintf("+ metabind (%s), %d bindings", be, n), fmt.Sprintf("scale-%s-%d", be, n), metabindConf(be))
			if err != nil {
				return err
			}
			by[be][n] = c
			chains = append(chains, c)
		}
	}
	// The warm-up pod installs the base as the plugin does and records it;
	// the other pods come after, and one more warm-up pod meets them.
	if err := alternate(b.cni, chains, -1, 0); err != nil {
		return err
	}
	for _, be := range backends {
		for _, n := range scaleSizes {
			if err := populate(by[be][n].node, be, n); err != nil {
				return fmt.Errorf("%s: %d bindings: %w", be, n, err)
			}
		}
	}
	if err := alternate(b.cni, chains, -1, 0); err != nil {
		return err
	}
	if err := resetLogs(chains); err != nil {
		return err
	}
	load := loadavg()
	if err := alternate(b.cni, chains, 0, pods); err != nil {
		return err
	}

	fmt.Printf("\n2. Plugin scale: what metabind adds (p50 of its chain minus p50 of ptp+host-local) on a node already holding\n")
	fmt.Printf("   10 and one holding 1,000 bindings with their rules (written as the plugin leaves them: store records, both\n")
	fmt.Printf("   rules per pod, no pods behind them); a node per backend and size, %d pods per chain, the chains alternating\n", pods)
	fmt.Printf("   pod by pod. \"in plugin\": p50 of the plugin's own time from its log. Load average before %s, after %s.\n\n", load, loadavg())
	fmt.Printf("%-10s %-18s %10s %10s %14s %14s\n", "backend", "existing bindings", "ADD added", "DEL added", "in plugin ADD", "in plugin DEL")
	for _, be := range backends {
		type row struct{ add, del, inAdd, inDel time.Duration }
		rows := map[int]row{}
		for _, n := range scaleSizes {
			c := by[be][n]
			inAdd, inDel, err := pluginTimes(c.node.logFile)
			if err != nil {
				return err
			}
			r := row{pct(c.add, 50) - pct(base.add, 50), pct(c.del, 50) - pct(base.del, 50), pct(inAdd, 50), pct(inDel, 50)}
			rows[n] = r
			fmt.Printf("%-10s %-18d %10s %10s %14s %14s\n", be, n, ms(r.add), ms(r.del), ms(r.inAdd), ms(r.inDel))
		}
		lo, hi := rows[scaleSizes[0]], rows[scaleSizes[1]]
		met := func(a, b time.Duration) bool { return b > 0 && float64(a) <= scaleTarget*float64(b) }
		fmt.Printf("%-10s %-18s %10s %10s %14s %14s   %s\n", be, "1000 / 10", times(hi.add, lo.add), times(hi.del, lo.del),
			times(hi.inAdd, lo.inAdd), times(hi.inDel, lo.inDel), verdict(fmt.Sprintf("<= %gx", scaleTarget), met(hi.add, lo.add), met(hi.del, lo.del)))
	}
	return nil
}

// populate writes count bindings into a node's store and their rules into
// its netns through the backend's own batch, as the plugin leaves them.
func populate(n *node, backend string, count int) error {
	meta := netip.MustParseAddrPort(plugin.DefaultMetadataAddress)
	resp := netip.MustParseAddrPort(plugin.DefaultResponderAddress)
	bs := make([]store.Binding, count)
	rules := make([]redirect.Rule, count)
	for i := range bs {
		bs[i] = store.Binding{
			IP: netip.AddrFrom4([4]byte{10, 194, byte(i / 250), byte(1 + i%250)}), Network: n.id, ContainerID: fmt.Sprintf("scale-%d", i),
			IfName: "eth0", HostInterface: fmt.Sprintf("vscale%d", i), Responder: resp,
			Namespace: "scale", Pod: fmt.Sprintf("pod-%d", i), PodUID: fmt.Sprintf("uid-%d", i), Created: time.Now(),
		}
		rules[i] = redirect.RuleFor(bs[i])
	}
	st, err := store.Open(n.stateDir, 5*time.Second)
	if err != nil {
		return err
	}
	err = st.Update(func(tx *store.Tx) error {
		for _, b := range bs {
			if err := tx.Put(b); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	mk, err := redirect.MakerFor(backend)
	if err != nil {
		return err
	}
	return n.ns.Do(func(ns.NetNS) error {
		rd, err := mk(meta, resp)
		if err != nil {
			return err
		}
		if _, err := rd.EnsureBase(); err != nil {
			return err
		}
		return rd.AddBatch(rules, true)
	})
}
