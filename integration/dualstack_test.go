package integration

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// Dual stack: with metadataAddress6 set, a pod's IPv6 address is bound and
// redirected with ip6tables too, and the pod gets its identity over IPv6;
// DEL removes both families. (IPv4-only nodes, every other test, make no
// ip6tables call at all.)
func TestDualStack(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.25.0/24", subnet6: "fd00:197:25::/64"})
	n.startResponder(t, responderConfig)
	p := n.addPod(t, "payments", "api-1")
	if !p.ip6.IsValid() {
		t.Fatalf("the pod got no IPv6 address: %+v", p.result)
	}
	all, err := store.ReadAll(n.stateDir, time.Second)
	if err != nil || len(all) != 2 {
		t.Fatalf("bindings %+v (%v), want one per family", all, err)
	}
	// Both pieces of the IPv6 rule, as the backend finds them.
	pieces := map[string]int{}
	for _, o := range n.owned6(t) {
		if o.ContainerID == p.rt.ContainerID && o.IP == p.ip6 {
			pieces[o.Chain]++
		}
	}
	if pieces[redirect.NATChain] != 1 || pieces[redirect.SourceChain] < 1 {
		t.Fatalf("no IPv6 rules for %s: %v", p.ip6, n.owned6(t))
	}
	if n.backend == redirect.BackendIPTables {
		rules6 := n.run(t, "ip6tables", "-t", "nat", "-S", "METABIND-DNAT")
		if !strings.Contains(rules6, p.ip6.String()+"/128") || !strings.Contains(n.run(t, "ip6tables", "-S", "METABIND-SOURCE"), p.rt.ContainerID) {
			t.Fatalf("ip6tables has no rules for %s:\n%s", p.ip6, rules6)
		}
	}

	// ptp leaves the node's IPv6 gateway address to duplicate address
	// detection, so the pod's IPv6 path opens a second or two after ADD:
	// poll until it does.
	url6 := "http://" + strings.TrimSuffix(metadataAddr6, ":80") + emailPath
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, err := get(nsHTTPClient(p.ns, nil), url6)
		if err == nil && body == identityOf["payments"].email {
			break
		}
		if err == nil || time.Now().After(deadline) {
			t.Fatalf("identity over IPv6: %d %q %v", code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body, err := p.metadataGet(emailPath); err != nil || body != identityOf["payments"].email {
		t.Fatalf("identity over IPv4 on the same pod: %d %q %v", code, body, err)
	}
	// A forged IPv6 source gets nothing, as in IPv4.
	forged := netip.MustParseAddr("fd00:197:25::beef")
	addAddress6(t, p, forged)
	mustGetNothing(t, "forged IPv6 source", nsHTTPClient(p.ns, &forged), url6)

	n.delPod(t, p)
	if all, _ := store.ReadAll(n.stateDir, time.Second); len(all) != 0 {
		t.Fatalf("after DEL: %+v", all)
	}
	for _, o := range n.owned6(t) {
		if o.ContainerID == p.rt.ContainerID {
			t.Fatalf("after DEL the IPv6 rules still hold %v", o)
		}
	}
}
