package integration

// The attack suite of docs/SECURITY.md: one test per attack. The attacker
// is arbitrary code in pod A with NET_RAW and NET_ADMIN inside its own
// netns; the test acts for it there, with real veths, real iptables and the
// real binaries. Each test names the attack it proves metabind stops.

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const emailPath = "/computeMetadata/v1/instance/service-accounts/default/email"

// twoPods is a node with the cloud's metadata server behind it, the
// responder, and two bound pods with different identities: a (the
// attacker, payments/api-1) and b (the victim, web/site-1).
func twoPods(t *testing.T, c chain) (n *node, a, b *pod) {
	n = newNode(t, c)
	n.startNodeMetadataServer(t)
	n.startResponder(t, responderConfig)
	return n, n.addPod(t, "payments", "api-1"), n.addPod(t, "web", "site-1")
}

// mustGetNothing fails when a request is answered with anything at all.
func mustGetNothing(t *testing.T, what string, c *http.Client, url string) {
	t.Helper()
	if code, body, err := get(c, url); err == nil {
		t.Errorf("%s: answered %d %q, want no answer", what, code, body)
	}
}

// Attack: pod A puts an address on its own interface (an unbound one, or
// pod B's) and calls the metadata address and the responder from it.
func TestAttackSourceIPSpoofing(t *testing.T) {
	for _, c := range []chain{{name: "ptp", subnet: "10.197.11.0/24"}, {name: "bridge", subnet: "10.197.12.0/24"}} {
		t.Run(c.name, func(t *testing.T) {
			_, a, b := twoPods(t, c)
			unbound := netip.MustParseAddr(strings.TrimSuffix(c.subnet, "0/24") + "200")
			for _, src := range []netip.Addr{unbound, b.ip} {
				addAddress(t, a.ns, src)
				client := nsHTTPClient(a.ns, &src)
				mustGetNothing(t, "metadata address from "+src.String(), client, "http://"+metadataIP+emailPath)
				mustGetNothing(t, "responder address from "+src.String(), client, "http://"+responderAddr+emailPath)
			}
		})
	}
}

// Attack (CVE-2021-1677 class): on a shared bridge, pod A with NET_RAW
// poisons the node's ARP entry for pod B's IP with gratuitous ARP replies,
// so the node's answers to B's address reach A, then calls from B's
// address. Without the per-packet source check A would complete the
// handshake with the responder as B.
func TestAttackARPSpoofOnBridge(t *testing.T) {
	n, a, b := twoPods(t, chain{name: "bridge", subnet: "10.197.13.0/24"})
	// B talks to the node so the node holds a neighbour entry for it.
	if code, body, err := b.metadataGet(emailPath); err != nil || body != identityOf["web"].email {
		t.Fatalf("victim's own request: %d %q %v", code, body, err)
	}
	addAddress(t, a.ns, b.ip)
	aMAC := poisonNeighbour(t, n, a, b.ip)

	client := nsHTTPClient(a.ns, &b.ip)
	mustGetNothing(t, "metadata address from B's address with the node's ARP poisoned", client, "http://"+metadataIP+emailPath)
	mustGetNothing(t, "responder from B's address with the node's ARP poisoned", client, "http://"+responderAddr+emailPath)
	if mac := neighbourMAC(t, n, b.ip); mac != aMAC {
		t.Fatalf("the node's entry for %s went back to %s during the attack: the test did not test the poisoned case", b.ip, mac)
	}
}

