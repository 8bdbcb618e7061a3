package server

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// TestEnsureListenAddress runs in a throwaway network namespace, never the
// host's. It needs root: under CI it fails without it.
func TestEnsureListenAddress(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (creates a network namespace)")
		}
		t.Skip("needs root (creates a network namespace)")
	}
	testNS, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer testutils.UnmountNS(testNS)
	defer testNS.Close()

	err = testNS.Do(func(ns.NetNS) error {
		for _, s := range []string{"169.254.169.252", "fd00:ec2::252"} {
			ip := netip.MustParseAddr(s)
			link, err := EnsureListenAddress(ip)
			if err != nil || (link != ListenLink && link != "lo") {
				t.Errorf("%s: added to %q, err=%v; want %s (or lo where the kernel has no dummy links)", ip, link, err, ListenLink)
				return nil
			}
			if l, err := netlink.LinkByName(link); err != nil || l.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("%s is not up: %v", link, err)
			}
			if again, err := EnsureListenAddress(ip); err != nil || again != "" {
				t.Errorf("%s again: added to %q, err=%v; want nothing to do", ip, again, err)
			}
			ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 988).String())
			if err != nil {
				t.Errorf("listen on %s: %v", ip, err)
			} else {
				ln.Close()
			}
		}
		if link, err := EnsureListenAddress(netip.MustParseAddr("127.0.0.1")); err != nil || link != "" {
			t.Errorf("loopback: added to %q, err=%v", link, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
