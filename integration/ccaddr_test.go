package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/metabind/metabind/redirect"
)

const (
	ccIP = "169.254.170.23"
	// nodeCCBody is what a server on the node's own container credentials
	// address answers; no pod may read it.
	nodeCCBody = "NODE-CONTAINER-CREDENTIALS"
)

// With containerCredentialsAddress set, a bound pod's traffic to that
// address reaches the responder by the same per-pod rule as its metadata
// traffic; an unbound pod's, and a bound pod's with a forged source, is
// reset, though the node itself serves that address; and the repair loop
// puts back the address's PREROUTING jump after a flush.
func TestContainerCredentialsAddress(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.90.0/24"})
	n.list = withMetabindKeys(t, n.list, map[string]any{"containerCredentialsAddress": ccIP + ":80"})
	n.startNodeServerAt(t, ccIP+":80")
	n.startResponder(t, responderConfig)
	bound := n.addPod(t, "payments", "api-1")
	unbound := n.addUnboundPod(t, "payments", "api-unbound")

	// The per-pod rules are the usual two; the base gained the address's
	// jumps.
	if c := n.natOwnedBy(t, bound.rt.ContainerID); c != 1 {
		t.Fatalf("DNAT pieces of the bound pod: %d, want 1: %v", c, n.natOwned(t))
	}
	ccAddrPort := netip.MustParseAddrPort(ccIP + ":80")
	if bad := n.baseProblems(t, ccAddrPort); len(bad) != 0 {
		t.Fatalf("the base with %s: %v", ccIP, bad)
	}
	if n.backend == redirect.BackendIPTables {
		for _, c := range []struct{ table, chain string }{{"nat", "PREROUTING"}, {"filter", "FORWARD"}, {"filter", "INPUT"}} {
			if rules := n.run(t, "iptables", "-t", c.table, "-S", c.chain); !strings.Contains(rules, "-d "+ccIP+"/32") || !strings.Contains(rules, "-d "+metadataIP+"/32") {
				t.Fatalf("%s %s lacks a jump:\n%s", c.table, c.chain, rules)
			}
		}
	}

	url := "http://" + ccIP + "/v1/credentials"
	expectResponder := func(when string) {
		t.Helper()
		resp, body, err := getResp(nsHTTPClient(bound.ns, nil), url)
		if err != nil {
			t.Fatalf("%s: bound pod to %s: %v", when, url, err)
		}
		if resp.Header.Get("X-Node-Server") != "" || body == nodeCCBody ||
			(resp.Header.Get("Metadata-Flavor") == "" && resp.Header.Get("Server") == "") {
			t.Fatalf("%s: bound pod was answered %d %v %q, not by the responder", when, resp.StatusCode, resp.Header, body)
		}
	}
	expectResponder("bound pod")
	// The metadata address still works as before.
	if uid, why := tokenPodUID(bound); uid != bound.uid {
		t.Fatalf("bound pod's metadata token: %q (%s)", uid, why)
	}

	// An unbound pod is reset, not answered by the node's server.
	expectReset := func(what string, c *http.Client) {
		t.Helper()
		resp, body, err := getResp(c, url)
		if err == nil {
			t.Fatalf("%s: answered %d %q, want a reset", what, resp.StatusCode, body)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%s: %v, want a reset (connection refused)", what, err)
		}
	}
	expectReset("unbound pod", nsHTTPClient(unbound.ns, nil))

	// A bound pod with a forged source: no rule claims it, the block
	// resets it (the reset goes to the forged address, so the pod may only
	// see a timeout), and the node's server never answers.
	forged := netip.MustParseAddr("10.197.90.200")
	addAddress(t, bound.ns, forged)
	mustGetNothing(t, "forged source", nsHTTPClient(bound.ns, &forged), url)
	if n.backend == redirect.BackendIPTables {
		if counters := n.run(t, "iptables", "-v", "-S", "INPUT"); !strings.Contains(counters, ccIP) {
			t.Fatalf("INPUT:\n%s", counters)
		}
	}

	// A flushed DNAT hook (PREROUTING, or the nftables prerouting chain)
	// loses the address's jump; the responder's repair loop, from the base
	// the ADD recorded, puts it back.
	n.flushDNATHook(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		bad := n.baseProblems(t, ccAddrPort)
		if len(bad) == 0 && (n.backend != redirect.BackendIPTables || strings.Contains(n.run(t, "iptables", "-t", "nat", "-S", "PREROUTING"), "-d "+ccIP+"/32")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the jump for %s was not put back: %v\nresponder log:\n%s", ccIP, bad, n.responderLog())
		}
		time.Sleep(100 * time.Millisecond)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		resp, _, err := getResp(nsHTTPClient(bound.ns, nil), url)
		if err == nil && resp.Header.Get("X-Node-Server") == "" {
			break
		}
		if time.Now().After(deadline) {
			break // expectResponder reports what is wrong
		}
		time.Sleep(100 * time.Millisecond)
	}
	expectResponder("after the repair")
	expectReset("unbound pod after the repair", nsHTTPClient(unbound.ns, nil))
}

// withMetabindKeys is list with keys added to its metabind plugin.
func withMetabindKeys(t *testing.T, list *libcni.NetworkConfigList, keys map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	var raw map[string]any
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		t.Fatal(err)
	}
	for _, p := range raw["plugins"].([]any) {
		if m := p.(map[string]any); m["type"] == "metabind" {
			for k, v := range keys {
				m[k] = v
			}
		}
	}
	out, err := libcni.ConfListFromBytes(mustJSON(t, raw))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// startNodeServerAt serves addr on the node's loopback, as a node-local
// credentials endpoint would: what a pod must never reach.
func (n *node) startNodeServerAt(t *testing.T, addr string) {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	var ln net.Listener
	err := n.ns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(ap.Addr().String() + "/32")
		if err := netlink.AddrAdd(lo, a); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("node server at %s: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Node-Server", "yes")
		fmt.Fprint(w, nodeCCBody)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func getResp(c *http.Client, u string) (*http.Response, string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}
