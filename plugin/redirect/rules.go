// Package redirect owns metabind's iptables rules: the per-pod DNAT that
// sends a pod's metadata traffic to the responder, and the filter rule that
// rejects metadata traffic no pod rule claimed.
//
//	nat PREROUTING  -d META -p tcp --dport P  -j METABIND-DNAT   (one jump, only metadata traffic)
//	nat METABIND-DNAT  -i VETH -s POD_IP -p tcp  -j DNAT --to RESPONDER   (one rule per pod IP)
//	                   (bridge port: -m physdev --physdev-in VETH instead of -i)
//	filter INPUT (! -i lo) and FORWARD  -d META -p tcp --dport P  -j METABIND-BLOCK
//	filter INPUT (! -i lo)  -d RESPONDER -p tcp --dport RP  ! --ctstate DNAT  -j METABIND-BLOCK
//	filter METABIND-BLOCK  -j REJECT --reject-with tcp-reset
//
// A packet that a pod rule DNATs no longer has the metadata destination when
// it reaches the filter table, so only unclaimed metadata traffic (an unbound
// pod, a spoofed source, a pod behind the wrong veth) meets the REJECT, and
// only DNATed connections reach the responder's own address. The node's own
// processes leave through OUTPUT and loopback and are never affected.
package redirect

import (
	"net/netip"
	"strconv"
)

// Chain names are part of the node's state: changing them would strand the
// rules of every running pod on upgrade. Never rename them.
const (
	NATChain    = "METABIND-DNAT"
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

// Comment names the CNI attachment that owns a rule.
func Comment(containerID, ifName string) string {
	return CommentPrefix + containerID + "/" + ifName
}

// Spec is the rule in NATChain that DNATs r's metadata traffic to the
// responder.
func (r Rule) Spec() []string {
	spec := make([]string, 0, 16)
	if r.Bridged {
		// On a bridge, -i sees the bridge, not the port the packet came in
		// by; physdev names the port (br_netfilter passes bridged traffic to
		// iptables).
		spec = append(spec, "-m", "physdev", "--physdev-in", r.HostInterface)
	} else {
		spec = append(spec, "-i", r.HostInterface)
	}
	return append(spec,
		"-s", prefix(r.IP),
		"-p", "tcp",
		"-m", "comment", "--comment", Comment(r.ContainerID, r.IfName),
		"-j", "DNAT", "--to-destination", r.Responder.String(),
	)
}

// jumpSpec selects metadata traffic: what pods send to metadata.
func jumpSpec(metadata netip.AddrPort, target, comment string) []string {
	return []string{
		"-d", prefix(metadata.Addr()),
		"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(int(metadata.Port())),
		"-m", "comment", "--comment", comment,
		"-j", target,
	}
}

// natJumpSpec is PREROUTING's jump into NATChain.
func natJumpSpec(metadata netip.AddrPort) []string {
	return jumpSpec(metadata, NATChain, "metabind: metadata traffic to per-pod redirects")
}

// forwardJumpSpec sends unclaimed metadata traffic that would be routed on
// (to a cloud metadata server behind the node) to FilterChain.
func forwardJumpSpec(metadata netip.AddrPort) []string {
	return jumpSpec(metadata, FilterChain, "metabind: block unclaimed metadata traffic")
}

// inputJumpSpec does the same for a metadata server on the node itself,
// sparing loopback so the node's own processes still reach it.
func inputJumpSpec(metadata netip.AddrPort) []string {
	return append([]string{"!", "-i", "lo"}, forwardJumpSpec(metadata)...)
}

// directSpec sends connections to the responder that no pod rule DNATed
// (a pod calling the responder's own address) to FilterChain: without it a
// pod that can forge another pod's address at L2 could skip the per-veth
// check. Loopback (the node itself) is spared.
func directSpec(responder netip.AddrPort) []string {
	return []string{
		"!", "-i", "lo",
		"-d", prefix(responder.Addr()),
		"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(int(responder.Port())),
		"-m", "conntrack", "!", "--ctstate", "DNAT",
		"-m", "comment", "--comment", "metabind: only redirected traffic reaches the responder",
		"-j", FilterChain,
	}
}

// blockSpec is FilterChain's only rule. A TCP reset makes clients fail fast
// rather than wait out their timeouts.
var blockSpec = []string{
	"-p", "tcp",
	"-m", "comment", "--comment", "metabind: metadata traffic with no pod binding",
	"-j", "REJECT", "--reject-with", "tcp-reset",
}

func prefix(ip netip.Addr) string {
	return netip.PrefixFrom(ip, ip.BitLen()).String()
}
