package plugin

import (
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// hostSide is the node end of a pod's veth.
type hostSide struct {
	Name    string
	Bridged bool // a bridge port: iptables sees the bridge with -i, the port with physdev
}

// findHostSide returns the node end of the pod interface ifName.
//
// prevResult normally names it: ptp lists the host veth, bridge lists the
// bridge and the host veth, all without a sandbox. When it names exactly one
// veth on the node, that is the answer. Otherwise (no veth listed, or several
// from more than one plugin) the veth peer is read from inside the pod's
// netns, which is exact.
func findHostSide(result *current.Result, ifName, netnsPath string) (hostSide, error) {
	var veths []netlink.Link
	for _, iface := range result.Interfaces {
		if iface.Sandbox != "" || iface.Name == "" {
			continue
		}
		link, err := netlink.LinkByName(iface.Name)
		if err != nil {
			continue // listed but not on this node: another plugin's business
		}
		if link.Type() == "veth" {
			veths = append(veths, link)
		}
	}
	if len(veths) == 1 {
		return describe(veths[0])
	}
	link, err := peerOf(ifName, netnsPath)
	if err != nil {
		return hostSide{}, fmt.Errorf("find host side of %s: prevResult names %d host veths and %w", ifName, len(veths), err)
	}
	return describe(link)
}

// peerOf finds, on the node, the veth peer of ifName in the pod's netns.
func peerOf(ifName, netnsPath string) (netlink.Link, error) {
	podNS, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("open netns %q: %w", netnsPath, err)
	}
	defer podNS.Close()
	h, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return nil, fmt.Errorf("netlink in %q: %w", netnsPath, err)
	}
	defer h.Close()
	podLink, err := h.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("%s in %q: %w", ifName, netnsPath, err)
	}
	if podLink.Type() != "veth" {
		return nil, fmt.Errorf("%s in %q is a %s, not a veth", ifName, netnsPath, podLink.Type())
	}
	// For a veth, IFLA_LINK is the peer's index in the peer's netns. An
	// index alone could name an unrelated veth here (indexes are per
	// netns), so the candidate must point back at the pod's interface.
	peer, err := netlink.LinkByIndex(podLink.Attrs().ParentIndex)
	if err != nil || peer.Type() != "veth" || peer.Attrs().ParentIndex != podLink.Attrs().Index {
		return nil, fmt.Errorf("the peer of %s (index %d) is not a veth on this node: %v", ifName, podLink.Attrs().ParentIndex, err)
	}
	return peer, nil
}

func describe(link netlink.Link) (hostSide, error) {
	side := hostSide{Name: link.Attrs().Name}
	if master := link.Attrs().MasterIndex; master != 0 {
		m, err := netlink.LinkByIndex(master)
		if err != nil {
			return hostSide{}, fmt.Errorf("master of %s: %w", side.Name, err)
		}
		side.Bridged = m.Type() == "bridge"
	}
	return side, nil
}
