package reconcile

import (
	"net/netip"
	"testing"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

func owned(b store.Binding, chain string) redirect.Owned {
	o := redirect.Owned{Chain: chain, ContainerID: b.ContainerID, IfName: b.IfName, IP: b.IP, Interface: b.HostInterface}
	if chain == redirect.NATChain {
		o.Spec, o.To = []string{"--to-destination", b.Responder.String()}, b.Responder
	}
	return o
}

func TestDiffPodRules(t *testing.T) {
	resp := netip.MustParseAddrPort("169.254.169.252:988")
	a := store.Binding{IP: netip.MustParseAddr("10.0.0.2"), ContainerID: "a", IfName: "eth0", HostInterface: "veth-a", Responder: resp}
	b := store.Binding{IP: netip.MustParseAddr("10.0.0.3"), ContainerID: "b", IfName: "eth0", HostInterface: "veth-b", Responder: resp}
	c := store.Binding{IP: netip.MustParseAddr("10.0.0.4"), ContainerID: "c", IfName: "eth0", HostInterface: "veth-c", Responder: resp}
	gone := store.Binding{IP: netip.MustParseAddr("10.0.0.5"), ContainerID: "gone", IfName: "eth0", HostInterface: "veth-g", Responder: resp}
	moved := a
	moved.HostInterface = "veth-old" // a's IP and attachment, another interface: not a's rule
	rules := []redirect.Owned{
		owned(a, redirect.NATChain), owned(a, redirect.SourceChain), owned(a, redirect.SourceChain), // a whole, one piece twice
		owned(b, redirect.SourceChain), // b half
		owned(gone, redirect.NATChain), // no binding
		owned(moved, redirect.NATChain),
	}
	d := diffPodRules(rules, []store.Binding{a, b, c})
	if len(d.orphans) != 2 || d.orphans[0].ContainerID != "gone" || d.orphans[1].Interface != "veth-old" {
		t.Errorf("orphans = %+v, want gone's rule and the rule on a's old interface", d.orphans)
	}
	if len(d.missing) != 2 || d.missing[0].ContainerID != "b" || d.missing[1].ContainerID != "c" || !d.partial[b.IP] || d.partial[c.IP] {
		t.Errorf("missing = %+v (partial %v), want b (partial) and c", d.missing, d.partial)
	}
	if again := diffPodRules(rules, []store.Binding{a, b, c}); again.signature() != d.signature() || d.signature() == "" {
		t.Errorf("the same difference must have the same, non-empty signature")
	}
	if whole := diffPodRules(rules[:3], []store.Binding{a}); !whole.empty() {
		t.Errorf("a whole binding with a duplicate piece is a difference: %+v", whole)
	}
}
