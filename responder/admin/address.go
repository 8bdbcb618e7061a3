package admin

import (
	"fmt"
	"net/netip"
)

// DefaultAddress is the admin address unless --admin-listen says otherwise:
// the node's loopback, which no pod reaches (a pod's 127.0.0.1 is its own).
const DefaultAddress = "127.0.0.1:9988"

// CheckAddress refuses an admin address that is, or overlaps, one of the
// metadata listen addresses (the same port on the same IP, or on every IP):
// the probes would be served to pods, or one server could not listen. It
// warns about an address that is not loopback: pods may reach it.
func CheckAddress(addr netip.AddrPort, metadata []netip.AddrPort) (warning string, err error) {
	ip := addr.Addr().Unmap()
	for _, m := range metadata {
		mip := m.Addr().Unmap()
		if m.Port() == addr.Port() && (mip == ip || mip.IsUnspecified() || ip.IsUnspecified()) {
			return "", fmt.Errorf("--admin-listen %s: overlaps the metadata address %s (--listen); the probes must not be served where pods ask for metadata: use another port, e.g. the default %s", addr, m, DefaultAddress)
		}
	}
	if !ip.IsLoopback() {
		return fmt.Sprintf("--admin-listen %s is not a loopback address: pods may reach the probes there (nothing secret is served, but keep it on 127.0.0.1 unless the kubelet cannot reach that)", addr), nil
	}
	return "", nil
}
