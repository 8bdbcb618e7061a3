package server

import (
	"fmt"
	"net/netip"

	"github.com/metabind/metabind/store"
)

// metadataRanges hold the addresses metadata services live at: IPv4
// link-local (169.254.169.254, GCE and AWS) and IPv6 unique-local
// (fd00:ec2::254 on AWS, fd20:ce::254 on GCE), where the plugin's
// responder addresses live too.
var metadataRanges = []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fc00::/7")}

// CheckListenAddress refuses a listen address through which a pod could
// reach the responder without passing the per-veth source check.
//
// The check (the METABIND-SOURCE jump and its REJECT in INPUT) covers the
// responder address the plugin installed, and only that address and port.
// An unspecified address accepts connections on every address of the node,
// a node IP among them, so a pod could connect there directly, with
// whatever source it can forge or hijack. So every address but loopback
// (which pods cannot reach) must be one the plugin recorded as a responder
// address (see store.Base). On a node where the plugin has not recorded any
// responder address of that family yet (before the first ADD, or the first
// since IPv6 was configured), an address in the metadata ranges is allowed,
// with a warning returned: the plugin's first ADD installs the check before
// any pod's redirect.
func CheckListenAddress(addr netip.AddrPort, bases []store.Base) (warning string, err error) {
	ip := addr.Addr().Unmap()
	if ip.IsUnspecified() {
		return "", fmt.Errorf("--listen %s: an unspecified address accepts connections on every address of the node, which bypasses the per-veth source check (it covers only the responder address); listen on the netconf's responderAddress, e.g. 169.254.169.252:988", addr)
	}
	if ip.IsLoopback() {
		return "", nil
	}
	recorded := false
	var same []string
	for _, b := range bases {
		if b.Responder.Addr().Is4() != ip.Is4() {
			continue
		}
		if b.Responder == netip.AddrPortFrom(ip, addr.Port()) {
			return "", nil
		}
		recorded = true
		same = append(same, b.Responder.String())
	}
	if recorded {
		return "", fmt.Errorf("--listen %s: the plugin's source check covers only the responder addresses it recorded (%v); pods could reach %s without it. Listen on the netconf's responderAddress", addr, same, addr)
	}
	for _, r := range metadataRanges {
		if r.Contains(ip) {
			return fmt.Sprintf("--listen %s: no pod ADD has recorded a responder address of this family yet; it must be the netconf's responderAddress, or pods will be refused", addr), nil
		}
	}
	return "", fmt.Errorf("--listen %s: not a metadata (link-local or unique-local) address nor one the plugin recorded; pods could reach it without the per-veth source check. Listen on the netconf's responderAddress, e.g. 169.254.169.252:988", addr)
}
