package main

import (
	"net/netip"
	"testing"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// An address given to gc keeps the backend recorded for it; an address
// with no record gets the backend whose objects are on the node, else the
// plugin's default, resolved (never "auto" itself, never empty).
func TestGivenBaseKeepsTheRecordedBackend(t *testing.T) {
	meta := netip.MustParseAddrPort("169.254.169.254:80")
	other := netip.MustParseAddrPort("169.254.170.23:80")
	resp := netip.MustParseAddrPort("169.254.169.252:988")
	recorded := []store.Base{
		{Metadata: meta, Responder: resp, Backend: redirect.BackendNFTables},
		{Metadata: other, Responder: resp}, // written before backends had names
	}
	for _, c := range []struct {
		name     string
		metadata netip.AddrPort
		onNode   string
		want     string
	}{
		{"recorded nftables", meta, redirect.BackendIPTables, redirect.BackendNFTables},
		{"recorded without a name is iptables", other, redirect.BackendNFTables, redirect.BackendIPTables},
		{"not recorded: the one on the node", netip.MustParseAddrPort("10.0.0.1:80"), redirect.BackendIPTables, redirect.BackendIPTables},
		{"not recorded, none on the node: the default, resolved", netip.MustParseAddrPort("10.0.0.1:80"), "", redirect.Resolve(redirect.DefaultBackend)},
	} {
		got := givenBase(recorded, c.metadata, resp, func() string { return c.onNode })
		if got.Backend != c.want || got.Metadata != c.metadata || got.Responder != resp {
			t.Errorf("%s: %+v, want backend %q", c.name, got, c.want)
		}
	}
}
