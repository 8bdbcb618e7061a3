package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/metabind/metabind/store"
)

// responderConfig grants every pod of namespace bench an identity, with the
// highest per-caller rate the configuration allows: the benchmark measures
// the server, not its limiter's refusals.
const responderConfig = `
project: {id: bench-project, numericId: "1"}
node: {name: bench-node, zone: bench-zone}
issuer: {url: https://metabind.bench/node, tokenLifetime: 1h}
identities:
  - namespace: bench
    serviceAccount: bench
    email: bench@bench-project.iam.gserviceaccount.com
limits: {requestsPerSecond: 10000, burst: 100000}
`

// ceilingBodySize is the ceiling's fixed body: about an access token
// response, so both servers put the same bytes on the wire.
const ceilingBodySize = 1024

// serveCeiling is the ceiling process: a net/http server with a handler
// that answers every request with the same 200 body.
func serveCeiling(addr string) {
	body := []byte(strings.Repeat("x", ceilingBodySize-1) + "\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
	if err := (&http.Server{Addr: addr, Handler: h}).ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
}

// pod is one source address with a binding: a loopback address, or with
// netns set a real pod's network namespace, whose connections are made
// inside it (its own address, its own routes, the node's DNAT).
type pod struct {
	ip    netip.Addr
	uid   string
	netns ns.NetNS
}

func (p pod) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.netns == nil {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: p.ip.AsSlice()}, Timeout: 5 * time.Second}
		return d.DialContext(ctx, network, addr)
	}
	var conn net.Conn
	err := p.netns.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: 5 * time.Second}
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// loadPods are the pods load comes from: 127.0.0.1 and on.
func loadPods(n int) []pod {
	pods := make([]pod, n)
	for i := range pods {
		pods[i] = pod{ip: netip.AddrFrom4([4]byte{127, 0, byte((i + 1) >> 8), byte(i + 1)}), uid: fmt.Sprintf("uid-load-%04d", i)}
	}
	return pods
}

// memPods are the 1,000 pods of the memory run, in 127.1.0.0/16.
func memPods(n int) []pod {
	pods := make([]pod, n)
	for i := range pods {
		pods[i] = pod{ip: netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}), uid: fmt.Sprintf("uid-mem-%04d", i)}
	}
	return pods
}

// writeStore creates a state directory whose store binds pods and, up to
// total bindings, filler pods in 10.0.0.0/8 that send nothing.
func writeStore(dir string, pods []pod, total int) error {
	now := time.Now()
	bs := make([]store.Binding, max(total, len(pods)))
	for i := range bs {
		b := store.Binding{IfName: "eth0", Namespace: "bench", Created: now}
		if i < len(pods) {
			b.IP, b.PodUID = pods[i].ip, pods[i].uid
			b.ContainerID = "load-" + pods[i].uid
			b.Pod = "load-" + strconv.Itoa(i)
		} else {
			b.IP = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			b.PodUID = fmt.Sprintf("uid-filler-%06d", i)
			b.ContainerID = "filler-" + b.PodUID
			b.Pod = "filler-" + strconv.Itoa(i)
		}
		b.HostInterface = "veth" + strconv.Itoa(i)
		b.Responder = netip.MustParseAddrPort("127.0.0.1:988")
		bs[i] = b
	}
	if err := putAll(dir, bs); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "responder.yaml"), []byte(responderConfig), 0o600)
}

// putAll writes bs to the store under dir in one transaction.
func putAll(dir string, bs []store.Binding) error {
	s, err := store.Open(dir, 10*time.Second)
	if err != nil {
		return err
	}
	err = s.Update(func(tx *store.Tx) error {
		for _, b := range bs {
			if err := tx.Put(b); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write store %s: %w", dir, err)
	}
	return nil
}

// server is a running responder or ceiling process.
type server struct {
	name string
	cmd  *exec.Cmd
	base string // http://127.0.0.1:PORT
	done chan struct{}
	err  error
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startResponder runs the responder binary on the state directory dir. It
// logs at the default level (one JSON line per request, as in production)
// to /dev/null, so the benchmark's disk is not filled and no reader of its
// log competes for the CPU.
func (b *bench) startResponder(dir string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	// No admin address: the benchmark runs in the host's namespace, where
	// 127.0.0.1:9988 may be taken (by a node's own metabind among others).
	cmd := exec.Command(b.bin, "--state-dir", dir, "--listen", addr,
		"--config", filepath.Join(dir, "responder.yaml"), "--log-level", "info", "--admin-listen", "")
	return b.start("responder", cmd, addr, nil)
}

// startCeiling runs this program again as the ceiling server.
func (b *bench) startCeiling() (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	return b.start("ceiling", exec.Command(self, "-ceiling", addr), addr, nil)
}

// start runs cmd, a server listening on addr, and waits until it answers
// probe's GET / (nil: a client in this network namespace).
func (b *bench) start(name string, cmd *exec.Cmd, addr string, probe *http.Client) (*server, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	cmd.Stdout = devnull
	cmd.Stderr = devnull
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: name, cmd: cmd, base: "http://" + addr, done: make(chan struct{})}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	b.mu.Lock()
	b.running = append(b.running, s)
	b.mu.Unlock()
	if probe == nil {
		probe = &http.Client{Timeout: time.Second}
	}
	if err := s.waitReady(probe, 10*time.Second); err != nil {
		b.stop(s)
		return nil, fmt.Errorf("%s (%s): %w", name, strings.Join(cmd.Args, " "), err)
	}
	return s, nil
}

// waitReady polls / until the server answers.
func (s *server) waitReady(c *http.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("exited: %v", s.err)
		default:
		}
		if resp, err := c.Get(s.base + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("not serving after " + timeout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rss reads VmRSS, VmHWM (peak) and RssAnon of the server from /proc.
func (s *server) rss() (rss, peak, anon int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM" && k != "RssAnon") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("%s: %q: %w", k, v, err)
		}
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			peak = kb << 10
		default:
			anon = kb << 10
		}
	}
	if rss == 0 {
		return 0, 0, 0, errors.New("no VmRSS in /proc/PID/status")
	}
	return rss, peak, anon, sc.Err()
}

// stop ends s (SIGTERM, then SIGKILL after 5 s) and waits for it.
func (b *bench) stop(s *server) {
	select {
	case <-s.done:
	default:
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, r := range b.running {
		if r == s {
			b.running = append(b.running[:i], b.running[i+1:]...)
			break
		}
	}
}

// stopAll ends every server still running.
func (b *bench) stopAll() {
	b.mu.Lock()
	running := append([]*server(nil), b.running...)
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range running {
		wg.Add(1)
		go func() { defer wg.Done(); b.stop(s) }()
	}
	wg.Wait()
}
