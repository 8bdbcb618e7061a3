package integration

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/metabind/metabind/plugin"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

var ruleLine = regexp.MustCompile(`-s (\S+)/32 .*--comment "?metabind:([^/" ]+)/([^" ]+)"?`)

// inconsistencies compares the binding store with the per-pod rules on the
// node: every binding has exactly its DNAT and its source-check rule, every
// per-pod rule has its binding, and the store opens for writing.
func (n *node) inconsistencies(t *testing.T) []string {
	t.Helper()
	var bad []string
	st, err := store.Open(n.stateDir, 2*time.Second)
	if err != nil {
		return []string{"store does not open for writing: " + err.Error()}
	}
	st.Close()
	bindings, err := store.ReadAll(n.stateDir, 2*time.Second)
	if err != nil {
		return []string{"store does not read: " + err.Error()}
	}
	count := map[string][2]int{} // containerID/ifname/ip -> rules in [nat, source]
	if n.backend == redirect.BackendIPTables {
		for i, listing := range []string{n.listChain("nat", "METABIND-DNAT"), n.listChain("filter", "METABIND-SOURCE")} {
			for _, m := range ruleLine.FindAllStringSubmatch(listing, -1) {
				k := m[2] + "/" + m[3] + "/" + m[1]
				c := count[k]
				c[i]++
				count[k] = c
			}
		}
	} else {
		// A piece is one element per set; a bridged pod's source check is
		// two (its address, its port), counted once.
		perSet := map[string]int{}
		for _, o := range n.owned(t) {
			k := o.ContainerID + "/" + o.IfName + "/" + o.IP.String()
			i := map[bool]int{true: 0, false: 1}[o.Chain == redirect.NATChain]
			perSet[k+" "+o.Spec[1]]++
			c := count[k]
			c[i] = max(c[i], perSet[k+" "+o.Spec[1]])
			count[k] = c
		}
	}
	for _, b := range bindings {
		k := b.ContainerID + "/" + b.IfName + "/" + b.IP.String()
		if c := count[k]; c != [2]int{1, 1} {
			bad = append(bad, fmt.Sprintf("binding %s has %d DNAT and %d source rules, want 1 and 1", k, c[0], c[1]))
		}
		delete(count, k)
	}
	for k, c := range count {
		bad = append(bad, fmt.Sprintf("rules with no binding: %s (DNAT %d, source %d)", k, c[0], c[1]))
	}
	return bad
}

