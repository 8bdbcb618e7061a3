package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/metabind/metabind/store"
)

// An IP still bound to pod A is handed to pod B (IPAM moved on before A's
// DEL reached metabind). B's ADD is killed at each step of the takeover:
// after A's binding is released, and after B's binding is committed. At
// neither may A's requests be answered with B's identity; the retried ADD
// then leaves B bound with its rules and A with none.
func TestIPTakeoverRemovesTheOldHoldersRulesFirst(t *testing.T) {
	for i, step := range []string{"add:released", "add:committed"} {
		t.Run(step, func(t *testing.T) {
			n := newNode(t, chain{name: "ptp", subnet: fmt.Sprintf("10.197.%d.0/24", 40+i)})
			n.startNodeMetadataServer(t)
			n.startResponder(t, responderConfig)
			a := n.addPod(t, "payments", "api-old")
			if uid, why := tokenPodUID(a); uid != a.uid {
				t.Fatalf("set-up: A's token is for %q (%s), want %q", uid, why, a.uid)
			}

			// B: a real veth from the network without metabind, and a
			// prevResult that hands it A's address.
			b := n.addUnboundPod(t, "payments", "api-new")
			var res current.Result
			if err := jsonRoundTrip(b.result, &res); err != nil {
				t.Fatal(err)
			}
			res.IPs[0].Address = net.IPNet{IP: a.ip.AsSlice(), Mask: res.IPs[0].Address.Mask}
			prev := mustJSON(t, &res)
			const uidB = "uid-taker"
			args := "IgnoreUnknown=1;K8S_POD_NAMESPACE=payments;K8S_POD_NAME=api-new;K8S_POD_UID=" + uidB
			cid := randomID()

			err := n.metabindCrashingAt(t, step, "ADD", cid, b, args, prev)
			if err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("ADD with the crash hook at %s = %v, want it killed", step, err)
			}
			if uid, why := tokenPodUID(a); uid != "" {
				t.Fatalf("killed at %s: A, whose IP was being taken over, got a token for %q (B is %q)", step, uid, uidB)
			} else {
				t.Logf("A after the kill at %s: %s", step, why)
			}

			// The runtime retries; B is bound with its rules, A has none.
			if err := n.metabindOnly("ADD", cid, b, args, prev); err != nil {
				t.Fatalf("retried ADD: %v", err)
			}
			if got, ok := bindingOf(t, n, a.ip); !ok || got.PodUID != uidB || got.Released {
				t.Fatalf("after the retried ADD the store binds %s to %+v, want B", a.ip, got)
			}
			if strings.Contains(n.natRules(t), a.rt.ContainerID) {
				t.Fatalf("A's rule is still installed after B took its IP over:\n%s", n.natRules(t))
			}
			if bad := n.inconsistencies(t); len(bad) > 0 {
				t.Fatalf("after the retried ADD: %v", bad)
			}
		})
	}
}

// GC runs in a loop (as CRI-O runs it) while 32 runtimes ADD and DEL 300
// pods: it never deletes the rules of a binding that exists, nor restores
// those of a deleted one. Every pod's first request after its ADD returned
// is answered with its own identity, and afterwards every live binding has
// exactly its rules.
func TestGCDuringConcurrentAddDel(t *testing.T) {
	const pods, workers = 300, 32
	n := newNode(t, chain{name: "ptp", subnet: "10.197.44.0/22"})
	n.startNodeMetadataServer(t)
	n.startResponder(t, responderConfig+"limits: {requestsPerSecond: 10000, burst: 100000}\n")

	var (
		mu      sync.Mutex
		valid   = map[string]bool{} // attachments the runtime knows: from before ADD to after DEL
		live    = map[string]*pod{}
		next    atomic.Int64
		wg      sync.WaitGroup
		failed  []string
		gcs     atomic.Int64
		stopGC  = make(chan struct{})
		gcDone  = make(chan error, 1)
		answers atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failed = append(failed, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	go func() {
		for {
			select {
			case <-stopGC:
				gcDone <- nil
				return
			default:
			}
			mu.Lock()
			list := make([]types.GCAttachment, 0, len(valid))
			for id := range valid {
				list = append(list, types.GCAttachment{ContainerID: id, IfName: "eth0"})
			}
			mu.Unlock()
			err := n.ns.Do(func(ns.NetNS) error {
				return n.cni.GCNetworkList(context.Background(), n.list, &libcni.GCArgs{ValidAttachments: list})
			})
			if err != nil {
				gcDone <- fmt.Errorf("GC %d: %w", gcs.Load()+1, err)
				return
			}
			gcs.Add(1)
		}
	}()

	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > pods {
					return
				}
				p := &pod{namespace: "payments", name: fmt.Sprintf("api-%d", i), uid: fmt.Sprintf("uid-gc-%d", i), ns: newPodNS(t)}
				id := randomID()
				mu.Lock()
				valid[id] = true
				mu.Unlock()
				added, err := n.addPodWithID(n.list, p.ns, id, p.namespace, p.name, p.uid)
				if err != nil {
					fail("ADD %s: %v", p.name, err)
					continue
				}
				if uid, why := tokenPodUID(added); uid != added.uid {
					fail("%s's first request after its ADD returned: token for %q (%s), want %q", p.name, uid, why, added.uid)
				} else {
					answers.Add(1)
				}
				if i%2 == 0 { // every other pod goes again
					if err := n.del(added.rt); err != nil {
						fail("DEL %s: %v", p.name, err)
						continue
					}
					mu.Lock()
					delete(valid, id)
					mu.Unlock()
					continue
				}
				mu.Lock()
				live[id] = added
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stopGC)
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pods by %d workers with %d GCs running alongside in %v; %d first requests answered",
		pods, workers, gcs.Load(), time.Since(start).Round(time.Millisecond), answers.Load())
	if len(failed) > 0 {
		t.Fatalf("%d failures, the first: %s", len(failed), strings.Join(failed[:min(len(failed), 5)], "\n"))
	}
	if gcs.Load() < 3 {
		t.Fatalf("only %d GCs ran alongside the pods", gcs.Load())
	}
	// One more GC, now that nothing runs, and the node must be exact.
	if bad := n.inconsistencies(t); len(bad) > 0 {
		t.Fatalf("after the run: %v", bad)
	}
	all, err := store.ReadAll(n.stateDir, time.Second)
	if err != nil || len(all) != len(live) {
		t.Fatalf("store holds %d bindings (%v), want the %d live pods", len(all), err, len(live))
	}
	for _, b := range all {
		if live[b.ContainerID] == nil {
			t.Errorf("binding %s of container %s, which is not live", b.IP, b.ContainerID)
		}
	}
}

