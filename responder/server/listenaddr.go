package server

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ListenLink is the dummy interface that holds the listen address when no
// other interface has it.
const ListenLink = "metabind0"

// EnsureListenAddress makes ip assignable to a listening socket: when no
// interface holds it, it is added as a host address (/32 or /128) to the
// dummy link metabind0, which is created if missing and set up. On a kernel
// built without dummy links it goes on the loopback link instead, which
// serves the same (a local address is reachable from every interface) but
// is less obvious to an admin reading `ip addr`. addedTo names the link the
// address was added to, "" when nothing had to be done. Unspecified and
// loopback addresses need nothing.
func EnsureListenAddress(ip netip.Addr) (addedTo string, err error) {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return "", errors.New("listen address is not an IP address")
	}
	if ip.IsUnspecified() || ip.IsLoopback() {
		return "", nil
	}
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(nil, family)
	if err != nil {
		return "", fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if have, ok := netip.AddrFromSlice(a.IP); ok && have.Unmap() == ip {
			return "", nil
		}
	}

	link, err := listenLink()
	if errors.Is(err, unix.EOPNOTSUPP) {
		link, err = netlink.LinkByName("lo")
	}
	if err != nil {
		return "", err
	}
	name := link.Attrs().Name
	if err := netlink.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("set %s up: %w", name, err)
	}
	bits := ip.BitLen()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
	if ip.Is6() {
		addr.Flags = unix.IFA_F_NODAD // usable at once, no duplicate detection wait
	}
	if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("add %s to %s: %w", ip, name, err)
	}
	return name, nil
}

// listenLink returns metabind0, creating it as a dummy link if needed.
func listenLink() (netlink.Link, error) {
	link, err := netlink.LinkByName(ListenLink)
	if err == nil {
		if link.Type() != "dummy" {
			return nil, fmt.Errorf("link %s exists and is a %s link, not dummy", ListenLink, link.Type())
		}
		return link, nil
	}
	var notFound netlink.LinkNotFoundError
	if !errors.As(err, &notFound) {
		return nil, fmt.Errorf("find link %s: %w", ListenLink, err)
	}
	dummy := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: ListenLink}}
	if err := netlink.LinkAdd(dummy); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create dummy link %s: %w", ListenLink, err)
	}
	link, err = netlink.LinkByName(ListenLink)
	if err != nil {
		return nil, fmt.Errorf("find link %s: %w", ListenLink, err)
	}
	return link, nil
}
