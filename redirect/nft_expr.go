package redirect

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The expressions of the nftables backend's base rules, built without a
// kernel so tests can read them. Registers: NFT_REG_1 (16 bytes) takes an
// interface name, NFT_REG_2 what is concatenated after it (a source
// address), as nft itself lays out `iifname . ip saddr`; a map's data
// `ipv4_addr . inet_service` comes back in NFT_REG_1 with the port in the
// 32-bit register after the address.
const (
	regKey  = unix.NFT_REG_1
	regNext = unix.NFT_REG_2
	// metaIIFKind is NFT_META_IIFKIND (Linux 5.1), which x/sys lacks.
	metaIIFKind expr.MetaKey = 26
)

// fam is what differs between the IPv4 and IPv6 tables.
type fam struct {
	table   nftables.TableFamily
	proto   uint32 // NFPROTO_IPV4/6, for NAT
	ether   uint16 // the frame's ether type, for the bridge table
	addr    nftables.SetDatatype
	saddrAt uint32 // offset of the source address in the network header
	daddrAt uint32
	alen    uint32
}

var fams = [2]fam{
	{nftables.TableFamilyIPv4, unix.NFPROTO_IPV4, 0x0800, nftables.TypeIPAddr, 12, 16, 4},
	{nftables.TableFamilyIPv6, unix.NFPROTO_IPV6, 0x86dd, nftables.TypeIP6Addr, 8, 24, 16},
}

// ifname is an interface name as nftables compares it: NUL-padded to 16.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func portBytes(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

// toDest matches TCP to addr: its destination address and port.
func (f fam) toDest(addr netip.AddrPort) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: regKey, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrAt, Len: f.alen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regKey, Data: addr.Addr().AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regKey},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regKey, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: regKey, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regKey, Data: portBytes(addr.Port())},
	}
}

// notLo spares the node's own traffic over loopback.
func notLo() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: regKey},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regKey, Data: ifname("lo")},
	}
}

// fromBridge: the packet came in by a bridge (at the IP hooks, a bridge
// port's packets have the bridge as their input interface).
func fromBridge() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: metaIIFKind, Register: regKey},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regKey, Data: ifname("bridge")},
	}
}

// ifaceSaddr loads `iifname . saddr` as a concatenated key.
func (f fam) ifaceSaddr() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: regKey},
		&expr.Payload{DestRegister: regNext, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrAt, Len: f.alen},
	}
}

// saddr loads the source address alone.
func (f fam) saddr() []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: regKey, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrAt, Len: f.alen}}
}

// dnatVia sends the packet where set maps its key (in regKey) to: the
// responder's address and port.
func (f fam) dnatVia(set string) []expr.Any {
	port := uint32(unix.NFT_REG32_01) // after a 4-byte address
	if f.alen == 16 {
		port = regNext
	}
	return []expr.Any{
		&expr.Lookup{SourceRegister: regKey, DestRegister: regKey, IsDestRegSet: true, SetName: set},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.proto, RegAddrMin: regKey, RegProtoMin: port, Specified: true},
	}
}

func reject() expr.Any { return &expr.Reject{Type: unix.NFT_REJECT_TCP_RST} }

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// nftRule is a base rule: the chain it belongs in, its comment (how the
// audit finds it) and its expressions.
type nftRule struct {
	bridge  bool // in the bridge table, not the ip/ip6 one
	chain   string
	comment string
	exprs   []expr.Any
}

// baseRules are the rules of one base: the DNATs of every redirected
// address, the jump to the source check for the responder, the blocks,
// and the bridge table's port check. sourceRules are the source chain's,
// the same for every base of a family.
func (f fam) baseRules(redirected []netip.AddrPort, responder netip.AddrPort) []nftRule {
	var out []nftRule
	for _, a := range redirected {
		out = append(out,
			nftRule{false, nftPrerouting, "metabind: redirect " + a.String() + " from a bound veth",
				join(f.toDest(a), f.ifaceSaddr(), f.dnatVia(nftSetDNAT))},
			nftRule{false, nftPrerouting, "metabind: redirect " + a.String() + " from a bound bridge port",
				join(f.toDest(a), fromBridge(), f.saddr(), f.dnatVia(nftSetBDNAT))},
			nftRule{false, nftInput, "metabind: block unclaimed " + a.String() + " to the node",
				join(f.toDest(a), notLo(), []expr.Any{reject()})},
			nftRule{false, nftForward, "metabind: block unclaimed " + a.String() + " routed on",
				join(f.toDest(a), []expr.Any{reject()})},
		)
	}
	out = append(out, nftRule{false, nftInput, "metabind: only bound pods reach " + responder.String(),
		join(f.toDest(responder), notLo(), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: nftSource}})})
	for _, a := range append(redirected, responder) {
		out = append(out, nftRule{true, nftPrerouting, "metabind: only a bound bridge port and address to " + a.String(),
			join(f.bridgeFrame(), f.toDest(a), f.ifaceSaddr(),
				[]expr.Any{&expr.Lookup{SourceRegister: regKey, SetName: nftSetPorts, Invert: true}, &expr.Verdict{Kind: expr.VerdictDrop}})})
	}
	return out
}

// bridgeFrame matches frames of the family's ether type (the bridge table
// sees every frame). The bridge family drops rather than rejects: its
// reject needs nft_reject_bridge, which kernels may lack.
func (f fam) bridgeFrame() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: regKey},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regKey, Data: portBytes(f.ether)},
	}
}

func (f fam) sourceRules() []nftRule {
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	return []nftRule{
		{false, nftSource, "metabind: a bound pod behind its veth",
			join(f.ifaceSaddr(), []expr.Any{&expr.Lookup{SourceRegister: regKey, SetName: nftSetSource}, accept})},
		{false, nftSource, "metabind: a bound pod behind a bridge (its port is checked in the bridge table)",
			join(fromBridge(), f.saddr(), []expr.Any{&expr.Lookup{SourceRegister: regKey, SetName: nftSetBSource}, accept})},
		{false, nftSource, commentGuard, []expr.Any{reject()}},
	}
}

// elements are a rule's set elements: set name (in the bridge table for
// nftSetPorts) and element.
type element struct {
	set string
	el  nftables.SetElement
}

// elements is how a pod's rule is held: for a routed pod (veth, IP) in
// the source set and the DNAT map; for a bridged one its IP in the bridged
// source set and DNAT map, and (port, IP) in the bridge table's port set.
// Each carries the attachment and the host interface in its comment.
func (r Rule) elements() []element {
	ip := r.IP.AsSlice()
	comment := Comment(r.ContainerID, r.IfName) + " " + r.HostInterface
	to := append(r.Responder.Addr().AsSlice(), portBytes(r.Responder.Port())...)
	to = append(to, 0, 0) // inet_service is padded to a register in a concatenation
	key := append(ifname(r.HostInterface), ip...)
	if r.Bridged {
		return []element{
			{nftSetBSource, nftables.SetElement{Key: ip, Comment: comment}},
			{nftSetPorts, nftables.SetElement{Key: key, Comment: comment}},
			{nftSetBDNAT, nftables.SetElement{Key: ip, Val: to, Comment: comment}},
		}
	}
	return []element{
		{nftSetSource, nftables.SetElement{Key: key, Comment: comment}},
		{nftSetDNAT, nftables.SetElement{Key: key, Val: to, Comment: comment}},
	}
}
