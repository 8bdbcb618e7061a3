package server

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/metabind/metabind/store"
)

func TestCheckListenAddress(t *testing.T) {
	recorded := []store.Base{{Metadata: netip.MustParseAddrPort("169.254.169.254:80"), Responder: netip.MustParseAddrPort("169.254.169.252:988")}}
	for _, tc := range []struct {
		addr  string
		bases []store.Base
		want  string // "" accepted, "warn" accepted with a warning, else part of the error
	}{
		{"0.0.0.0:988", nil, "unspecified"},
		{"0.0.0.0:988", recorded, "unspecified"},
		{"[::]:988", nil, "unspecified"},
		{"10.0.0.5:988", nil, "not a metadata"},          // a node IP
		{"10.0.0.5:988", recorded, "covers only"},        // a node IP
		{"169.254.169.253:988", recorded, "covers only"}, // link-local, but not the guarded one
		{"169.254.169.252:989", recorded, "covers only"}, // the guarded address, another port
		{"169.254.169.252:988", recorded, ""},
		{"169.254.169.252:988", nil, "warn"},      // before the first ADD
		{"[fd00:ec2::252]:988", recorded, "warn"}, // IPv6 not recorded yet
		{"127.0.0.1:988", recorded, ""},
		{"[::1]:988", nil, ""},
	} {
		warning, err := CheckListenAddress(netip.MustParseAddrPort(tc.addr), tc.bases)
		switch {
		case tc.want == "" && (err != nil || warning != ""):
			t.Errorf("%s (bases %v): %q, %v; want accepted", tc.addr, tc.bases, warning, err)
		case tc.want == "warn" && (err != nil || warning == ""):
			t.Errorf("%s (bases %v): %q, %v; want accepted with a warning", tc.addr, tc.bases, warning, err)
		case tc.want != "" && tc.want != "warn" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s (bases %v): %v; want an error saying %q", tc.addr, tc.bases, err, tc.want)
		}
	}
}
