// Command benchresponder measures the real metabind-responder binary on
// loopback, every comparison side by side in one run and alternating round
// by round:
//
//   - cached token and identity?audience=x throughput and latency under 64
//     keep-alive clients, against a trivial net/http server run the same
//     way (the ceiling);
//   - the cost of an uncached mint (a new audience per request);
//   - the email endpoint with 10 and with 10,000 bindings in the store;
//   - the responder's RSS with 1,000 bindings after a steady load from
//     1,000 pods.
//
// Pods are loopback addresses (127.0.0.0/8 is local on Linux): the
// benchmark writes a binding for each source address it sends from, so the
// responder identifies callers exactly as it does pods behind their veths.
// It needs no privileges, but `make bench` runs it as root with the rest.
//
// With -dnat (root) it measures instead what pods pay on the real path:
// clients in pod network namespaces, their metadata traffic DNATed and
// source-checked by metabind's own rules (dnat.go).
//
//	go run ./integration/benchresponder -bin bin
//	go run ./integration/benchresponder -bin bin -dnat -cni .cache/cni/bin
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	binDir := flag.String("bin", "bin", "directory with the metabind-responder binary")
	duration := flag.Duration("duration", 3*time.Second, "length of one measured round of one server")
	rounds := flag.Int("rounds", 3, "rounds; each round measures every server once, in rotating order")
	clients := flag.Int("clients", 64, "concurrent keep-alive clients")
	memDuration := flag.Duration("mem-duration", 10*time.Second, "steady load before the responder's RSS is read")
	ceiling := flag.String("ceiling", "", "internal: serve the ceiling handler on this address and nothing else")
	dnat := flag.Bool("dnat", false, "only measure through metabind's DNAT: pods in network namespaces (root; needs the plugin in -bin and -cni)")
	cniDir := flag.String("cni", ".cache/cni/bin", "with -dnat: directory with the reference CNI plugins")
	flag.StringVar(&dnatBackend, "backend", "", "with -dnat: the plugin's redirect backend (iptables, nftables, auto; default the plugin's)")
	flag.Parse()
	if *ceiling != "" {
		serveCeiling(*ceiling)
		return
	}
	if *rounds < 1 || *duration <= 0 || *clients < 1 {
		fmt.Fprintln(os.Stderr, "benchresponder: -rounds, -duration and -clients must be positive")
		os.Exit(2)
	}
	bin, err := filepath.Abs(filepath.Join(*binDir, "metabind-responder"))
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchresponder: %v (run make build first)\n", err)
		os.Exit(1)
	}
	b := &bench{bin: bin, duration: *duration, rounds: *rounds, clients: *clients, memDuration: *memDuration}
	// Children are ended on the way out, also on ^C.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		b.stopAll()
		os.Exit(130)
	}()
	if *dnat {
		err = b.runDNAT(*binDir, *cniDir)
	} else {
		err = b.run()
	}
	b.stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchresponder:", err)
		os.Exit(1)
	}
}
