package integration

// The nftables backend's own cases: a switch of backends on a node with
// live pods, and other nftables tables on the same hooks. The attack,
// lifecycle and GC suites run against it with METABIND_TEST_BACKEND=nftables.

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/metabind/metabind/redirect"
)

// switchBackend makes the conflist's metabind run backend from now on, as
// an operator's new conflist does.
func (n *node) switchBackend(t *testing.T, backend string) {
	t.Helper()
	conf := strings.Replace(string(n.list.Bytes), fmt.Sprintf(`"backend": %q`, n.backend), fmt.Sprintf(`"backend": %q`, backend), 1)
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	n.list, n.backend = list, backend
}

// present reports which backends have objects on the node.
func (n *node) present(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, b := range []string{redirect.BackendIPTables, redirect.BackendNFTables} {
		mk, _ := redirect.MakerFor(b)
		rd, _ := mk(metadataAddrPort, responderAddrPort)
		if err := n.ns.Do(func(ns.NetNS) error {
			var err error
			out[b], err = rd.Present()
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// prober asks, until stopped, for every bound pod's identity and for the
// node's metadata from an unbound pod, and counts what went wrong: a bound
// pod refused or answered as another, an unbound one answered at all.
type prober struct {
	stop     chan struct{}
	done     sync.WaitGroup
	rounds   atomic.Int64
	mu       sync.Mutex
	failures []string
}

func startProber(bound []*pod, namespaces []string, unbound *pod) *prober {
	p := &prober{stop: make(chan struct{})}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			for i, b := range bound {
				if code, body, err := b.metadataGet(emailPath); err != nil || body != identityOf[namespaces[i]].email {
					p.fail(fmt.Sprintf("%s: %d %q %v", namespaces[i], code, body, err))
				}
			}
			if code, body, err := get(nsHTTPClient(unbound.ns, nil), "http://"+metadataIP+"/"); err == nil {
				p.fail(fmt.Sprintf("unbound pod answered %d %q", code, body))
			}
			p.rounds.Add(1)
		}
	}()
	return p
}

func (p *prober) fail(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures = append(p.failures, time.Now().Format("15:04:05.000000")+" "+s)
}

// end stops the prober and fails t with what went wrong.
func (p *prober) end(t *testing.T) {
	t.Helper()
	close(p.stop)
	p.done.Wait()
	if len(p.failures) > 0 {
		t.Errorf("%d of %d rounds went wrong during the switch: %v", len(p.failures), p.rounds.Load(), p.failures)
	}
	t.Logf("%d rounds of requests during the switch", p.rounds.Load())
}

// A node with live pods switches iptables -> nftables (by a GC with the new
// netconf) and back (by the first ADD with the old one): no bound pod's
// request is refused during either switch, an unbound pod is never let
// through, and afterwards only the new backend's objects are on the node.
func TestNFTMigration(t *testing.T) {
	for _, c := range []chain{{name: "ptp", subnet: "10.197.60.0/24"}, {name: "bridge", subnet: "10.197.61.0/24"}} {
		t.Run(c.name, func(t *testing.T) {
			c.backend = redirect.BackendIPTables
			n := newNode(t, c)
			n.startNodeMetadataServer(t)
			// The probes come as fast as they can: lift the per-caller limit.
			n.startResponder(t, responderConfig+"limits: {requestsPerSecond: 10000, burst: 100000}\n")
			a, b := n.addPod(t, "payments", "api-1"), n.addPod(t, "web", "site-1")
			unbound := n.addUnboundPod(t, "stale", "holder")
			if got := n.present(t); !got["iptables"] || got["nftables"] {
				t.Fatalf("before: %v", got)
			}

			pr := startProber([]*pod{a, b}, []string{"payments", "web"}, unbound)
			time.Sleep(300 * time.Millisecond)
			n.switchBackend(t, redirect.BackendNFTables)
			if err := n.invokeMetabind("GC", "", "", "", `"cni.dev/valid-attachments": `+string(mustJSON(t, n.attachments(a, b)))); err != nil {
				t.Fatalf("GC with the nftables netconf: %v", err)
			}
			time.Sleep(300 * time.Millisecond)
			pr.end(t)
			if got := n.present(t); got["iptables"] || !got["nftables"] {
				t.Fatalf("after the switch to nftables: %v\n%s", got, n.pluginLog())
			}
			// GC recorded the switch: the responder's repair loop (every
			// 3 s), which follows the records, leaves the node there.
			time.Sleep(4 * time.Second)
			if got := n.present(t); got["iptables"] || !got["nftables"] {
				t.Fatalf("4 s after the GC's switch to nftables: %v\n%s", got, n.responderLog())
			}
			if bad := n.inconsistencies(t); len(bad) > 0 {
				t.Fatalf("after the switch to nftables: %v", bad)
			}

			pr = startProber([]*pod{a, b}, []string{"payments", "web"}, unbound)
			time.Sleep(300 * time.Millisecond)
			n.switchBackend(t, redirect.BackendIPTables)
			d := n.addPod(t, "payments", "api-2") // its ADD installs iptables with a's and b's rules, then retires nftables
			time.Sleep(300 * time.Millisecond)
			pr.end(t)
			if got := n.present(t); !got["iptables"] || got["nftables"] {
				t.Fatalf("after the switch back: %v\n%s", got, n.pluginLog())
			}
			if bad := n.inconsistencies(t); len(bad) > 0 {
				t.Fatalf("after the switch back: %v", bad)
			}
			if _, body, err := d.metadataGet(emailPath); err != nil || body != identityOf["payments"].email {
				t.Errorf("the pod added with the switch: %q %v", body, err)
			}

			// And forward again by ADD, then DEL: the pod's elements go.
			n.switchBackend(t, redirect.BackendNFTables)
			e := n.addPod(t, "web", "site-2")
			if got := n.present(t); got["iptables"] || !got["nftables"] {
				t.Fatalf("after the ADD with nftables: %v", got)
			}
			n.delPod(t, e)
			for _, o := range n.owned(t) {
				if o.ContainerID == e.rt.ContainerID {
					t.Errorf("DEL left %v", o)
				}
			}
			if bad := n.inconsistencies(t); len(bad) > 0 {
				t.Fatalf("after DEL: %v", bad)
			}
		})
	}
}

// attachments are the GC valid-attachments list of pods.
func (n *node) attachments(pods ...*pod) []map[string]string {
	var out []map[string]string
	for _, p := range pods {
		out = append(out, map[string]string{"containerID": p.rt.ContainerID, "ifname": "eth0"})
	}
	return out
}

// Other tables on the same hooks: a DNAT of kube-proxy's kind for another
// address still works for every pod, and a Calico-like table that accepts
// everything from pods at an earlier priority does not let an unbound pod
// reach the node's metadata server, nor one pod pose as another.
func TestNFTCoexistence(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.62.0/24", backend: redirect.BackendNFTables})
	n.startNodeMetadataServer(t)
	n.startResponder(t, responderConfig)
	a := n.addPod(t, "payments", "api-1")
	unbound := n.addUnboundPod(t, "stale", "holder")
	gw := a.result.IPs[0].Gateway.String()

	var ln net.Listener
	if err := n.ns.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", gw+":8081")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "SERVICE") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	ruleset := fmt.Sprintf(`table ip other {
	chain o_pre { type nat hook prerouting priority -150; ip daddr 10.99.0.1 tcp dport 80 dnat to %s:8081; }
	chain o_in { type filter hook input priority -400; policy accept; accept; }
	chain o_fwd { type filter hook forward priority -400; policy accept; accept; }
}
table inet calico {
	chain c_in { type filter hook input priority -500; iifname != "lo" accept; }
}
`, gw)
	cmd := exec.Command("nsenter", "--net="+n.ns.Path(), "--", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
	for _, p := range []*pod{a, unbound} {
		if _, body, err := get(nsHTTPClient(p.ns, nil), "http://10.99.0.1/"); err != nil || body != "SERVICE" {
			t.Errorf("the other table's DNAT from %s: %q %v", p.ip, body, err)
		}
	}
	if _, body, err := a.metadataGet(emailPath); err != nil || body != identityOf["payments"].email {
		t.Errorf("the bound pod: %q %v", body, err)
	}
	mustGetNothing(t, "unbound pod to the metadata address", nsHTTPClient(unbound.ns, nil), "http://"+metadataIP+"/")
	mustGetNothing(t, "unbound pod to the responder", nsHTTPClient(unbound.ns, nil), "http://"+responderAddr+"/")
	if _, body, err := get(n.httpClient(), "http://"+metadataIP+"/"); err != nil || body != nodeMetadataBody {
		t.Errorf("the node's own request: %q %v", body, err)
	}
	t.Logf("nft list ruleset:\n%s", n.run(t, "nft", "list", "ruleset"))
}

// metabindctl rules backend shows the node's backend and switches it with
// live pods, never refusing a bound pod nor answering an unbound one; the
// switch is recorded, so the responder's repair loop, which follows the
// records, keeps the node there. A dry run changes nothing; an unknown
// backend is refused by name.
func TestRulesBackendSwitch(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.62.0/24", backend: redirect.BackendNFTables})
	n.startNodeMetadataServer(t)
	n.startResponder(t, responderConfig+"limits: {requestsPerSecond: 10000, burst: 100000}\n")
	a, b := n.addPod(t, "payments", "api-1"), n.addPod(t, "web", "site-1")
	unbound := n.addUnboundPod(t, "stale", "holder")
	ctl := filepath.Join(binDir, "metabindctl")
	show := func() string { return n.run(t, ctl, "--state-dir", n.stateDir, "rules", "backend") }
	if out := show(); !strings.Contains(out, metadataAddrPort.String()) || !strings.Contains(out, redirect.BackendNFTables) {
		t.Fatalf("rules backend:\n%s", out)
	}
	dry := n.run(t, ctl, "--state-dir", n.stateDir, "rules", "backend", "--dry-run", redirect.BackendIPTables)
	if got := n.present(t); got[redirect.BackendIPTables] || !got[redirect.BackendNFTables] || !strings.Contains(show(), redirect.BackendNFTables) {
		t.Fatalf("--dry-run changed the node: %v\n%s", got, dry)
	}
	out, err := exec.Command("nsenter", "--net="+n.ns.Path(), "--", ctl, "--state-dir", n.stateDir, "rules", "backend", "pf").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown redirect backend "pf"`) {
		t.Fatalf("rules backend pf: %v\n%s", err, out)
	}

	pr := startProber([]*pod{a, b}, []string{"payments", "web"}, unbound)
	time.Sleep(300 * time.Millisecond)
	switched := n.run(t, ctl, "--state-dir", n.stateDir, "rules", "backend", redirect.BackendIPTables)
	// Longer than the repair loop's period (3 s): were the switch not
	// recorded, the loop would put the node back on nftables meanwhile.
	time.Sleep(4 * time.Second)
	pr.end(t)
	if got := n.present(t); !got[redirect.BackendIPTables] || got[redirect.BackendNFTables] {
		t.Fatalf("after rules backend iptables: %v\n%s\nresponder log:\n%s", got, switched, n.responderLog())
	}
	if out := show(); !strings.Contains(out, redirect.BackendIPTables) {
		t.Fatalf("rules backend after the switch:\n%s", out)
	}
	n.backend = redirect.BackendIPTables
	if bad := n.inconsistencies(t); len(bad) > 0 {
		t.Fatalf("after the switch: %v", bad)
	}
}
