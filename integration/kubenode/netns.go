package kubenode

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// nodeLink is the node's interface, holding its IP.
const nodeLink = "node0"

// makeNetNS creates the node's network namespace under a name of its own
// (kubenode-<random>) and sets it up: lo up with DNSAddress, an interface
// with ip and a default route through it.
func (n *Node) makeNetNS(ip netip.Prefix) error {
	suffix := make([]byte, 5)
	rand.Read(suffix)
	n.NetNSName = "kubenode-" + hex.EncodeToString(suffix)
	created := make(chan error)
	go func() {
		// Never unlocked: netns.NewNamed moves this thread into the new
		// namespace, and the thread ends with this goroutine.
		runtime.LockOSThread()
		h, err := netns.NewNamed(n.NetNSName)
		if err == nil {
			h.Close()
		}
		created <- err
	}()
	if err := <-created; err != nil {
		return fmt.Errorf("create netns %s: %w", n.NetNSName, err)
	}
	n.NetNSPath = filepath.Join("/var/run/netns", n.NetNSName)
	var st syscall.Stat_t
	if err := syscall.Stat(n.NetNSPath, &st); err != nil {
		return err
	}
	n.netnsIno = st.Ino
	err := ns.WithNetNSPath(n.NetNSPath, func(ns.NetNS) error {
		var nic netlink.Link
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		dns := &net.IPNet{IP: n.DNSAddress.AsSlice(), Mask: net.CIDRMask(n.DNSAddress.BitLen(), n.DNSAddress.BitLen())}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: dns}); err != nil {
			return fmt.Errorf("%s on lo: %w", n.DNSAddress, err)
		}
		// A veth pair with both ends here stands in for the node's NIC
		// (the dummy driver is not loaded on every machine).
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nodeLink}, PeerName: nodeLink + "-peer"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add %s: %w", nodeLink, err)
		}
		for _, name := range []string{veth.PeerName, nodeLink} {
			if nic, err = netlink.LinkByName(name); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(nic); err != nil {
				return err
			}
		}
		addr := &net.IPNet{IP: ip.Addr().AsSlice(), Mask: net.CIDRMask(ip.Bits(), ip.Addr().BitLen())}
		if err := netlink.AddrAdd(nic, &netlink.Addr{IPNet: addr}); err != nil {
			return fmt.Errorf("%s on %s: %w", ip, nodeLink, err)
		}
		// The kubelet and the control plane look for a default route to
		// pick the node's address.
		def := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: nic.Attrs().Index, Dst: def, Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("default route via %s: %w", nodeLink, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set up netns %s: %w", n.NetNSName, err)
	}
	return nil
}

// deleteNetNS removes the node's network namespace (its last process gone,
// the namespace goes with the name).
func (n *Node) deleteNetNS() error {
	if n.NetNSName == "" {
		return nil
	}
	if _, err := os.Stat(n.NetNSPath); os.IsNotExist(err) {
		return nil
	}
	return netns.DeleteNamed(n.NetNSName)
}