// backendIn is the node's IPv4 redirect backend, to be used inside n.ns.
func (n *node) backendIn(t *testing.T) redirect.Backend {
	t.Helper()
	mk, err := redirect.MakerFor(n.backend)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := mk(metadataAddrPort, responderAddrPort)
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

// natOwned lists the node's per-pod DNAT pieces (IPv4) as the backend
// finds them: METABIND-DNAT's rules, or the pod_dnat maps' elements.
func (n *node) natOwned(t *testing.T) []redirect.Owned {
	t.Helper()
	var out []redirect.Owned
	for _, o := range n.owned(t) {
		if o.Chain == redirect.NATChain {
			out = append(out, o)
		}
	}
	return out
}

// natOwnedBy counts the DNAT pieces of containerID.
func (n *node) natOwnedBy(t *testing.T, containerID string) int {
	t.Helper()
	c := 0
	for _, o := range n.natOwned(t) {
		if o.ContainerID == containerID {
			c++
		}
	}
	return c
}

// baseProblems is what the node's IPv4 backend finds wrong with its base
// of the metadata address and extra (reads only; none: the base is whole).
func (n *node) baseProblems(t *testing.T, extra ...netip.AddrPort) []string {
	t.Helper()
	mk, err := redirect.MakerFor(n.backend)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := mk(metadataAddrPort, responderAddrPort, extra...)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if err := n.ns.Do(func(ns.NetNS) error {
		out, err = rd.AuditBase()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// owned6 lists the node's per-pod rules of IPv6 (metadataAddress6) as the
// backend finds them.
func (n *node) owned6(t *testing.T) []redirect.Owned {
	t.Helper()
	mk, err := redirect.MakerFor(n.backend)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := mk(netip.MustParseAddrPort(metadataAddr6), netip.MustParseAddrPort(responderAddr6))
	if err != nil {
		t.Fatal(err)
	}
	var out []redirect.Owned
	if err := n.ns.Do(func(ns.NetNS) error {
		out, err = rd.ListOwned()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// flushInputHook removes, behind metabind's back, the jump of the INPUT
// hook to metabind's source check (iptables -F INPUT, or the rules of the
// nftables table's input chain), and returns how /readyz reports it.
func (n *node) flushInputHook(t *testing.T) string {
	t.Helper()
	if n.backend == redirect.BackendNFTables {
		n.run(t, "nft", "flush", "chain", "ip", redirect.NFTTable, "input")
		return "[-]rules failed: nftables chain input in table " + redirect.NFTTable + " lacks metabind's rule"
	}
	n.run(t, "iptables", "-F", "INPUT")
	return "[-]rules failed: filter INPUT lacks metabind's rule"
}

// flushDNATHook removes, behind metabind's back, the hook that sends the
// metadata traffic to the per-pod DNAT: iptables' nat PREROUTING jumps, or
// the rules of the nftables table's prerouting chain.
func (n *node) flushDNATHook(t *testing.T) {
	t.Helper()
	if n.backend == redirect.BackendNFTables {
		n.run(t, "nft", "flush", "chain", "ip", redirect.NFTTable, "prerouting")
		return
	}
	n.run(t, "iptables", "-t", "nat", "-F", "PREROUTING")
}

// owned lists the node's per-pod rules (IPv4) as the backend finds them.
func (n *node) owned(t *testing.T) []redirect.Owned {
	t.Helper()
	var out []redirect.Owned
	if err := n.ns.Do(func(ns.NetNS) error {
		var err error
		out, err = n.backendIn(t).ListOwned()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// deleteRulesOf deletes a container's per-pod rules behind metabind's
// back.
func (n *node) deleteRulesOf(t *testing.T, containerID string) {
	t.Helper()
	for _, o := range n.owned(t) {
		if o.ContainerID != containerID {
			continue
		}
		if err := n.ns.Do(func(ns.NetNS) error { return n.backendIn(t).Delete(o) }); err != nil {
			t.Fatal(err)
		}
	}
}

// listChain is `iptables -S CHAIN`, empty when the chain does not exist
// (yet): iptables-nft calls a chain in a missing table "incompatible".
func (n *node) listChain(table, chain string) string {
	out, err := exec.Command("nsenter", "--net="+n.ns.Path(), "--", "iptables", "-t", table, "-S", chain).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

func (n *node) gc(valid string) error {
	return n.invokeMetabind("GC", "", "", "", `"cni.dev/valid-attachments": `+valid)
}

// Crash consistency: the plugin is killed (SIGKILL) at every step of ADD and
// DEL, then the runtime's retry, its DEL, or a GC runs. Every path ends with
// the store opening cleanly and no binding without its rules or rule
// without its binding.
func TestCrashAtEveryStep(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.21.0/24"})
	p := n.addUnboundPod(t, "crash", "holder")
	prev := mustJSON(t, p.result)
	const args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=payments;K8S_POD_NAME=api-1;K8S_POD_UID=uid-crash"
	recoveries := map[string]func(cid string) error{
		"retried ADD, then DEL": func(cid string) error {
			if err := n.metabindOnly("ADD", cid, p, args, prev); err != nil {
				return err
			}
			if b, err := store.ReadAll(n.stateDir, time.Second); err != nil || len(b) != 1 {
				return fmt.Errorf("after the retried ADD the store holds %v (%v), want the binding", b, err)
			}
			if bad := n.inconsistencies(t); len(bad) > 0 {
				return fmt.Errorf("after the retried ADD: %v", bad)
			}
			return n.metabindOnly("DEL", cid, p, args, prev)
		},
		"retried DEL": func(cid string) error { return n.metabindOnly("DEL", cid, p, args, prev) },
		"GC":          func(string) error { return n.gc(`[]`) },
	}
	runs, found := 0, 0
	for _, step := range plugin.CrashSteps {
		for name, recover := range recoveries {
			if strings.HasPrefix(step, "del:") && strings.HasPrefix(name, "retried ADD") {
				continue // a pod whose DEL died is not ADDed again under the same ID
			}
			cid := randomID()
			if strings.HasPrefix(step, "del:") {
				if err := n.metabindOnly("ADD", cid, p, args, prev); err != nil {
					t.Fatal(err)
				}
			}
			verb := strings.ToUpper(strings.SplitN(step, ":", 2)[0])
			err := n.metabindCrashingAt(t, step, verb, cid, p, args, prev)
			if err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("%s: the plugin was not killed at the checkpoint: %v", step, err)
			}
			if err := recover(cid); err != nil {
				t.Errorf("%s, then %s: %v", step, name, err)
			}
			runs++
			if bad := n.inconsistencies(t); len(bad) > 0 {
				found += len(bad)
				t.Errorf("killed at %s, then %s: %v", step, name, bad)
			}
		}
	}
	t.Logf("crash consistency: %d kill-and-recover runs over %d checkpoints, %d inconsistencies", runs, len(plugin.CrashSteps), found)
}

// GC removes the bindings and rules of attachments the runtime no longer
// lists, rules with no binding, and restores lost rules of old bindings; a
// GC without a list collects nothing; the pre-1.2.3 key is understood.
func TestGC(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.22.0/24"})
	a, b := n.addPod(t, "payments", "api-1"), n.addPod(t, "web", "site-1")
	holder := n.addUnboundPod(t, "stale", "holder")
	staleID := randomID()
	if err := n.metabindOnly("ADD", staleID, holder, "K8S_POD_NAMESPACE=stale;K8S_POD_NAME=gone", mustJSON(t, holder.result)); err != nil {
		t.Fatal(err)
	}
	// b's binding lost (its rules stay behind); a's rules lost, its binding
	// an hour old.
	st, err := store.Open(n.stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(func(tx *store.Tx) error {
		ab, _, err := tx.Get(a.ip)
		if err != nil {
			return err
		}
		ab.Created = ab.Created.Add(-time.Hour)
		if err := tx.Put(ab); err != nil {
			return err
		}
		// GC leaves bindings younger than its grace alone.
		stale, _, err := tx.Get(holder.ip)
		if err != nil {
			return err
		}
		stale.Created = stale.Created.Add(-time.Minute)
		if err := tx.Put(stale); err != nil {
			return err
		}
		return tx.Delete(b.ip)
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	n.deleteRulesOf(t, a.rt.ContainerID)
	if len(n.inconsistencies(t)) != 2 {
		t.Fatalf("set-up: %v, want two inconsistencies", n.inconsistencies(t))
	}

	if err := n.invokeMetabind("GC", "", "", "", ""); err != nil {
		t.Fatalf("GC without a list: %v", err)
	}
	if len(n.inconsistencies(t)) != 2 {
		t.Fatal("a GC without a list changed something")
	}
	valid := []types.GCAttachment{{ContainerID: a.rt.ContainerID, IfName: "eth0"}, {ContainerID: b.rt.ContainerID, IfName: "eth0"}}
	err = n.ns.Do(func(ns.NetNS) error {
		return n.cni.GCNetworkList(context.Background(), n.list, &libcni.GCArgs{ValidAttachments: valid})
	})
	if err != nil {
		t.Fatalf("GC through libcni: %v", err)
	}
	if bad := n.inconsistencies(t); len(bad) > 0 {
		t.Fatalf("after GC: %v", bad)
	}
	all, _ := store.ReadAll(n.stateDir, time.Second)
	if len(all) != 1 || all[0].IP != a.ip {
		t.Fatalf("after GC the store holds %+v, want only a's binding", all)
	}
	// The pre-1.2.3 key: nothing is valid, so a goes too.
	if err := n.invokeMetabind("GC", "", "", "", `"cni.dev/attachments": []`); err != nil {
		t.Fatal(err)
	}
	if all, _ := store.ReadAll(n.stateDir, time.Second); len(all) != 0 || len(n.inconsistencies(t)) != 0 {
		t.Fatalf("GC with cni.dev/attachments left %+v", all)
	}
}

func TestStatus(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.23.0/24"})
	if err := n.ns.Do(func(ns.NetNS) error { return n.cni.GetStatusNetworkList(context.Background(), n.list) }); err != nil {
		t.Fatalf("STATUS on a working node: %v", err)
	}
	file := filepath.Join(n.dir, "not-a-dir")
	os.WriteFile(file, nil, 0o600)
	n.stateDir = file
	err := n.invokeMetabind("STATUS", "", "", "", "")
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrPluginNotAvailable || !strings.Contains(cniErr.Msg, "state directory") {
		t.Fatalf("STATUS with an unusable state dir = %v, want code 50 naming the state directory", err)
	}
}

// 32 runtimes' worth of parallel ADDs and DELs for 500 pods through libcni:
// afterwards the bindings are exactly the live pods and no rule is left
// over.
func TestConcurrentAddDel(t *testing.T) {
	const pods, workers = 500, 32
	n := newNode(t, chain{name: "ptp", subnet: "10.197.32.0/22"})
	var (
		mu    sync.Mutex
		live  = map[string]*pod{}
		next  atomic.Int64
		wg    sync.WaitGroup
		fails atomic.Int64
	)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= pods {
					return
				}
				p, err := n.addPodWith(n.list, newPodNS(t), "load", fmt.Sprintf("pod-%d", i))
				if err != nil {
					fails.Add(1)
					t.Errorf("ADD pod-%d: %v", i, err)
					continue
				}
				if i%2 == 0 { // every other pod goes again at once
					if err := n.del(p.rt); err != nil {
						fails.Add(1)
						t.Errorf("DEL pod-%d: %v", i, err)
					}
					continue
				}
				mu.Lock()
				live[p.rt.ContainerID] = p
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all, err := store.ReadAll(n.stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wrong := 0
	for _, b := range all {
		if p, ok := live[b.ContainerID]; !ok || p.ip != b.IP {
			wrong++
			t.Errorf("binding %s -> %s is not a live pod", b.IP, b.ContainerID)
		}
	}
	if len(all) != len(live) {
		wrong += len(live) - len(all)
		t.Errorf("%d bindings for %d live pods", len(all), len(live))
	}
	bad := n.inconsistencies(t)
	for _, s := range bad {
		t.Error(s)
	}
	t.Logf("concurrency: %d pods, %d workers, %d ADD + %d DEL in %v: %d failed calls, %d wrong bindings, %d rule inconsistencies",
		pods, workers, pods, pods/2, elapsed.Round(time.Millisecond), fails.Load(), wrong, len(bad))
}

// metabindctl gc: a pod whose netns vanished without a DEL (a crashed
// runtime) is reported by --dry-run and collected by gc, rules included.
func TestMetabindctlGC(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.27.0/24"})
	gone, kept := n.addPod(t, "payments", "api-1"), n.addPod(t, "web", "site-1")
	if err := testutilsUnmount(gone); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(binDir, "metabindctl")
	dry := n.run(t, ctl, "--state-dir", n.stateDir, "gc", "--dry-run")
	if !strings.Contains(dry, "would remove binding "+gone.ip.String()) || len(n.inconsistencies(t)) != 0 {
		t.Fatalf("gc --dry-run:\n%s", dry)
	}
	if all, _ := store.ReadAll(n.stateDir, time.Second); len(all) != 2 {
		t.Fatal("gc --dry-run changed the store")
	}
	out := n.run(t, ctl, "--state-dir", n.stateDir, "gc")
	all, _ := store.ReadAll(n.stateDir, time.Second)
	if len(all) != 1 || all[0].IP != kept.ip || len(n.inconsistencies(t)) != 0 || strings.Contains(n.natRules(t), gone.rt.ContainerID) {
		t.Fatalf("after gc: %+v, %v\n%s", all, n.inconsistencies(t), out)
	}
	// With the address given (as an admin copies it from the conflist), gc
	// keeps the backend the plugin recorded for it: it neither puts the
	// other backend's base in nor takes this one's out.
	out = n.run(t, ctl, "--state-dir", n.stateDir, "gc", "--metadata-address", metadataAddrPort.String())
	if present := n.present(t); !present[n.backend] || present[redirect.Other(n.backend)] || len(n.inconsistencies(t)) != 0 {
		t.Fatalf("gc --metadata-address on a %s node: backends present %v, %v\n%s", n.backend, present, n.inconsistencies(t), out)
	}

	// Run where the pods' netns paths are not visible (inside a container
	// without the host's /var/run/netns), gc would unbind every pod: it
	// refuses, says why, and changes nothing; --force does it.
	if err := testutilsUnmount(kept); err != nil {
		t.Fatal(err)
	}
	refused, err := exec.Command("nsenter", "--net="+n.ns.Path(), "--", ctl, "--state-dir", n.stateDir, "gc").CombinedOutput()
	if err == nil || !strings.Contains(string(refused), "refusing to remove every binding at once") || !strings.Contains(string(refused), "--force") {
		t.Fatalf("gc that would remove every binding: %v\n%s", err, refused)
	}
	if all, _ := store.ReadAll(n.stateDir, time.Second); len(all) != 1 {
		t.Fatalf("the refused gc changed the store: %+v", all)
	}
	n.run(t, ctl, "--state-dir", n.stateDir, "gc", "--force")
	if all, _ := store.ReadAll(n.stateDir, time.Second); len(all) != 0 || len(n.inconsistencies(t)) != 0 {
		t.Fatalf("after gc --force: %+v, %v", all, n.inconsistencies(t))
	}
}

// testutilsUnmount makes a pod's netns vanish as a crashed runtime leaves
// it: the bind mount and file gone, no DEL.
func testutilsUnmount(p *pod) error {
	path := p.ns.Path()
	p.ns.Close()
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		return err
	}
	return os.Remove(path)
}
