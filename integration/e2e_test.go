package integration

import (
	"encoding/json"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/metabind/metabind/store"
)

const responderConfig = `
project: {id: test-project, numericId: "424242424242"}
node: {name: node-test, zone: test-zone-a}
issuer: {url: ` + issuerURL + `, tokenLifetime: 10m}
identities:
  - namespace: payments
    pod: "api-*"
    serviceAccount: api
    email: api@test-project.iam.gserviceaccount.com
  - namespace: web
    serviceAccount: frontend
    email: frontend@test-project.iam.gserviceaccount.com
`

// identityOf is what responderConfig grants a pod.
var identityOf = map[string]struct{ sa, email string }{
	"payments": {"api", "api@test-project.iam.gserviceaccount.com"},
	"web":      {"frontend", "frontend@test-project.iam.gserviceaccount.com"},
}

func TestEndToEnd(t *testing.T) {
	for _, c := range []chain{{name: "ptp", subnet: "10.197.1.0/24"}, {name: "bridge", subnet: "10.197.2.0/24"}} {
		t.Run(c.name, func(t *testing.T) { testEndToEnd(t, c) })
	}
}

func testEndToEnd(t *testing.T, c chain) {
	n := newNode(t, c)
	n.startNodeMetadataServer(t)
	n.startResponder(t, responderConfig)
	api := n.addPod(t, "payments", "api-1")
	web := n.addPod(t, "web", "site-1")
	stranger := n.addPod(t, "batch", "job-1") // no identity rule matches

	var issued []string
	for _, p := range []*pod{api, web} {
		want := identityOf[p.namespace]
		got, err := p.sdk(t)
		if err != nil {
			t.Fatal(err)
		}
		issued = append(issued, got.IDToken, got.AccessToken)
		if got.ProjectID != "test-project" || got.Email != want.email {
			t.Errorf("%s: SDK sees project %q email %q, want test-project %q", p.name, got.ProjectID, got.Email, want.email)
		}
		keys := p.jwks(t)
		id, err := verify(got.IDToken, keys, defaultAudience)
		if err != nil {
			t.Fatalf("%s: ID token does not verify against the served JWKS: %v", p.name, err)
		}
		checkClaims(t, p, id, want.sa, want.email)
		access, err := verify(got.AccessToken, keys, issuerURL)
		if err != nil {
			t.Fatalf("%s: access token does not verify: %v", p.name, err)
		}
		checkClaims(t, p, access, want.sa, want.email)
		if got.TokenType != "Bearer" || time.Until(got.Expiry) < time.Minute {
			t.Errorf("%s: token type %q, expiry %v", p.name, got.TokenType, got.Expiry)
		}
	}

	// A bound pod that no identity rule names gets 404, never a default.
	if code, body, err := stranger.metadataGet("/computeMetadata/v1/instance/service-accounts/default/email"); err != nil || code != 404 {
		t.Errorf("pod with no identity rule: %d %q %v, want 404", code, body, err)
	}

	// metabindctl shows the runtime's view of each pod.
	out := n.run(t, filepath.Join(binDir, "metabindctl"), "--state-dir", n.stateDir, "bindings", "list", "-o", "json")
	var listed []store.Binding
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 3 {
		t.Fatalf("metabindctl bindings list: %v, %d bindings\n%s", err, len(listed), out)
	}
	for _, b := range listed {
		if b.IP == api.ip && (b.Pod != "api-1" || b.PodUID != api.uid || b.ContainerID != api.rt.ContainerID ||
			b.Annotations["example.com/team"] != "payments" || b.Bridged != (c.name == "bridge")) {
			t.Errorf("api's binding: %+v", b)
		}
	}

	if err := n.check(api); err != nil {
		t.Errorf("CHECK after ADD: %v", err)
	}

	// DEL removes the binding and the rule; the other pods keep theirs.
	n.delPod(t, api)
	if n.natOwnedBy(t, api.rt.ContainerID) != 0 || n.natOwnedBy(t, web.rt.ContainerID) != 1 {
		t.Errorf("after DEL of api, the DNAT pieces are:\n%v", n.natOwned(t))
	}
	if _, err := exec.Command("nsenter", "--net="+n.ns.Path(), "--", filepath.Join(binDir, "metabindctl"),
		"--state-dir", n.stateDir, "bindings", "get", api.ip.String()).Output(); err == nil {
		t.Errorf("metabindctl still finds a binding for %s after DEL", api.ip)
	}
	// containerd's second DEL at sandbox removal: no netns, no prevResult.
	second := *api.rt
	second.NetNS = ""
	if err := n.del(&second); err != nil {
		t.Errorf("second DEL without netns: %v", err)
	}
	if got, err := web.sdk(t); err != nil || got.Email != identityOf["web"].email {
		t.Errorf("web after api's DEL: %+v %v", got, err)
	}

	// No token, nor its signature alone, ever reaches a log.
	for _, log := range []string{n.responderLog(), n.pluginLog()} {
		for _, tok := range issued {
			sig := tok[strings.LastIndex(tok, ".")+1:]
			if strings.Contains(log, sig) {
				t.Errorf("a token's signature appears in a log")
			}
		}
	}
}

func checkClaims(t *testing.T, p *pod, c *k8sClaims, sa, email string) {
	t.Helper()
	k := c.Kubernetes
	if c.Subject != "system:serviceaccount:"+p.namespace+":"+sa || c.Email != email || k.Namespace != p.namespace ||
		k.Pod.Name != p.name || k.Pod.UID != p.uid || k.ServiceAccount.Name != sa || k.Node.Name != "node-test" || c.ID == "" {
		t.Errorf("%s: claims %+v", p.name, c)
	}
}

func addAddress(t *testing.T, podNS ns.NetNS, ip netip.Addr) {
	t.Helper()
	err := podNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: netipNet(ip), Flags: unix.IFA_F_NODAD}
		return netlink.AddrAdd(link, addr)
	})
	if err != nil {
		t.Fatalf("add %s in pod: %v", ip, err)
	}
}

// addAddress6 adds an IPv6 address usable at once (no duplicate detection).
func addAddress6(t *testing.T, p *pod, ip netip.Addr) { addAddress(t, p.ns, ip) }

func netipNet(ip netip.Addr) *net.IPNet {
	return &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}
}
