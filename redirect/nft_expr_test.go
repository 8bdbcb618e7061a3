package redirect

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A pod's elements: routed in the veth-keyed set and map, bridged in the
// address-keyed ones plus the bridge table's port set, every one naming the
// attachment and the host interface.
func TestNFTElements(t *testing.T) {
	resp := netip.MustParseAddrPort("169.254.169.252:988")
	r := Rule{HostInterface: "veth1", IP: netip.MustParseAddr("10.0.0.2"), Responder: resp, ContainerID: "c1", IfName: "eth0"}
	els := r.elements()
	if len(els) != 2 || els[0].set != nftSetSource || els[1].set != nftSetDNAT {
		t.Fatalf("routed: %+v", els)
	}
	wantKey := append(append([]byte("veth1"), make([]byte, 11)...), 10, 0, 0, 2)
	if !bytes.Equal(els[0].el.Key, wantKey) || !bytes.Equal(els[1].el.Val, []byte{169, 254, 169, 252, 0x03, 0xdc, 0, 0}) {
		t.Errorf("routed key %x val %x", els[0].el.Key, els[1].el.Val)
	}
	if els[0].el.Comment != "metabind:c1/eth0 veth1" {
		t.Errorf("comment %q", els[0].el.Comment)
	}
	r.Bridged = true
	if els := r.elements(); len(els) != 3 || els[0].set != nftSetBSource || !bytes.Equal(els[0].el.Key, []byte{10, 0, 0, 2}) || els[1].set != nftSetPorts {
		t.Errorf("bridged: %+v", els)
	}
	// What ListOwned reads back names the rule it came from.
	n, _ := NewNFT(netip.MustParseAddrPort("169.254.169.254:80"), resp)
	r.Bridged = false
	for _, e := range r.elements() {
		o, ok := n.owned(e.set, e.el)
		if !ok || !o.Is(r) {
			t.Errorf("%s element read back as %+v", e.set, o)
		}
	}
	r6 := Rule{HostInterface: "veth1", IP: netip.MustParseAddr("fd00::2"), Responder: netip.MustParseAddrPort("[fd00:ec2::252]:988")}
	if els := r6.elements(); len(els[1].el.Key) != 32 || len(els[1].el.Val) != 20 {
		t.Errorf("IPv6 sizes: key %d val %d", len(els[1].el.Key), len(els[1].el.Val))
	}
}

// The DNAT takes the responder's address and port from where a map lookup
// leaves the concatenated data: address in NFT_REG_1, port in the next
// 32-bit register (IPv4) or NFT_REG_2 (IPv6).
func TestNFTDNATRegisters(t *testing.T) {
	for i, wantPort := range []uint32{unix.NFT_REG32_01, unix.NFT_REG_2} {
		exprs := fams[i].dnatVia(nftSetDNAT)
		nat := exprs[1].(*expr.NAT)
		if lk := exprs[0].(*expr.Lookup); !lk.IsDestRegSet || lk.DestRegister != unix.NFT_REG_1 || lk.SetName != nftSetDNAT {
			t.Errorf("family %d: lookup %+v", i, lk)
		}
		if nat.RegAddrMin != unix.NFT_REG_1 || nat.RegProtoMin != wantPort || nat.Type != expr.NATTypeDestNAT {
			t.Errorf("family %d: nat %+v", i, nat)
		}
	}
}

// Every base rule has a comment of metabind's (the audit finds rules by
// it), unique within its chain; the source chain ends in the reject; the
// bridge table's rules drop (its reject needs a module kernels may lack).
func TestNFTBaseRules(t *testing.T) {
	meta, resp := netip.MustParseAddrPort("169.254.169.254:80"), netip.MustParseAddrPort("169.254.169.252:988")
	cc := netip.MustParseAddrPort("169.254.170.23:80")
	n, _ := NewNFT(meta, resp, cc)
	seen := map[string]bool{}
	for _, r := range n.rules() {
		k := r.chain + " " + r.comment
		if seen[k] || len(r.comment) < 10 || r.comment[:9] != "metabind:" {
			t.Errorf("comment %q in %s", r.comment, r.chain)
		}
		seen[k] = true
		last := r.exprs[len(r.exprs)-1]
		if v, ok := last.(*expr.Verdict); r.bridge && (!ok || v.Kind != expr.VerdictDrop) {
			t.Errorf("bridge rule %q ends in %T", r.comment, last)
		}
	}
	if got := len(n.rules()); got != 2*4+1+3+3 {
		t.Errorf("%d rules for two redirected addresses, want 15", got)
	}
	src := fams[0].sourceRules()
	if _, ok := src[len(src)-1].exprs[0].(*expr.Reject); !ok || src[len(src)-1].comment != commentGuard {
		t.Errorf("the source chain does not end in the reject: %+v", src[len(src)-1])
	}
}
