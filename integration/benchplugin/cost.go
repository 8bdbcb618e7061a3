package main

import (
	"fmt"
	"time"
)

// Targets of the plugin-cost table: metabind's added time at most an
// eighth of portmap's, and at most 3 ms above what any chained Go plugin
// adds by being exec'd (the empty plugin).
const (
	costPortmapRatio = 0.125
	costOverEmpty    = 3 * time.Millisecond
)

// cost measures table 1: ADD and DEL through libcni of ptp + host-local
// alone, with the empty chained plugin, with metabind on each backend and
// with portmap (one mapping), the chains alternating pod by pod, each on a
// node of its own. It returns the metabind chains by backend, for the
// load table.
func cost(b *bench, pods int, backends []string, command string) (map[string]*chainRun, error) {
	base, err := b.chain("ptp+host-local", "plain")
	if err != nil {
		return nil, err
	}
	empty, err := b.chain("+ empty chained plugin", "empty", emptyConf)
	if err != nil {
		return nil, err
	}
	chains := []*chainRun{base, empty}
	mb := map[string]*chainRun{}
	for _, be := range backends {
		c, err := b.chain("+ metabind ("+be+")", "metabind-"+be, metabindConf(be))
		if err != nil {
			return nil, err
		}
		mb[be] = c
		chains = append(chains, c)
	}
	pm, err := b.chain("+ portmap (one mapping)", "portmap", portmapConf)
	if err != nil {
		return nil, err
	}
	chains = append(chains, pm)

	// One warm-up pod per chain installs metabind's base and portmap's
	// chains and fills the caches, as on a node that already runs pods.
	if err := alternate(b.cni, chains, -1, 0); err != nil {
		return nil, err
	}
	if err := resetLogs(chains); err != nil {
		return nil, err
	}
	load := loadavg()
	if err := alternate(b.cni, chains, 0, pods); err != nil {
		return nil, err
	}

	fmt.Printf("1. Plugin cost: wall time of libcni AddNetworkList, then DelNetworkList, of each chain for a new pod netns,\n")
	fmt.Printf("   called in the chain's node netns; %d pods per chain after one warm-up pod, the chains alternating pod by pod,\n", pods)
	fmt.Printf("   each chain in a node netns of its own. \"added\": p50 of the chain minus p50 of ptp+host-local.\n")
	fmt.Printf("   Load average before %s, after %s.\n", load, loadavg())
	fmt.Printf("   %s\n\n", command)
	fmt.Printf("%-36s %10s %10s %10s %10s\n", "chain", "ADD p50", "ADD p95", "DEL p50", "DEL p95")
	for _, c := range chains {
		fmt.Printf("%-36s %10s %10s %10s %10s\n", c.name, ms(pct(c.add, 50)), ms(pct(c.add, 95)), ms(pct(c.del, 50)), ms(pct(c.del, 95)))
	}
	added := func(c *chainRun) (add, del time.Duration) {
		return pct(c.add, 50) - pct(base.add, 50), pct(c.del, 50) - pct(base.del, 50)
	}
	emptyAdd, emptyDel := added(empty)
	pmAdd, pmDel := added(pm)
	fmt.Printf("\n%-36s %10s %10s   %s\n", "added (p50 diff)", "ADD", "DEL", "target")
	fmt.Printf("%-36s %10s %10s\n", "empty chained plugin (exec floor)", ms(emptyAdd), ms(emptyDel))
	fmt.Printf("%-36s %10s %10s\n", "portmap (one mapping)", ms(pmAdd), ms(pmDel))
	for _, be := range backends {
		c := mb[be]
		add, del := added(c)
		fmt.Printf("%-36s %10s %10s\n", "metabind ("+be+")", ms(add), ms(del))
		fmt.Printf("%-36s %10s %10s   %s\n", "   / portmap added", times(add, pmAdd), times(del, pmDel),
			verdict(fmt.Sprintf("<= %gx", costPortmapRatio), float64(add) <= costPortmapRatio*float64(pmAdd), float64(del) <= costPortmapRatio*float64(pmDel)))
		fmt.Printf("%-36s %10s %10s   %s\n", "   - empty plugin added", ms(add-emptyAdd), ms(del-emptyDel),
			verdict(fmt.Sprintf("<= %s", ms(costOverEmpty)), add-emptyAdd <= costOverEmpty, del-emptyDel <= costOverEmpty))
		inAdd, inDel, err := pluginTimes(c.node.logFile)
		if err != nil {
			return nil, err
		}
		fmt.Printf("%-36s %10s %10s   (%d and %d log lines)\n", "   inside the plugin (its log, p50)", ms(pct(inAdd, 50)), ms(pct(inDel, 50)), len(inAdd), len(inDel))
	}
	return mb, nil
}
