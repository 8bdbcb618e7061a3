package main

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/metabind/metabind/plugin"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// scale measures what metabind adds to ADD and DEL on a node that already
// holds 10 and 1,000 bindings with their rules, alternating. The existing
// pods are written as the plugin would leave them (bindings in the store,
// both rules per pod), without real pods behind them.
func scale(cni *libcni.CNIConfig, node ns.NetNS, plainList, mbList *libcni.NetworkConfigList, pods int, stateDir string) error {
	meta := netip.MustParseAddrPort(plugin.DefaultMetadataAddress)
	resp := netip.MustParseAddrPort(plugin.DefaultResponderAddress)
	rd, err := redirect.New(meta, resp)
	if err != nil {
		return err
	}
	existing := func(n int) []store.Binding {
		out := make([]store.Binding, n)
		for i := range out {
			out[i] = store.Binding{
				IP: netip.AddrFrom4([4]byte{10, 194, byte(i / 250), byte(1 + i%250)}), ContainerID: fmt.Sprintf("scale-%d", i),
				IfName: "eth0", HostInterface: fmt.Sprintf("vscale%d", i), Responder: resp,
				Namespace: "scale", Pod: fmt.Sprintf("pod-%d", i), PodUID: fmt.Sprintf("uid-%d", i), Created: time.Now(),
			}
		}
		return out
	}
	rules := func(bs []store.Binding) []redirect.Rule {
		out := make([]redirect.Rule, len(bs))
		for i, b := range bs {
			out[i] = redirect.Rule{HostInterface: b.HostInterface, IP: b.IP, Responder: b.Responder, ContainerID: b.ContainerID, IfName: b.IfName}
		}
		return out
	}
	// set makes the node hold exactly the first n of the scale pods.
	held := 0
	all := existing(1000)
	set := func(n int) error {
		st, err := store.Open(stateDir, 5*time.Second)
		if err != nil {
			return err
		}
		err = st.Update(func(tx *store.Tx) error {
			for _, b := range all[min(n, held):max(n, held)] {
				if n > held {
					if err := tx.Put(b); err != nil {
						return err
					}
				} else if err := tx.Delete(b.IP); err != nil {
					return err
				}
			}
			return nil
		})
		st.Close()
		if err != nil {
			return err
		}
		return node.Do(func(ns.NetNS) error {
			change := rules(all[min(n, held):max(n, held)])
			if n > held {
				return rd.AddBatch(change, true)
			}
			return rd.RemoveBatch(change)
		})
	}
	type sample struct{ plain, mb chainRun }
	by := map[int]*sample{10: {}, 1000: {}}
	const rounds = 4
	for r := 0; r < rounds; r++ {
		for _, n := range []int{10, 1000} {
			if err := set(n); err != nil {
				return fmt.Errorf("populate %d: %w", n, err)
			}
			held = n
			s := by[n]
			s.plain.list, s.mb.list = plainList, mbList
			if err := alternate(cni, node, []*chainRun{&s.plain, &s.mb}, 0, max(pods/rounds, 5)); err != nil {
				return err
			}
		}
	}
	if err := set(0); err != nil {
		return err
	}
	fmt.Printf("\n2. Plugin scale: what metabind adds (p50 of the metabind chain minus p50 of the plain chain), %d rounds alternating\n\n", rounds)
	fmt.Printf("%-28s %10s %10s\n", "existing bindings and rules", "ADD added", "DEL added")
	added := func(s *sample, add bool) time.Duration {
		if add {
			return median(s.mb.add) - median(s.plain.add)
		}
		return median(s.mb.del) - median(s.plain.del)
	}
	for _, n := range []int{10, 1000} {
		fmt.Printf("%-28d %10s %10s\n", n, ms(added(by[n], true)), ms(added(by[n], false)))
	}
	fmt.Printf("%-28s %9.2fx %9.2fx   (target <= 1.25x)\n", "1000 / 10",
		float64(added(by[1000], true))/float64(added(by[10], true)), float64(added(by[1000], false))/float64(added(by[10], false)))
	return nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