// Two conflists (a second network, a Multus delegate, another runtime)
// share one state dir: a GC of one network collects only its own pods'
// bindings, however short its list.
func TestGCOfOneNetworkKeepsTheOthersPods(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.48.0/24"})
	n.startResponder(t, responderConfig)
	second := chain{name: "ptp", subnet: "10.197.49.0/24"}
	other, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "second-network", "plugins": [%s,
		{"type": "metabind", "stateDir": %q, "logFile": %q, "backend": %q}]}`, second.mainPlugin(n.dir), n.stateDir, n.logFile, n.backend)))
	if err != nil {
		t.Fatal(err)
	}
	a := n.addPod(t, "payments", "api-first")
	b, err := n.addPodWith(other, newPodNS(t), "payments", "api-second")
	if err != nil {
		t.Fatalf("ADD on the second network: %v", err)
	}
	gc := func(list *libcni.NetworkConfigList, valid ...*pod) error {
		var atts []types.GCAttachment
		for _, p := range valid {
			atts = append(atts, types.GCAttachment{ContainerID: p.rt.ContainerID, IfName: p.rt.IfName})
		}
		return n.ns.Do(func(ns.NetNS) error {
			return n.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: atts})
		})
	}
	if err := gc(n.list, a); err != nil {
		t.Fatalf("GC of the first network: %v", err)
	}
	if uid, why := tokenPodUID(b); uid != b.uid {
		t.Fatalf("after the first network's GC, the second network's pod gets %q (%s), want %q", uid, why, b.uid)
	}
	n.age(t, b.ip, time.Minute) // GC leaves bindings younger than its grace alone
	if err := gc(other); err != nil {
		t.Fatalf("GC of the second network with nothing valid: %v", err)
	}
	if uid, _ := tokenPodUID(b); uid != "" {
		t.Fatalf("the second network's GC left its own stale pod answered (%q)", uid)
	}
	if uid, why := tokenPodUID(a); uid != a.uid {
		t.Fatalf("the second network's GC unbound the first network's pod: %q (%s)", uid, why)
	}
	all, _ := store.ReadAll(n.stateDir, time.Second)
	if len(all) != 1 || all[0].ContainerID != a.rt.ContainerID || all[0].Network != n.list.Name {
		t.Fatalf("store after both GCs: %+v, want only the first network's pod", all)
	}
	if bad := n.inconsistencies(t); len(bad) > 0 {
		t.Fatalf("after both GCs: %v", bad)
	}
}

func bindingOf(t *testing.T, n *node, ip interface{ String() string }) (store.Binding, bool) {
	t.Helper()
	all, err := store.ReadAll(n.stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range all {
		if b.IP.String() == ip.String() {
			return b, true
		}
	}
	return store.Binding{}, false
}

// age moves the binding of ip back in time by d, as if its ADD were older.
func (n *node) age(t *testing.T, ip interface{ String() string }, d time.Duration) {
	t.Helper()
	st, err := store.Open(n.stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.Update(func(tx *store.Tx) error {
		var found []store.Binding // bbolt forbids writes inside ForEach
		err := tx.ForEach(func(b store.Binding) error {
			if b.IP.String() == ip.String() {
				found = append(found, b)
			}
			return nil
		})
		for _, b := range found {
			b.Created = b.Created.Add(-d)
			if err == nil {
				err = tx.Put(b)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
