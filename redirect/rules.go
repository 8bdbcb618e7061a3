// Package redirect owns metabind's iptables rules: the per-pod DNAT that
// sends a pod's metadata traffic to the responder, the per-pod source check
// that every packet reaching the responder must pass, and the filter rules
// that reject metadata traffic no pod rule claimed.
//
//	nat PREROUTING     -d META -p tcp --dport P  -j METABIND-DNAT        (one jump per redirected address, see below)
//	nat METABIND-DNAT    -i VETH -s POD_IP -p tcp  -j DNAT --to RESPONDER   (one rule per pod IP)
//	filter INPUT         ! -i lo -d RESPONDER -p tcp --dport RP  -j METABIND-SOURCE
//	filter METABIND-SOURCE  -i VETH -s POD_IP  -j ACCEPT  (one rule per pod IP)
//	filter INPUT         ! -i lo -d RESPONDER -p tcp --dport RP  -j REJECT   (right after the jump)
//	filter INPUT (! -i lo) and FORWARD  -d META -p tcp --dport P  -j METABIND-BLOCK
//	filter METABIND-BLOCK   -j REJECT --reject-with tcp-reset
//	(on a bridge port, -m physdev --physdev-in VETH stands for -i VETH)
//
// NAT decides once per connection, on its first packet; conntrack applies
// the decision to every later packet whatever interface it arrives on. So
// the DNAT rule alone would let a pod that hijacks another pod's connection
// (ARP or MAC spoofing on a bridge) talk to the responder with the other
// pod's address. METABIND-SOURCE checks every packet that reaches the
// responder, DNATed or sent to its address directly: only a bound (veth, IP)
// pair gets through. A packet that a pod rule DNATed no longer has the
// metadata destination in the filter table, so only unclaimed metadata
// traffic (an unbound pod, a forged source, the wrong veth) meets
// METABIND-BLOCK. The node's own processes leave through OUTPUT and
// loopback and are never affected.
//
// Other addresses a pod reaches its credentials by (netconf
// containerCredentialsAddress) are redirected exactly like META: each gets
// its own PREROUTING jump and FORWARD/INPUT block jumps, and the per-pod
// DNAT rule, which matches no destination, sends their traffic to the same
// responder address.
package redirect

import (
	"net/netip"
	"strconv"

	"github.com/metabind/metabind/store"
)

// Chain names are part of the node's state: changing them would strand the
// rules of every running pod on upgrade. Never rename them.
const (
	NATChain    = "METABIND-DNAT"
	SourceChain = "METABIND-SOURCE"
	FilterChain = "METABIND-BLOCK"

	// CommentPrefix starts the comment of every per-pod rule, so rules can
	// be found "the hard way" when the store has lost track of them.
	CommentPrefix = "metabind:"
)

// Rule is the redirect of one pod IP arriving on one host interface.
type Rule struct {
	HostInterface string         // host side of the pod's veth
	Bridged       bool           // HostInterface is a bridge port: match it with physdev
	IP            netip.Addr     // the pod's source address
	Responder     netip.AddrPort // where its metadata traffic goes
	ContainerID   string
	IfName        string
}

// RuleFor is the rule that stands for a binding.
func RuleFor(b store.Binding) Rule {
	return Rule{
		HostInterface: b.HostInterface,
		Bridged:       b.Bridged,
		IP:            b.IP,
		Responder:     b.Responder,
		ContainerID:   b.ContainerID,
		IfName:        b.IfName,
	}
}

// Comment names the CNI attachment that owns a rule.
func Comment(containerID, ifName string) string {
	return CommentPrefix + containerID + "/" + ifName
}

// piece is one iptables rule: where it goes and what it says.
type piece struct {
	table, chain string
	spec         []string
	first        bool // insert at the top rather than append
}

// pieces are a pod's rules, in the order they are installed: the source
// check first, so the pod's packets pass it as soon as the DNAT sends them.
func (r Rule) pieces() []piece {
	return []piece{
		{"filter", SourceChain, r.SourceSpec(), true}, // above the chain's final REJECT
		{"nat", NATChain, r.Spec(), false},
	}
}

// match selects packets from the pod: its veth and its address.
func (r Rule) match() []string {
	m := make([]string, 0, 16)
	if r.Bridged {
		// On a bridge, -i sees the bridge, not the port the packet came in
		// by; physdev names the port (br_netfilter passes bridged traffic to
		// iptables).
		m = append(m, "-m", "physdev", "--physdev-in", r.HostInterface)
	} else {
		m = append(m, "-i", r.HostInterface)
	}
	return append(m, "-s", prefix(r.IP))
}

