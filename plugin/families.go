package plugin

import (
	"net/netip"

	"github.com/metabind/metabind/plugin/redirect"
)

// Redirects are the iptables sides of one netconf: IPv4 always, IPv6 when
// metadataAddress6 is set. Each is created on first use, since creating one
// runs `iptables --version`.
type Redirects struct {
	newRedirect func(metadata, responder netip.AddrPort) (*redirect.Redirect, error)
	addrs       [2][2]netip.AddrPort // by family (0: IPv4, 1: IPv6): metadata, responder
	made        [2]*redirect.Redirect
	// AfterPiece is handed to every Redirect made (the crash checkpoints).
	AfterPiece func()
}

// NewRedirects returns the redirects of conf; newRedirect makes each.
func NewRedirects(conf *NetConf, newRedirect func(metadata, responder netip.AddrPort) (*redirect.Redirect, error)) *Redirects {
	return &Redirects{
		newRedirect: newRedirect,
		addrs:       [2][2]netip.AddrPort{{conf.Metadata, conf.Responder}, {conf.Metadata6, conf.Responder6}},
	}
}

func family(ip netip.Addr) int {
	if ip.Is6() {
		return 1
	}
	return 0
}

// Configured reports whether ip's family has a metadata address.
func (r *Redirects) Configured(ip netip.Addr) bool {
	return r.addrs[family(ip)][0].IsValid()
}

// Responder is where the redirect of ip's family sends metadata traffic.
func (r *Redirects) Responder(ip netip.Addr) netip.AddrPort {
	return r.addrs[family(ip)][1]
}

// For returns the redirect of ip's family.
func (r *Redirects) For(ip netip.Addr) (*redirect.Redirect, error) {
	f := family(ip)
	if r.made[f] != nil {
		return r.made[f], nil
	}
	metadata, responder := r.addrs[f][0], r.addrs[f][1]
	if !metadata.IsValid() {
		// Not configured (any more): good for finding and removing per-pod
		// rules, which carry their own responder address, not for set-up.
		metadata = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		responder = metadata
	}
	rd, err := r.newRedirect(metadata, responder)
	if err != nil {
		return nil, err
	}
	rd.AfterPiece = r.AfterPiece
	r.made[f] = rd
	return rd, nil
}

// All returns the redirect of every configured family.
func (r *Redirects) All() ([]*redirect.Redirect, error) {
	var out []*redirect.Redirect
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
