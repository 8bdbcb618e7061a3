package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/responder/subject"
)

// Targets of issue 5.
const (
	targetCeilingRatio = 0.7
	targetP99          = 5 * time.Millisecond
	targetLookupRatio  = 1.2
	targetRSS          = 40 << 20
)

const (
	loadPodCount = 8 // pods the throughput clients send from (64 clients: 8 connections each)
	smallStore   = 10
	largeStore   = 10000
	memStore     = 1000

	sa         = "/computeMetadata/v1/instance/service-accounts/default"
	tokenPath  = sa + "/token"
	idPath     = sa + "/identity?audience=x"
	emailPath  = sa + "/email"
	uniquePath = sa + "/identity?audience=bench-"
)

type bench struct {
	bin         string
	duration    time.Duration
	rounds      int
	clients     int
	memDuration time.Duration

	mu      sync.Mutex
	running []*server
}

// series is one row: a server and workload measured once per round.
type series struct {
	name    string
	work    workload
	clients int // 0: bench.clients
	results []result
}

func (s *series) median(f func(result) float64) float64 {
	v := make([]float64, len(s.results))
	for i, r := range s.results {
		v[i] = f(r)
	}
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

func (s *series) rps() float64 { return s.median(func(r result) float64 { return r.rps }) }
func (s *series) p50() time.Duration {
	return time.Duration(s.median(func(r result) float64 { return float64(r.p50) }))
}
func (s *series) p99() time.Duration {
	return time.Duration(s.median(func(r result) float64 { return float64(r.p99) }))
}
func (s *series) perRound() string {
	var parts []string
	for _, r := range s.results {
		parts = append(parts, fmt.Sprintf("%.0f", r.rps))
	}
	return strings.Join(parts, " ")
}

func (b *bench) run() error {
	dir, err := os.MkdirTemp("", "metabind-benchresponder-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pods := loadPods(loadPodCount)
	small, large, mem := filepath.Join(dir, "small"), filepath.Join(dir, "large"), filepath.Join(dir, "mem")
	mpods := memPods(memStore)
	for _, s := range []struct {
		dir   string
		pods  []pod
		total int
	}{{small, pods, smallStore}, {large, pods, largeStore}, {mem, mpods, memStore}} {
		if err := writeStore(s.dir, s.pods, s.total); err != nil {
			return err
		}
	}
	load1, _ := os.ReadFile("/proc/loadavg")
	started := time.Now()

	// 3 and 4: the ceiling, the cached endpoints and the uncached mint, one
	// after the other in rotating order, each round.
	ceiling, err := b.startCeiling()
	if err != nil {
		return err
	}
	resp, err := b.startResponder(small)
	if err != nil {
		return err
	}
	ceil := &series{name: "ceiling: net/http, fixed 1 KiB 200", work: workload{paths: []string{"/"}}}
	tok := &series{name: "responder token (cached)", work: workload{paths: []string{tokenPath}}}
	id := &series{name: "responder identity?audience=x (cached)", work: workload{paths: []string{idPath}}}
	mint := &series{name: "responder identity, new audience each (mint)", work: workload{paths: []string{uniquePath}, unique: true}}
	// The same with one client: the servers' own latency, without 64
	// requests queueing for two CPUs.
	ceil1 := &series{name: "ceiling, 1 client", work: ceil.work, clients: 1}
	tok1 := &series{name: "responder token (cached), 1 client", work: tok.work, clients: 1}
	id1 := &series{name: "responder identity (cached), 1 client", work: id.work, clients: 1}
	throughput := []*series{ceil, tok, id, mint, ceil1, tok1, id1}
	for r := range b.rounds {
		for k := range throughput {
			s := throughput[(r+k)%len(throughput)]
			srv := resp
			if s == ceil || s == ceil1 {
				srv = ceiling
			}
			clients := b.clients
			if s.clients > 0 {
				clients = s.clients
			}
			res, err := load(srv.base, s.work, pods, clients, b.duration)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			s.results = append(s.results, res)
		}
	}
	b.stop(ceiling)
	b.stop(resp)

	// 5: the email endpoint with 10 and 10,000 bindings, a fresh responder
	// each round, alternating which goes first.
	few := &series{name: fmt.Sprintf("responder email, %d bindings", smallStore), work: workload{paths: []string{emailPath}}}
	many := &series{name: fmt.Sprintf("responder email, %d bindings", largeStore), work: workload{paths: []string{emailPath}}}
	for r := range b.rounds {
		order := []*series{few, many}
		if r%2 == 1 {
			order = []*series{many, few}
		}
		for _, s := range order {
			d := small
			if s == many {
				d = large
			}
			srv, err := b.startResponder(d)
			if err != nil {
				return err
			}
			res, err := load(srv.base, s.work, pods, b.clients, b.duration)
			b.stop(srv)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			s.results = append(s.results, res)
		}
	}

	// 6: RSS with 1,000 bindings after a steady load from all 1,000 pods
	// (a keep-alive connection each), asking for tokens, ID tokens and
	// metadata.
	srv, err := b.startResponder(mem)
	if err != nil {
		return err
	}
	steady, err := load(srv.base, workload{paths: []string{tokenPath, idPath, emailPath}}, mpods, b.clients, b.memDuration)
	if err != nil {
		b.stop(srv)
		return fmt.Errorf("memory load: %w", err)
	}
	rss, peak, anon, err := srv.rss()
	b.stop(srv)
	if err != nil {
		return err
	}

	mintCost, err := mintInProcess(time.Second)
	if err != nil {
		return err
	}
	load2, _ := os.ReadFile("/proc/loadavg")

	// The table.
	fmt.Printf("metabind-responder benchmark: %d keep-alive clients from %d pods on loopback, %d rounds x %v per row, rows alternating;\n",
		b.clients, loadPodCount, b.rounds, b.duration)
	fmt.Printf("medians of the rounds. %d CPUs, %s; load average before %s, after %s; %v in all.\n",
		runtime.NumCPU(), cpuModel(), strings.Join(strings.Fields(string(load1))[:3], " "), strings.Join(strings.Fields(string(load2))[:3], " "),
		time.Since(started).Round(time.Second))
	fmt.Printf("The responder logs one JSON line per request (level info) to /dev/null.\n\n")
	fmt.Printf("%-48s %9s %9s %9s  %-22s %s\n", "", "req/s", "p50", "p99", "req/s per round", "target")
	row := func(s *series, target string) {
		fmt.Printf("%-48s %9.0f %9s %9s  %-22s %s\n", s.name, s.rps(), ms(s.p50()), ms(s.p99()), s.perRound(), target)
	}
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT MET"
	}
	fmt.Println("3. Cached tokens against the ceiling")
	row(ceil, "")
	for _, s := range []*series{tok, id} {
		ratio := s.rps() / ceil.rps()
		row(s, fmt.Sprintf("p99 < %v: %s", targetP99, check(s.p99() < targetP99)))
		fmt.Printf("%-48s %8.2fx %9s %9s  %-22s %s\n", "   / ceiling", ratio, "", "", "",
			fmt.Sprintf(">= %.1fx: %s", targetCeilingRatio, check(ratio >= targetCeilingRatio)))
	}
	fmt.Println("   one client at a time")
	row(ceil1, "")
	row(tok1, fmt.Sprintf("p99 < %v: %s", targetP99, check(tok1.p99() < targetP99)))
	row(id1, fmt.Sprintf("p99 < %v: %s", targetP99, check(id1.p99() < targetP99)))
	fmt.Println("4. Uncached mint")
	row(mint, "")
	fmt.Printf("%-48s %9s %9s %9s  %-22s\n", "   sign one token in-process (ES256, 1 core)", "", us(mintCost), "", "")
	fmt.Println("5. Lookup cost")
	row(few, "")
	row(many, "")
	lookupRatio := float64(many.p50()) / float64(few.p50())
	fmt.Printf("%-48s %9s %8.2fx %8.2fx  %-22s %s\n", fmt.Sprintf("   %d / %d bindings", largeStore, smallStore), "", lookupRatio,
		float64(many.p99())/float64(few.p99()), "", fmt.Sprintf("p50 <= %.1fx: %s", targetLookupRatio, check(lookupRatio <= targetLookupRatio)))
	fmt.Println("6. Memory")
	fmt.Printf("%-48s %9.0f %9s %9s  %-22s\n", fmt.Sprintf("   load from %d pods, %v", memStore, b.memDuration), steady.rps, ms(steady.p50), ms(steady.p99), "")
	fmt.Printf("%-48s %9s %9s %9s  %-22s %s\n", fmt.Sprintf("   responder RSS, %d bindings (peak)", memStore), mb(rss), "("+mb(peak)+")", "", "",
		fmt.Sprintf("<= %d MB: %s", targetRSS>>20, check(rss <= targetRSS)))
	fmt.Printf("%-48s %9s %9s\n", "   of which anonymous (the rest: the binary)", mb(anon), "")
	return nil
}

// mintInProcess is the time to build and sign one token's claims with the
// responder's issuer, on one goroutine: the cost a cache miss adds.
func mintInProcess(d time.Duration) (time.Duration, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return 0, err
	}
	iss, err := issuer.New(issuer.Config{URL: "https://metabind.bench/node", Lifetime: time.Hour}, key)
	if err != nil {
		return 0, err
	}
	src := credentials.NewOwnIssuer(iss, "bench-node", credentials.ComputeEngineClaims{})
	sub := subject.Subject{Namespace: "bench", Pod: "load-0", PodUID: "uid-load-0000", ServiceAccount: "bench",
		Email: "bench@bench-project.iam.gserviceaccount.com", EmailClaim: "bench@bench-project.iam.gserviceaccount.com"}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := src.IDToken(context.Background(), sub, "x", credentials.FormatStandard, false); err != nil {
			return 0, err
		}
		n++
	}
	return time.Since(start) / time.Duration(n), nil
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d.Nanoseconds())/1000) }
func mb(n int64) string         { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }
