package admin

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckAddress(t *testing.T) {
	metadata := []netip.AddrPort{netip.MustParseAddrPort("169.254.169.252:988"), netip.MustParseAddrPort("[fd00:ec2::252]:988")}
	for _, tc := range []struct {
		addr, refusal, warning string
	}{
		{DefaultAddress, "", ""},
		{"[::1]:9988", "", ""},
		{"127.0.0.1:988", "", ""}, // the metadata port on another IP
		{"169.254.169.252:988", "overlaps the metadata address 169.254.169.252:988", ""},
		{"[fd00:ec2::252]:988", "overlaps the metadata address [fd00:ec2::252]:988", ""},
		{"0.0.0.0:988", "overlaps the metadata address", ""},
		{"[::]:988", "overlaps the metadata address", ""},
		{"[::ffff:169.254.169.252]:988", "overlaps", ""},
		{"169.254.169.252:9988", "", "not a loopback address"},
		{"0.0.0.0:9988", "", "pods may reach the probes"},
		{"10.0.0.5:9988", "", "not a loopback address"},
	} {
		warning, err := CheckAddress(netip.MustParseAddrPort(tc.addr), metadata)
		switch {
		case tc.refusal != "" && (err == nil || !strings.Contains(err.Error(), tc.refusal)):
			t.Errorf("%s: %v, want a refusal saying %q", tc.addr, err, tc.refusal)
		case tc.refusal == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.addr, err)
		case tc.warning == "" && warning != "", tc.warning != "" && !strings.Contains(warning, tc.warning):
			t.Errorf("%s: warning %q, want %q", tc.addr, warning, tc.warning)
		}
	}
}
