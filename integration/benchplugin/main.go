// Command benchplugin measures what metabind adds to pod set-up and
// teardown, every comparison side by side in one run (as root):
//
//  1. Plugin cost: ADD and DEL through libcni of ptp + host-local alone,
//     with an empty chained plugin (the floor of any chained Go plugin),
//     with metabind on each redirect backend and with portmap (one
//     mapping), alternating pod by pod, each chain in a node netns of its
//     own (cost.go).
//  2. Plugin scale: what metabind adds on a node holding 10 and one
//     holding 1,000 bindings, per backend, alternating (scale.go).
//  3. and 4. The first token after ADD, and ADD/DEL while the responder
//     is under load (load.go).
//
// Reproduce: go run ./integration/benchplugin -bin bin -cni .cache/cni/bin -pods 50
// (`make bench` runs it). BENCH_KEEP_LOG=FILE keeps each metabind node's
// log as FILE.<node>, one line per verb with the plugin's own time in "ms".
// With -startup it measures only the plugin's start-up (startup.go).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/metabind/metabind/redirect"
)

func main() {
	pods := flag.Int("pods", 50, "pods per chain")
	binDir := flag.String("bin", "bin", "directory with the metabind binary")
	cniDir := flag.String("cni", ".cache/cni/bin", "directory with the reference CNI plugins")
	backendList := flag.String("backends", redirect.BackendIPTables+","+redirect.BackendNFTables, "metabind redirect backends to measure, comma-separated")
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
		var backends []string
		if backends, err = parseBackends(*backendList); err == nil {
			err = run(*pods, *binDir, *cniDir, backends, command(*pods, *backendList))
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchplugin:", err)
		os.Exit(1)
	}
}

func run(pods int, binDir, cniDir string, backends []string, command string) error {
	binDir, _ = filepath.Abs(binDir)
	cniDir, _ = filepath.Abs(cniDir)
	b, err := newBench(binDir, cniDir)
	if err != nil {
		return err
	}
	defer b.close()
	mb, err := cost(b, pods, backends, command)
	if err != nil {
		return err
	}
	if err := scale(b, pods, backends); err != nil {
		return err
	}
	// The load table needs one backend only: nftables, the one to come.
	load := mb[backends[0]]
	if c, ok := mb[redirect.BackendNFTables]; ok {
		load = c
	}
	return writerUnderLoad(b.cni, load, pods, binDir, b.dir)
}

// parseBackends reads -backends: backends the plugin names, each once.
func parseBackends(list string) ([]string, error) {
	var out []string
	for _, be := range strings.Split(list, ",") {
		be = strings.TrimSpace(be)
		if be != redirect.BackendIPTables && be != redirect.BackendNFTables {
			return nil, fmt.Errorf("-backends: %q: want %s and/or %s", be, redirect.BackendIPTables, redirect.BackendNFTables)
		}
		if !slices.Contains(out, be) {
			out = append(out, be)
		}
	}
	return out, nil
}

// command is what reproduces this run, printed with the tables.
func command(pods int, backends string) string {
	cmd := fmt.Sprintf("go run ./integration/benchplugin -bin bin -cni .cache/cni/bin -pods %d", pods)
	if backends != redirect.BackendIPTables+","+redirect.BackendNFTables {
		cmd += " -backends " + backends
	}
	return cmd
}

// loadavg is the machine's 1, 5 and 15 minute load average: absolute
// times move with it, the side-by-side ratios much less.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
