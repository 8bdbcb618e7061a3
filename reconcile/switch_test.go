package reconcile

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// brokenBase is a backend whose base cannot be installed (a kernel without
// one of the nftables modules it needs, say).
type brokenBase struct{ redirect.Backend }

func (brokenBase) EnsureBaseWith([]redirect.Rule) ([]string, error) {
	return nil, errors.New("nftables: the kernel refused the nat chain")
}

// A switch of backends that fails half-way leaves the old backend in place
// and the record as it was: the node keeps a working redirect, and the
// repair loop, which follows the record, goes on keeping the old one.
func TestFailedSwitchKeepsTheOldBackendAndRecord(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root for a network namespace")
		}
		t.Skip("needs root for a network namespace")
	}
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { netns.Close(); testutils.UnmountNS(netns) }()
	meta, resp := netip.MustParseAddrPort("169.254.169.254:80"), netip.MustParseAddrPort("169.254.169.252:988")
	dir := t.TempDir()
	st, err := store.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	old := store.Base{Metadata: meta, Responder: resp, Backend: redirect.BackendIPTables}
	err = st.Update(func(tx *store.Tx) error { return tx.RecordBase(old) })
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	err = netns.Do(func(ns.NetNS) error {
		ipt, err := redirect.New(meta, resp)
		if err != nil {
			return err
		}
		if _, err := ipt.EnsureBase(); err != nil {
			return err
		}
		nft, err := redirect.NewNFT(meta, resp)
		if err != nil {
			return err
		}
		to := old
		to.Backend = redirect.BackendNFTables
		rep, err := Run(Options{StateDir: dir, LockTimeout: time.Second, Redirects: []redirect.Backend{brokenBase{nft}}, Record: []store.Base{to}})
		if err != nil || len(rep.Errors) == 0 {
			t.Errorf("a switch to a backend whose base fails: %v, report errors %v; want the failure reported", err, rep.Errors)
		}
		if present, err := ipt.Present(); err != nil || !present {
			t.Errorf("the iptables redirect after the failed switch: present %v (%v), want it kept", present, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	bases, err := store.ReadBases(dir, time.Second)
	if err != nil || len(bases) != 1 || bases[0].Backend != redirect.BackendIPTables {
		t.Errorf("the record after the failed switch: %+v %v, want iptables still", bases, err)
	}
}
