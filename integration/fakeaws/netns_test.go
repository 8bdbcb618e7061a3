package fakeaws_test

import (
	"context"
	"encoding/xml"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/metabind/metabind/integration/fakeaws"
)

// TestNetNS: with NetNS the fake listens in that namespace only; on
// 0.0.0.0 its certificate names the namespace's addresses at Start and
// CertIPs, and a client in the namespace assumes a role through it and
// signs an S3 request it accepts, at each address.
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
	addAddr("10.124.0.1/32") // before Start: in the certificate by itself
	e := newEnv(t, func(o *fakeaws.Options) {
		o.NetNS = nodeNS.Path()
		o.ListenAddr = "0.0.0.0:0"
		o.CertIPs = []net.IP{net.ParseIP("10.124.1.1")}
	})
	addAddr("10.124.1.1/32") // after Start: in the certificate through CertIPs
	e.fake.Trust(roleARN, ksaSub)

	if e.fake.Host != "127.0.0.1" || e.fake.STSURL != "https://127.0.0.1:"+strconv.Itoa(e.fake.Port)+"/_sts" ||
		e.fake.S3URL != "https://127.0.0.1:"+strconv.Itoa(e.fake.Port) {
		t.Fatalf("host %s, STS URL %s, S3 URL %s", e.fake.Host, e.fake.STSURL, e.fake.S3URL)
	}
	// Not in the test's own namespace.
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(e.fake.Port), time.Second); err == nil {
		conn.Close()
		t.Fatalf("port %d answers in the test's own network namespace", e.fake.Port)
	}

	// A client whose sockets are made in the namespace, verifying the
	// certificate against CAFile.
	e.http = httpsClient(t, e.fake.CAFile)
	e.http.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := nodeNS.Do(func(ns.NetNS) error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	form := url.Values{
		"Action": {"AssumeRoleWithWebIdentity"}, "Version": {"2011-06-15"}, "RoleArn": {roleARN},
		"RoleSessionName": {session}, "WebIdentityToken": {e.token(t, nil)}, "DurationSeconds": {"3600"},
	}.Encode()
	for _, host := range []string{"127.0.0.1", "10.124.0.1", "10.124.1.1"} {
		base := "https://" + net.JoinHostPort(host, strconv.Itoa(e.fake.Port))
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/_sts", strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		status, code, body := e.do(t, req)
		if status != http.StatusOK {
			t.Fatalf("STS at %s: %d %s", host, status, code)
		}
		var resp struct {
			AccessKeyID     string `xml:"AssumeRoleWithWebIdentityResult>Credentials>AccessKeyId"`
			SecretAccessKey string `xml:"AssumeRoleWithWebIdentityResult>Credentials>SecretAccessKey"`
			SessionToken    string `xml:"AssumeRoleWithWebIdentityResult>Credentials>SessionToken"`
		}
		if err := xml.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		creds := sdkaws.Credentials{AccessKeyID: resp.AccessKeyID, SecretAccessKey: resp.SecretAccessKey, SessionToken: resp.SessionToken}
		req = e.s3Request(t, http.MethodGet, "/"+bucket+"?list-type=2", nil)
		req.URL.Host = strings.TrimPrefix(base, "https://")
		req.Host = ""
		if status, code, _ := e.do(t, sign(t, req, creds, "s3", region, e.clock.Now())); status != http.StatusOK {
			t.Fatalf("S3 at %s: %d %s", host, status, code)
		}
	}
	if c := e.fake.Calls(); c.STS != 3 || c.S3 != 3 || c.Denied != 0 {
		t.Fatalf("calls %+v", c)
	}
}
