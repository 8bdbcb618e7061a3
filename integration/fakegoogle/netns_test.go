package fakegoogle_test

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/metabind/metabind/integration/fakegoogle"
)

// TestNetNS: with NetNS the fake listens in that namespace only; on
// 0.0.0.0 its certificate names the namespace's addresses at Start and
// CertIPs, and a client in the namespace runs the exchange through it.
func TestNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("cannot run under CI: needs root (network namespaces)")
		}
		t.Skip("skipped: needs root (network namespaces)")
	}
	nodeNS, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	t.Cleanup(func() {
		nodeNS.Close()
		testutils.UnmountNS(nodeNS)
	})
	// Addresses on the namespace's loopback (not every kernel has dummy
	// links).
	addAddr := func(cidr string) {
		t.Helper()
		if err := nodeNS.Do(func(ns.NetNS) error {
			link, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(link); err != nil {
				return err
			}
			addr, err := netlink.ParseAddr(cidr)
			if err != nil {
				return err
			}
			return netlink.AddrAdd(link, addr)
		}); err != nil {
			t.Fatal(err)
		}
	}
	addAddr("10.123.0.1/32") // before Start: in the certificate by itself
	e := newEnv(t, func(o *fakegoogle.Options) {
		o.NetNS = nodeNS.Path()
		o.ListenAddr = "0.0.0.0:0"
		o.CertIPs = []net.IP{net.ParseIP("10.123.1.1")}
	})
	addAddr("10.123.1.1/32") // after Start: in the certificate through CertIPs

	if e.fake.Host != "127.0.0.1" || !strings.HasPrefix(e.fake.STSURL, "https://127.0.0.1:"+strconv.Itoa(e.fake.Port)+"/") {
		t.Fatalf("host %s, STS URL %s", e.fake.Host, e.fake.STSURL)
	}
	// Not in the test's own namespace.
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(e.fake.Port), time.Second); err == nil {
		conn.Close()
		t.Fatalf("port %d answers in the test's own network namespace", e.fake.Port)
	}

	// A client whose sockets are made in the namespace, verifying the
	// certificate against CAFile.
	inNS := httpsClient(t, e.fake.CAFile)
	inNS.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := nodeNS.Do(func(ns.NetNS) error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	e.http = inNS
	form := url.Values{
		"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"audience":             {audience},
		"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"subject_token_type":   {"urn:ietf:params:oauth:token-type:jwt"},
		"subject_token":        {e.subject(t, nil)},
		"scope":                {cloudPlatform},
	}.Encode()
	for _, host := range []string{"127.0.0.1", "10.123.0.1", "10.123.1.1"} {
		base := "https://" + net.JoinHostPort(host, strconv.Itoa(e.fake.Port))
		if code, errCode := e.post(t, base+"/sts/v1/token", "application/x-www-form-urlencoded", form, ""); code != http.StatusOK {
			t.Fatalf("STS at %s: %d %s", host, code, errCode)
		}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+bucketPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		if code, _ := e.do(t, req); code != http.StatusUnauthorized {
			t.Fatalf("API at %s without a token: %d", host, code)
		}
	}
	if c := e.fake.Calls(); c.STS != 3 || c.API != 3 {
		t.Fatalf("calls %+v", c)
	}
}
