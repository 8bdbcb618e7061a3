package redirect

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

var (
	testMeta = netip.MustParseAddrPort("169.254.169.254:80")
	testResp = netip.MustParseAddrPort("169.254.169.252:988")
)

// nftInNS returns an NFT programming a new network namespace (root only).
func nftInNS(t testing.TB) (*NFT, ns.NetNS) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Close(); testutils.UnmountNS(netns) })
	n, _ := NewNFT(testMeta, testResp)
	fd := int(netns.Fd())
	n.dial = func() (*nftables.Conn, error) { return nftables.New(nftables.WithNetNSFd(fd)) }
	return n, netns
}

func nftList(t *testing.T, netns ns.NetNS) string {
	var s []byte
	err := netns.Do(func(ns.NetNS) error {
		var e error
		s, e = exec.Command("nft", "list", "ruleset").CombinedOutput()
		return e
	})
	if err != nil {
		t.Fatalf("nft list ruleset: %v: %s", err, s)
	}
	return string(s)
}

func TestNFTBaseAndElements(t *testing.T) {
	n, netns := nftInNS(t)
	if problems, err := n.AuditBase(); err != nil || len(problems) == 0 {
		t.Fatalf("audit of an empty node: %v %v", problems, err)
	}
	if err := n.AddBatch([]Rule{{HostInterface: "veth1", IP: netip.MustParseAddr("10.0.0.2"), Responder: testResp}}, false); err == nil {
		t.Fatal("a batch with no base applied")
	}
	seed := []Rule{{HostInterface: "veth0", IP: netip.MustParseAddr("10.0.0.9"), Responder: testResp, ContainerID: "seed", IfName: "eth0"}}
	if _, err := n.EnsureBaseWith(seed); err != nil {
		t.Fatalf("ensure base: %v", err)
	}
	if problems, err := n.AuditBase(); err != nil || len(problems) != 0 {
		t.Fatalf("audit after ensure: %v %v\n%s", problems, err, nftList(t, netns))
	}
	routed := Rule{HostInterface: "veth1", IP: netip.MustParseAddr("10.0.0.2"), Responder: testResp, ContainerID: "c1", IfName: "eth0"}
	bridged := Rule{HostInterface: "veth2", Bridged: true, IP: netip.MustParseAddr("10.0.0.3"), Responder: testResp, ContainerID: "c2", IfName: "eth0"}
	if err := n.AddBatch([]Rule{routed, bridged}, true); err != nil {
		t.Fatalf("add batch: %v\n%s", err, nftList(t, netns))
	}
	t.Logf("ruleset:\n%s", nftList(t, netns))
	for _, r := range []Rule{routed, bridged, seed[0]} {
		if ok, err := n.Has(r); err != nil || !ok {
			t.Errorf("Has(%v) = %v %v", r, ok, err)
		}
	}
	owned, err := n.ListOwned()
	if err != nil {
		t.Fatal(err)
	}
	m := MatchPodRules(owned, nil)
	if len(owned) != 7 || len(m.Owner) != 7 {
		t.Fatalf("owned = %v", owned)
	}
	for _, o := range owned {
		if o.ContainerID == "" || !o.IP.IsValid() || o.Interface == "" || (o.Chain == NATChain && o.To != testResp) {
			t.Errorf("owned read back wrong: %+v", o)
		}
	}
	if err := n.RemoveBatch([]Rule{routed, bridged}); err != nil {
		t.Fatalf("remove batch: %v", err)
	}
	if err := n.RemoveBatch([]Rule{routed}); err == nil {
		t.Error("a batch removing what is gone applied")
	}
	if err := n.Remove(routed); err != nil {
		t.Errorf("remove of a removed rule: %v", err)
	}
	if k, err := n.RemoveByComment("seed", "eth0"); err != nil || k != 2 {
		t.Errorf("RemoveByComment = %d %v", k, err)
	}
	if owned, _ := n.ListOwned(); len(owned) != 0 {
		t.Errorf("left: %v", owned)
	}
	if err := n.RemoveAll(); err != nil {
		t.Fatal(err)
	}
	if ok, err := n.Present(); ok || err != nil {
		t.Errorf("present after RemoveAll: %v %v", ok, err)
	}
}

// google/nftables' GetSetElements wraps ENOENT with %v; a set of a deleted
// table must still read as missing.
func TestIsNFTNotExistReadsWrappedText(t *testing.T) {
	for err, want := range map[error]bool{
		nil:                              false,
		unix.ENOENT:                      true,
		fmt.Errorf("x: %w", unix.ENOENT): true,
		fmt.Errorf("receiveAckAware: %v", fmt.Errorf("netlink receive: %w", unix.ENOENT)): true,
		fmt.Errorf("receiveAckAware: %v", unix.EPERM):                                     false,
	} {
		if got := isNFTNotExist(err); got != want {
			t.Errorf("isNFTNotExist(%v) = %v, want %v", err, got, want)
		}
	}
}
