package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/reconcile"
	"github.com/metabind/metabind/redirect"
)

var (
	metadataAddrPort  = netip.MustParseAddrPort(metadataIP + ":80")
	responderAddrPort = netip.MustParseAddrPort(responderAddr)
)

// Whatever removes a metabind chain, jump or rule (a firewall reload, a
// flush, a deleted chain), or another agent's rule put above metabind's
// jumps, the running responder's repair loop puts everything back within
// 10 s with no pod event: the bound pod is answered again, the unbound pod
// is turned away again, and the rules are exactly the bindings'.
func TestFirewallDamageIsRepairedWithoutPodEvents(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.52.0/24"})
	n.startNodeMetadataServer(t)
	n.startResponder(t, responderConfig)
	bound := n.addPod(t, "payments", "api-1")
	unbound := n.addUnboundPod(t, "payments", "api-unbound")

	ipt := func(args ...string) func(*testing.T) {
		return func(t *testing.T) { n.run(t, "iptables", args...) }
	}
	nft := func(args ...string) func(*testing.T) {
		return func(t *testing.T) { n.run(t, "nft", args...) }
	}
	steps := func(s ...func(*testing.T)) func(*testing.T) {
		return func(t *testing.T) {
			for _, f := range s {
				f(t)
			}
		}
	}
	damages := []struct {
		name   string
		damage func(*testing.T)
	}{
		{"iptables -F INPUT", ipt("-F", "INPUT")},
		{"iptables -F FORWARD", ipt("-F", "FORWARD")},
		{"iptables -t nat -F PREROUTING", ipt("-t", "nat", "-F", "PREROUTING")},
		{"iptables -F (the whole filter table)", ipt("-F")},
		{"iptables -t nat -F (the whole nat table)", ipt("-t", "nat", "-F")},
		{"iptables -F; iptables -X (every chain gone)", steps(ipt("-F"), ipt("-X"))},
		{"METABIND-DNAT deleted", steps(ipt("-t", "nat", "-F", "PREROUTING"), ipt("-t", "nat", "-F", "METABIND-DNAT"), ipt("-t", "nat", "-X", "METABIND-DNAT"))},
		{"METABIND-SOURCE deleted", steps(ipt("-F", "INPUT"), ipt("-F", "METABIND-SOURCE"), ipt("-X", "METABIND-SOURCE"))},
		{"METABIND-BLOCK emptied", ipt("-F", "METABIND-BLOCK")},
		{"another agent accepts pod traffic first", steps(
			ipt("-I", "INPUT", "1", "-i", "veth+", "-j", "ACCEPT"),
			ipt("-I", "FORWARD", "1", "-i", "veth+", "-j", "ACCEPT"),
			ipt("-t", "nat", "-I", "PREROUTING", "1", "-i", "veth+", "-j", "ACCEPT"))},
	}
	if n.backend == redirect.BackendNFTables {
		// The same damage to the nftables backend's objects. No "another
		// agent" case: an accept in another table does not override
		// metabind's drop (every base chain on a hook sees the packet).
		tbl := redirect.NFTTable
		damages = []struct {
			name   string
			damage func(*testing.T)
		}{
			{"nft flush chain input", nft("flush", "chain", "ip", tbl, "input")},
			{"nft flush chain forward", nft("flush", "chain", "ip", tbl, "forward")},
			{"nft flush chain prerouting", nft("flush", "chain", "ip", tbl, "prerouting")},
			{"nft flush table (every chain emptied)", nft("flush", "table", "ip", tbl)},
			{"nft flush map pod_dnat (per-pod elements gone)", nft("flush", "map", "ip", tbl, "pod_dnat")},
			{"nft flush set pod_src (per-pod elements gone)", nft("flush", "set", "ip", tbl, "pod_src")},
			{"nft delete table bridge metabind4", nft("delete", "table", "bridge", "metabind4")},
			{"nft delete table ip metabind (everything gone)", nft("delete", "table", "ip", tbl)},
			{"nft flush ruleset", nft("flush", "ruleset")},
		}
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			n.expectProtected(t, bound, unbound, "before")
			d.damage(t)
			start := time.Now()
			deadline := start.Add(10 * time.Second)
			for {
				problems := n.protectionProblems(t, bound, unbound)
				if len(problems) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not repaired 10 s after %q: %v\n%s", d.name, problems, n.baseListing(t))
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("%s: whole again after %v", d.name, time.Since(start).Round(10*time.Millisecond))
			// The competing rules stay (they are another agent's), below
			// metabind's.
			if strings.Contains(d.name, "another agent") && !strings.Contains(n.run(t, "iptables", "-S", "INPUT"), "-i veth+ -j ACCEPT") {
				t.Fatal("the repair removed another agent's rule")
			}
		})
	}
	if log := n.responderLog(); !strings.Contains(log, "repaired the base") {
		t.Fatalf("the responder did not log its repairs:\n%s", log)
	}
}

