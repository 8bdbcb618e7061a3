package redirect

import (
	"net/netip"
)

// Set is the redirect side of one netconf: IPv4 always, IPv6 when
// metadataAddress6 is set. Each family's Redirect is created on first use.
type Set struct {
	newRedirect Maker
	addrs       [2][2]netip.AddrPort // by family (0: IPv4, 1: IPv6): metadata, responder
	extra       [2][]netip.AddrPort  // by family: redirected like metadata
	made        [2]Backend
	// AfterPiece is handed to every Redirect made (the crash checkpoints).
	AfterPiece func()
}

// NewSet returns the redirects for an IPv4 pair of addresses and, when
// metadata6 is valid, an IPv6 pair; newRedirect makes each.
func NewSet(newRedirect Maker, metadata, responder, metadata6, responder6 netip.AddrPort) *Set {
	return &Set{
		newRedirect: newRedirect,
		addrs:       [2][2]netip.AddrPort{{metadata, responder}, {metadata6, responder6}},
	}
}

// AlsoRedirect adds addresses redirected like the metadata address of
// their family (containerCredentialsAddress and its IPv6 key), before the
// first For.
func (r *Set) AlsoRedirect(addrs ...netip.AddrPort) *Set {
	for _, a := range addrs {
		if a.IsValid() {
			f := Family(a.Addr())
			r.extra[f] = append(r.extra[f], a)
		}
	}
	return r
}

// Family is 0 for IPv4 and 1 for IPv6: the index of ip's redirect.
func Family(ip netip.Addr) int {
	if ip.Is6() {
		return 1
	}
	return 0
}

// Configured reports whether ip's family has a metadata address.
func (r *Set) Configured(ip netip.Addr) bool {
	return r.addrs[Family(ip)][0].IsValid()
}

// Responder is where the redirect of ip's family sends metadata traffic.
func (r *Set) Responder(ip netip.Addr) netip.AddrPort {
	return r.addrs[Family(ip)][1]
}

// For returns the redirect of ip's family.
func (r *Set) For(ip netip.Addr) (Backend, error) {
	f := Family(ip)
	if r.made[f] != nil {
		return r.made[f], nil
	}
	metadata, responder, extra := r.addrs[f][0], r.addrs[f][1], r.extra[f]
	if !metadata.IsValid() {
		// Not configured (any more): good for finding and removing per-pod
		// rules, which carry their own responder address, not for set-up.
		metadata = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		responder, extra = metadata, nil
	}
	rd, err := r.newRedirect(metadata, responder, extra...)
	if err != nil {
		return nil, err
	}
	rd.SetAfterPiece(r.AfterPiece)
	r.made[f] = rd
	return rd, nil
}

// All returns the redirect of every configured family.
func (r *Set) All() ([]Backend, error) {
	var out []Backend
	for _, ip := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		if !r.Configured(ip) {
			continue
		}
		rd, err := r.For(ip)
		if err != nil {
			return nil, err
		}
		out = append(out, rd)
	}
	return out, nil
}
