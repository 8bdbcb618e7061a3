package doctor

import (
	"context"
	"net/netip"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

var testResponder = netip.MustParseAddrPort("169.254.169.252:988")

func testBinding(ip, cid string) store.Binding {
	return store.Binding{IP: netip.MustParseAddr(ip), ContainerID: cid, IfName: "eth0", HostInterface: "veth-" + cid,
		Responder: testResponder, Namespace: "payments", Pod: "api-" + cid}
}

// putBindings writes a store holding bs and base, as the plugin's ADDs do.
func putBindings(t *testing.T, dir string, base *store.Base, bs ...store.Binding) {
	t.Helper()
	s, err := store.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Update(func(tx *store.Tx) error {
		if base != nil {
			if err := tx.RecordBase(*base); err != nil {
				return err
			}
		}
		for _, b := range bs {
			if err := tx.Put(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCheckStore(t *testing.T) {
	n := testNode(t)
	wantStatus(t, checkStore(context.Background(), n), Warn, "no binding store")

	n = testNode(t)
	putBindings(t, n.StateDir, nil, testBinding("10.0.0.2", "c1"), testBinding("10.0.0.3", "c2"))
	wantStatus(t, checkStore(context.Background(), n), OK, "schema 2 (compatVersion 2; this binary: 2), 2 bindings, 0 bases, 0 unreadable records")

	// A damaged record: its IP is unanswered until rebound.
	db, err := bolt.Open(store.DBPath(n.StateDir), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("bindings")).Put([]byte("10.0.0.9"), []byte("{garbage"))
	})
	db.Close()
	n = &node{Options: n.Options}
	wantStatus(t, checkStore(context.Background(), n), Fail, "1 unreadable record: their IPs are unanswered: 10.0.0.9")
}

func TestCheckBaseRulesWithoutABase(t *testing.T) {
	n := testNode(t)
	putBindings(t, n.StateDir, nil, testBinding("10.0.0.2", "c1"))
	wantStatus(t, checkBaseRules(context.Background(), n), Skipped, "no base recorded")
}

// owned is the piece of b's rules the tables list in chain.
func owned(b store.Binding, chain string) redirect.Owned {
	o := redirect.Owned{Table: "filter", Chain: chain, ContainerID: b.ContainerID, IfName: b.IfName, IP: b.IP, Interface: b.HostInterface}
	if chain == redirect.NATChain {
		o.Table, o.Spec, o.To = "nat", []string{"-j", "DNAT", "--to-destination", b.Responder.String()}, b.Responder
	}
	return o
}

// A rule is a binding's only as the plugin would install it; a binding
// has its rules only with both pieces.
func TestMatch(t *testing.T) {
	whole, half, none := testBinding("10.0.0.2", "c1"), testBinding("10.0.0.3", "c2"), testBinding("10.0.0.4", "c3")
	moved := owned(whole, redirect.NATChain)
	moved.Spec, moved.To = []string{"-j", "DNAT", "--to-destination", "169.254.169.252:999"}, netip.MustParseAddrPort("169.254.169.252:999")
	stranger := owned(testBinding("10.0.0.5", "c9"), redirect.SourceChain)
	p := PodRules{Bindings: []store.Binding{whole, half, none}}
	p.match(ipv4, []redirect.Owned{owned(whole, redirect.NATChain), owned(whole, redirect.SourceChain), owned(half, redirect.NATChain), moved, stranger})

	if len(p.Rules) != 5 {
		t.Fatalf("%d rules listed, want 5", len(p.Rules))
	}
	for i, want := range []string{"c1", "c1", "c2", "", ""} {
		got := ""
		if b := p.Rules[i].Binding; b != nil {
			got = b.ContainerID
		}
		if got != want || p.Rules[i].Family != "IPv4" {
			t.Errorf("rule %d (%s) belongs to %q (%s), want %q", i, p.Rules[i].Rule, got, p.Rules[i].Family, want)
		}
	}
	if o := p.Orphans(); len(o) != 2 {
		t.Errorf("orphans %v, want the DNAT to another responder and the stranger's rule", o)
	}
	if len(p.Missing) != 2 || p.Missing[0].ContainerID != "c2" || p.Missing[1].ContainerID != "c3" {
		t.Errorf("missing %v, want c2 (half its rules) and c3", p.Missing)
	}
}