// An ADD that meets a damaged base repairs it, whatever part is gone,
// with no responder running: the batch that proves the base every 10 s
// fails, and the ADD then audits every piece (not just two) and puts back
// what is missing.
func TestAddRepairsADamagedBase(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.56.0/24"})
	n.addPod(t, "payments", "api-1")
	tool, damages := "iptables", [][]string{
		{"-F", "INPUT"},
		{"-F", "FORWARD"},
		{"-I", "INPUT", "1", "-i", "veth+", "-j", "ACCEPT"},
	}
	if n.backend == redirect.BackendNFTables {
		tool, damages = "nft", [][]string{
			{"flush", "chain", "ip", redirect.NFTTable, "input"},
			{"flush", "chain", "ip", redirect.NFTTable, "forward"},
			{"flush", "chain", "ip", redirect.NFTTable, "prerouting"},
			{"delete", "table", "bridge", "metabind4"},
		}
	}
	for i, damage := range damages {
		n.run(t, tool, damage...)
		if len(n.baseProblems(t)) == 0 {
			t.Fatalf("%s %s left the base whole", tool, strings.Join(damage, " "))
		}
		// Ten seconds on: the next ADD's batch proves the base.
		stamp := filepath.Join(n.stateDir, "base4.verified")
		old := time.Now().Add(-11 * time.Second)
		if err := os.WriteFile(stamp, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(stamp, old, old); err != nil {
			t.Fatal(err)
		}
		n.addPod(t, "payments", fmt.Sprintf("api-%d", i+2))
		if problems := n.baseProblems(t); len(problems) > 0 {
			t.Fatalf("after %s %s and an ADD: %v", tool, strings.Join(damage, " "), problems)
		}
	}
	if !strings.Contains(n.pluginLog(), "baseInstalled") {
		t.Fatalf("the ADDs did not log their repairs:\n%s", n.pluginLog())
	}
}

// baseListing is the node's base as its backend's CLI lists it, for
// failure messages: iptables' INPUT, or the nftables ruleset.
func (n *node) baseListing(t *testing.T) string {
	t.Helper()
	if n.backend == redirect.BackendNFTables {
		return n.run(t, "nft", "list", "ruleset")
	}
	return "INPUT:\n" + n.run(t, "iptables", "-S", "INPUT")
}

// expectProtected fails unless the node protects as it should.
func (n *node) expectProtected(t *testing.T, bound, unbound *pod, when string) {
	t.Helper()
	if problems := n.protectionProblems(t, bound, unbound); len(problems) > 0 {
		t.Fatalf("%s: %v", when, problems)
	}
}

// protectionProblems is what is wrong with the node as a pod and an admin
// see it: the bound pod gets its own token, the unbound pod neither the
// responder nor the node's metadata server, and the rules are the
// bindings' with the base whole.
func (n *node) protectionProblems(t *testing.T, bound, unbound *pod) []string {
	var problems []string
	if uid, why := tokenPodUID(bound); uid != bound.uid {
		problems = append(problems, fmt.Sprintf("bound pod: token for %q (%s)", uid, why))
	}
	if code, body, err := unbound.metadataGet("/computeMetadata/v1/project/project-id"); err == nil {
		problems = append(problems, fmt.Sprintf("unbound pod was answered %d %q", code, body))
	}
	problems = append(problems, n.inconsistencies(t)...)
	problems = append(problems, n.baseProblems(t)...)
	return problems
}

// The responder refuses to listen where a pod could reach it without the
// per-veth source check: an unspecified address, or once the plugin has
// recorded its responder address, any other non-loopback address.
func TestResponderRefusesUncoveredListenAddresses(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.60.0/24"})
	n.addPod(t, "payments", "api-1") // records the responder address
	cfg := filepath.Join(n.dir, "refused.yaml")
	if err := os.WriteFile(cfg, []byte(responderConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	for addr, why := range map[string]string{
		"0.0.0.0:988":         "bypasses the per-veth source check",
		"10.197.60.1:988":     "covers only the responder addresses it recorded",
		"169.254.169.253:988": "covers only the responder addresses it recorded",
	} {
		// A refused address exits at once; one that is served runs until
		// the test's bound kills it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cmd := exec.CommandContext(ctx, "nsenter", "--net="+n.ns.Path(), "--", filepath.Join(binDir, "metabind-responder"),
			"--state-dir", n.stateDir, "--listen", addr, "--config", cfg)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), why) {
			t.Errorf("--listen %s: %v\n%s\nwant a refusal saying %q", addr, err, out, why)
		}
	}
}

// On a whole node (dual stack, and a bridge, whose rules match the port with
// physdev) the repair loop finds nothing to do tick after tick: its audit
// reads every rule as metabind wrote it, in both families, so it never
// repairs what is not broken.
func TestRepairLoopLeavesAWholeNodeAlone(t *testing.T) {
	for _, c := range []chain{
		{name: "ptp", subnet: "10.197.64.0/24", subnet6: "fd00:197:64::/64"},
		{name: "bridge", subnet: "10.197.65.0/24"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, c)
			n.addPod(t, "payments", "api-1")
			n.addPod(t, "web", "site-1")
			n.startResponder(t, responderConfig)
			// Two ticks of the loop after its first look.
			time.Sleep(2*reconcile.RepairInterval + time.Second)
			log := n.responderLog()
			for _, repair := range []string{"repaired the base", "restored a pod's rules", "removed a rule no binding owns", "repair loop:"} {
				if strings.Contains(log, repair) {
					t.Fatalf("the repair loop acted on a whole node (%q):\n%s", repair, log)
				}
			}
		})
	}
}