// Spec is the rule in NATChain that DNATs r's metadata traffic to the
// responder.
func (r Rule) Spec() []string {
	return append(r.match(),
		"-p", "tcp",
		"-m", "comment", "--comment", Comment(r.ContainerID, r.IfName),
		"-j", "DNAT", "--to-destination", r.Responder.String(),
	)
}

// SourceSpec is the rule in SourceChain that lets r's packets reach the
// responder. What no such rule accepts returns to INPUT and meets the
// REJECT that follows the jump: the chain itself holds only per-pod rules,
// so a batch never has to look through it (see AddBatch).
func (r Rule) SourceSpec() []string {
	return append(r.match(),
		"-m", "comment", "--comment", Comment(r.ContainerID, r.IfName),
		"-j", "ACCEPT",
	)
}

// jumpSpec selects traffic to addr: tcp, its port; notLo spares the
// node's own loopback traffic. Base rules are written in the order
// `iptables -S` prints them (-d, -i, -p, matches, target), so that a listing
// can be compared with them word for word (audit.go).
func jumpSpec(addr netip.AddrPort, notLo bool, target, comment string) []string {
	spec := []string{"-d", prefix(addr.Addr())}
	if notLo {
		spec = append(spec, "!", "-i", "lo")
	}
	return append(spec,
		"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(int(addr.Port())),
		"-m", "comment", "--comment", comment,
		"-j", target,
	)
}

// base is every rule and chain the per-pod rules rely on, in the order
// EnsureBase installs them: the blocks before the redirect, so there is
// never a moment with a redirect and no block. A piece with no spec is a
// chain. redirected are the addresses whose traffic the per-pod rules
// claim, the metadata address first, then any other (a container
// credentials address): each gets a PREROUTING jump to NATChain and block
// jumps in FORWARD and INPUT, the same rules with another destination, so
// a base of the metadata address alone is the one metabind always had.
func base(redirected []netip.AddrPort, responder netip.AddrPort) []piece {
	out := []piece{
		{"filter", FilterChain, nil, false},
		{"filter", FilterChain, blockSpec(commentBlockRule), false},
	}
	for _, addr := range redirected {
		// Unclaimed traffic routed on, to a server behind the node, and to
		// one on the node itself (loopback spared, so the node's own
		// processes still reach it).
		out = append(out,
			piece{"filter", "FORWARD", jumpSpec(addr, false, FilterChain, commentBlockJump), true},
			piece{"filter", "INPUT", jumpSpec(addr, true, FilterChain, commentBlockJump), true},
		)
	}
	out = append(out,
		piece{"filter", SourceChain, nil, false},
		// Inserted first in this order, the jump ends up above the REJECT.
		piece{"filter", "INPUT", guardSpec(responder), true},
		piece{"filter", "INPUT", jumpSpec(responder, true, SourceChain, commentSourceJump), true},
		piece{"nat", NATChain, nil, false},
	)
	for _, addr := range redirected {
		out = append(out, piece{"nat", "PREROUTING", jumpSpec(addr, false, NATChain, commentRedirectJmp), true})
	}
	return out
}

// The comments of the base rules: fixed, as the chain names, since the
// audit tells metabind's rules from other agents' by them.
const (
	commentBlockRule   = "metabind: metadata traffic with no pod binding"
	commentBlockJump   = "metabind: block unclaimed metadata traffic"
	commentGuard       = "metabind: not a bound pod veth and address"
	commentSourceJump  = "metabind: only bound pods reach the responder"
	commentRedirectJmp = "metabind: metadata traffic to per-pod redirects"
)

var baseComments = []string{commentBlockRule, commentBlockJump, commentGuard, commentSourceJump, commentRedirectJmp}

// guardSpec rejects what reaches the responder's address and no per-pod
// source rule accepted.
func guardSpec(responder netip.AddrPort) []string {
	return []string{
		"-d", prefix(responder.Addr()), "!", "-i", "lo",
		"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(int(responder.Port())),
		"-m", "comment", "--comment", commentGuard,
		"-j", "REJECT", "--reject-with", "tcp-reset",
	}
}

// blockSpec rejects TCP with a reset, so clients fail fast rather than wait
// out their timeouts.
func blockSpec(comment string) []string {
	return []string{
		"-p", "tcp",
		"-m", "comment", "--comment", comment,
		"-j", "REJECT", "--reject-with", "tcp-reset",
	}
}

func prefix(ip netip.Addr) string {
	return netip.PrefixFrom(ip, ip.BitLen()).String()
}
