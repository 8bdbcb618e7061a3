package doctor

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/metabind/metabind/integration/fakedns"
)

func TestFirstNameserver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	writeFile(t, path, "search default.svc.cluster.local svc.cluster.local\n# comment\nnameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:5\n", 0o644)
	if got, err := firstNameserver(path); err != nil || got != netip.MustParseAddrPort("10.96.0.10:53") {
		t.Fatalf("firstNameserver = %v, %v", got, err)
	}
	writeFile(t, path, "search x\n", 0o644)
	if _, err := firstNameserver(path); err == nil {
		t.Fatal("no nameserver: want an error")
	}
}

func TestDefaultResolvConf(t *testing.T) {
	for in, want := range map[string]string{
		"/proc/4242/ns/net":        "/proc/4242/root/etc/resolv.conf",
		"/var/run/netns/cni-1234a": "/etc/resolv.conf",
	} {
		if got := defaultResolvConf(in); got != want {
			t.Errorf("defaultResolvConf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckDNSWithoutANetns(t *testing.T) {
	n := testNode(t)
	wantStatus(t, checkDNS(context.Background(), n), Skipped, "no --pod-netns")
	n.PodNetNS = "/proc/0/ns/net"
	wantStatus(t, checkDNS(context.Background(), n), Fail, "/proc/0/ns/net")
}

// lookupA asks the nameserver from inside the netns it is given (here the
// test's own: entering one needs root).
func TestLookupA(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("entering a network namespace needs root")
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := fakedns.Serve(conn, map[string]netip.Addr{"metadata.google.internal": netip.MustParseAddr(metadataIP)})
	defer srv.Close()
	got, err := lookupA(context.Background(), "/proc/self/ns/net", srv.Addr(), metadataName, time.Second)
	if err != nil || len(got) != 1 || got[0].String() != metadataIP {
		t.Fatalf("lookupA = %v, %v", got, err)
	}
	if _, err := lookupA(context.Background(), "/proc/self/ns/net", srv.Addr(), "unknown.internal.", time.Second); err == nil {
		t.Fatal("an unknown name: want an error")
	}
}
