package integration

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

func TestCheckNoticesAMissingRule(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.4.0/24"})
	p := n.addPod(t, "payments", "api-1")
	if err := n.check(p); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}
	// Only the pod's DNAT piece goes (its source piece stays), deleted
	// through the backend: an iptables rule or an nftables map element.
	var dnat []redirect.Owned
	for _, o := range n.natOwned(t) {
		if o.ContainerID == p.rt.ContainerID {
			dnat = append(dnat, o)
		}
	}
	if len(dnat) != 1 {
		t.Fatalf("DNAT pieces of the pod: %v, want one", dnat)
	}
	if err := n.ns.Do(func(ns.NetNS) error { return n.backendIn(t).Delete(dnat[0]) }); err != nil {
		t.Fatal(err)
	}
	if n.natOwnedBy(t, p.rt.ContainerID) != 0 {
		t.Fatalf("the pod's DNAT piece is still there: %v", n.natOwned(t))
	}
	if err := n.check(p); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("CHECK with the rule gone = %v, want a missing-rule error", err)
	}
}

func TestAddWithoutPrevResultIsRefused(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.5.0/24"})
	alone, err := libcni.ConfListFromBytes([]byte(`{"cniVersion": "1.1.0", "name": "alone", "plugins": [{"type": "metabind", "stateDir": "` +
		n.stateDir + `", "logFile": "` + n.logFile + `"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	podNS := newPodNS(t)
	err = n.ns.Do(func(ns.NetNS) error {
		_, err := n.cni.AddNetworkList(context.Background(), alone, &libcni.RuntimeConf{ContainerID: "c1", NetNS: podNS.Path(), IfName: "eth0"})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "prevResult") {
		t.Fatalf("ADD with no plugin before metabind = %v, want an error about prevResult", err)
	}
}

// While another process holds the store, ADD gives up after its bounded
// wait with CNI error 11 and leaves no rule and no binding behind.
func TestAddOnBusyStoreSaysTryAgainLater(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.6.0/24"})
	site := n.addPod(t, "web", "site-1") // creates the store and the chains
	held, err := store.Open(n.stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = n.addPodIn(newPodNS(t), "payments", "api-1")
	waited := time.Since(start)
	held.Close()
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD on a held store = %v, want CNI error %d", err, types.ErrTryAgainLater)
	}
	if waited > 10*time.Second {
		t.Fatalf("ADD waited %v, want a bounded wait of a few seconds", waited)
	}
	// site-1's pieces only: one DNAT and one source piece.
	owned := n.owned(t)
	for _, o := range owned {
		if o.ContainerID != site.rt.ContainerID {
			t.Fatalf("the failed ADD left rules behind: %v", owned)
		}
	}
	if len(n.natOwned(t)) != 1 {
		t.Fatalf("DNAT pieces after the failed ADD: %v, want site-1's one", n.natOwned(t))
	}
	all, err := store.ReadAll(n.stateDir, time.Second)
	if err != nil || len(all) != 1 || all[0].Pod != "site-1" {
		t.Fatalf("store after the failed ADD: %+v %v", all, err)
	}
}

// When the store has lost a pod's binding (an ADD that died between its
// rule and its commit), DEL still finds the pod's rule by its comment.
func TestDelRemovesRulesTheStoreLostTrackOf(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.7.0/24"})
	p := n.addPod(t, "payments", "api-1")
	st, err := store.Open(n.stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(func(tx *store.Tx) error { return tx.Delete(p.ip) })
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	n.delPod(t, p)
	if rules := n.natRules(t); strings.Contains(rules, p.rt.ContainerID) {
		t.Fatalf("DEL left the pod's rule:\n%s", rules)
	}
}

// ADD succeeds but warns in the log about what will make the pod's
// requests fail: an IPv6 address with no metadataAddress6 (its IPv6
// metadata traffic is neither redirected nor blocked), and no K8S_POD_UID
// (every token request is answered 404).
func TestAddWarnsAboutIPv6WithoutMetadataAddress6AndMissingUID(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.62.0/24"})
	p := n.addUnboundPod(t, "payments", "api-1")
	var res current.Result
	if err := jsonRoundTrip(p.result, &res); err != nil {
		t.Fatal(err)
	}
	v6 := *res.IPs[0]
	v6.Address = net.IPNet{IP: net.ParseIP("fd00:62::5"), Mask: net.CIDRMask(64, 128)}
	v6.Gateway = nil
	res.IPs = append(res.IPs, &v6)
	if err := n.metabindOnly("ADD", randomID(), p, "IgnoreUnknown=1;K8S_POD_NAMESPACE=payments;K8S_POD_NAME=api-1", mustJSON(t, &res)); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	log := n.pluginLog()
	for _, want := range []string{
		`"level":"WARN","msg":"the pod has IPv6 address fd00:62::5 but metadataAddress6 is unset`,
		`"level":"WARN","msg":"CNI_ARGS carry no K8S_POD_UID`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("plugin log lacks %s:\n%s", want, log)
		}
	}
}