// poisonNeighbour sends gratuitous ARP replies from a's eth0 claiming ip
// until the node's neighbour entry for ip names a's MAC, and returns it.
func poisonNeighbour(t *testing.T, n *node, a *pod, ip netip.Addr) string {
	t.Helper()
	var mac net.HardwareAddr
	var ifindex int
	if err := a.ns.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		mac, ifindex = link.Attrs().HardwareAddr, link.Attrs().Index
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for neighbourMAC(t, n, ip) != mac.String() {
		if time.Now().After(deadline) {
			t.Fatalf("the node never took %s for %s: gratuitous ARP had no effect", mac, ip)
		}
		if err := a.ns.Do(func(ns.NetNS) error { return sendGratuitousARP(ifindex, mac, ip) }); err != nil {
			t.Fatalf("send ARP from the attacker: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // the kernel ignores updates within its 1 s locktime
	}
	return mac.String()
}

// sendGratuitousARP broadcasts "ip is at mac" as an ARP reply, as a pod
// with NET_RAW can.
func sendGratuitousARP(ifindex int, mac net.HardwareAddr, ip netip.Addr) error {
	const ethPARP = 0x0806
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(ethPARP)))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ip4 := ip.As4()
	frame := make([]byte, 0, 42)
	frame = append(frame, bcast...)
	frame = append(frame, mac...)
	frame = append(frame, 0x08, 0x06)                // ethertype ARP
	frame = append(frame, 0, 1, 0x08, 0, 6, 4, 0, 2) // Ethernet, IPv4, reply
	frame = append(frame, mac...)
	frame = append(frame, ip4[:]...)
	frame = append(frame, bcast...)
	frame = append(frame, ip4[:]...)
	to := &unix.SockaddrLinklayer{Protocol: htons(ethPARP), Ifindex: ifindex, Halen: 6}
	copy(to.Addr[:], bcast)
	return unix.Sendto(fd, frame, 0, to)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// neighbourMAC is the node's neighbour entry for ip ("" if none).
func neighbourMAC(t *testing.T, n *node, ip netip.Addr) string {
	t.Helper()
	var mac string
	if err := n.ns.Do(func(ns.NetNS) error {
		neighs, err := netlink.NeighList(0, netlink.FAMILY_V4)
		for _, nb := range neighs {
			if nb.IP.Equal(ip.AsSlice()) && len(nb.HardwareAddr) > 0 {
				mac = nb.HardwareAddr.String()
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// Attack: pod A connects straight to the responder's address, skipping the
// redirect. It gets its own identity, as through the metadata address, and
// nothing else.
func TestAttackBypassRedirect(t *testing.T) {
	_, a, _ := twoPods(t, chain{name: "ptp", subnet: "10.197.14.0/24"})
	code, body, err := get(nsHTTPClient(a.ns, nil), "http://"+responderAddr+emailPath)
	if err == nil && (code != 200 || body != identityOf["payments"].email) {
		t.Errorf("direct call answered %d %q; want A's own identity or no answer", code, body)
	}
	code, body, err = get(nsHTTPClient(a.ns, nil), "http://"+responderAddr+"/computeMetadata/v1/instance/service-accounts/"+identityOf["web"].email+"/email")
	if err == nil && code != 404 {
		t.Errorf("direct call for B's account answered %d %q", code, body)
	}
}

// Attack: a pod with no binding (created before metabind was installed,
// or whose ADD failed) calls the metadata address, behind which the node
// reaches the cloud's real metadata server. The node itself still can.
func TestAttackUnboundPod(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.15.0/24"})
	n.startNodeMetadataServer(t)
	n.startResponder(t, responderConfig)
	n.addPod(t, "web", "site-1") // metabind's rules are in place
	unbound := n.addUnboundPod(t, "payments", "api-legacy")
	mustGetNothing(t, "unbound pod to the metadata address", nsHTTPClient(unbound.ns, nil), "http://"+metadataIP+"/")
	mustGetNothing(t, "unbound pod to the responder", nsHTTPClient(unbound.ns, nil), "http://"+responderAddr+"/")
	if code, body, err := get(n.httpClient(), "http://"+metadataIP+"/"); err != nil || body != nodeMetadataBody {
		t.Errorf("the node's own request to its metadata server: %d %q %v", code, body, err)
	}
}

// Attack: pods call while the responder is not running yet, or after it
// died. Their calls fail closed: they never reach the node's metadata
// server instead.
func TestAttackResponderDown(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.16.0/24"})
	n.startNodeMetadataServer(t)
	a := n.addPod(t, "payments", "api-1")
	mustGetNothing(t, "before the responder starts", nsHTTPClient(a.ns, nil), "http://"+metadataIP+emailPath)

	responder := n.startResponder(t, responderConfig)
	if code, body, err := a.metadataGet(emailPath); err != nil || body != identityOf["payments"].email {
		t.Fatalf("with the responder up: %d %q %v", code, body, err)
	}
	responder.Process.Kill()
	responder.Wait()
	mustGetNothing(t, "after the responder died", nsHTTPClient(a.ns, nil), "http://"+metadataIP+emailPath)
}

// Attack: requests a pod cannot be allowed to smuggle through, sent from
// a bound pod through the metadata address. None reaches another account,
// none causes a server error.
func TestAttackHTTP(t *testing.T) {
	_, a, _ := twoPods(t, chain{name: "ptp", subnet: "10.197.17.0/24"})
	client := nsHTTPClient(a.ns, nil)
	base := "http://" + metadataIP
	for _, tc := range []struct {
		name    string
		path    string // sent as is, not cleaned
		header  [2]string
		noFlav  bool
		allowed []int
	}{
		{name: "X-Forwarded-For", path: emailPath, header: [2]string{"X-Forwarded-For", "10.0.0.1"}, allowed: []int{403}},
		{name: "Forwarded", path: emailPath, header: [2]string{"Forwarded", "for=10.0.0.1"}, allowed: []int{403}},
		{name: "no Metadata-Flavor", path: emailPath, noFlav: true, allowed: []int{403}},
		{name: "another pod's account", path: "/computeMetadata/v1/instance/service-accounts/" + identityOf["web"].email + "/token", allowed: []int{404}},
		{name: "ID token without audience", path: "/computeMetadata/v1/instance/service-accounts/default/identity", allowed: []int{400}},
		{name: "dot-dot", path: "/computeMetadata/v1/instance/service-accounts/default/../../../project/project-id", allowed: []int{400, 404}},
		{name: "encoded dot-dot", path: "/computeMetadata/v1/instance/service-accounts/%2e%2e/default/token", allowed: []int{400, 404}},
		{name: "encoded slash", path: "/computeMetadata/v1/instance/service-accounts/default%2ftoken", allowed: []int{400, 404}},
		{name: "backslash", path: `/computeMetadata/v1/instance/service-accounts\default\token`, allowed: []int{400, 404}},
		{name: "double slash", path: "/computeMetadata/v1//instance/service-accounts/default/token", allowed: []int{400, 404}},
		{name: "trailing dot", path: "/computeMetadata/v1/instance/service-accounts/default/token.", allowed: []int{400, 404}},
		{name: "very long path", path: "/computeMetadata/v1/" + strings.Repeat("a/", 4000), allowed: []int{400, 404, 414, 431}},
	} {
		req, err := http.NewRequest(http.MethodGet, base+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = tc.path // bypass the client's own path handling
		if !tc.noFlav {
			req.Header.Set("Metadata-Flavor", "Google")
		}
		if tc.header[0] != "" {
			req.Header.Set(tc.header[0], tc.header[1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		resp.Body.Close()
		ok := false
		for _, c := range tc.allowed {
			ok = ok || resp.StatusCode == c
		}
		if !ok || resp.Header.Get("Metadata-Flavor") != "Google" {
			t.Errorf("%s: %d (Metadata-Flavor %q), want one of %v", tc.name, resp.StatusCode, resp.Header.Get("Metadata-Flavor"), tc.allowed)
		}
	}
}

// Attack: one pod floods the responder. Past its burst it gets 429 with
// Retry-After, and another pod is still served.
func TestAttackFlood(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.20.0/24"})
	n.startResponder(t, responderConfig+"limits: {requestsPerSecond: 1, burst: 5}\n")
	a, b := n.addPod(t, "payments", "api-1"), n.addPod(t, "web", "site-1")
	limited := false
	for i := 0; i < 20 && !limited; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+metadataIP+emailPath, nil)
		req.Header.Set("Metadata-Flavor", "Google")
		resp, err := nsHTTPClient(a.ns, nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		limited = resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != ""
	}
	if !limited {
		t.Fatal("20 requests in a row with a burst of 5 were never answered 429 with Retry-After")
	}
	if code, body, err := b.metadataGet(emailPath); err != nil || body != identityOf["web"].email {
		t.Fatalf("the other pod while the first is limited: %d %q %v", code, body, err)
	}
}
