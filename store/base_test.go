package store

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestRecordBaseKeepsEveryExtraAddress(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	meta, resp := netip.MustParseAddrPort("169.254.169.254:80"), netip.MustParseAddrPort("169.254.169.252:988")
	cc := netip.MustParseAddrPort("169.254.170.23:80")
	// A record written before Extra existed reads back with none.
	if err := st.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBases).Put([]byte(meta.String()+" "+resp.String()),
			[]byte(`{"metadata":"169.254.169.254:80","responder":"169.254.169.252:988","backend":"iptables","recorded":"2024-01-01T00:00:00Z"}`))
	}); err != nil {
		t.Fatal(err)
	}
	record := func(b Base) []Base {
		t.Helper()
		var out []Base
		if err := st.Update(func(tx *Tx) error {
			if err := tx.RecordBase(b); err != nil {
				return err
			}
			out = tx.Bases()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	plain := Base{Metadata: meta, Responder: resp, Backend: "iptables"}
	if got := record(plain); len(got) != 1 || got[0].Extra != nil {
		t.Fatalf("old record = %+v", got)
	}
	with := plain
	with.Extra = []netip.AddrPort{cc}
	if got := record(with); len(got) != 1 || !slices.Equal(got[0].Extra, with.Extra) {
		t.Fatalf("after an ADD with an extra address: %+v", got)
	}
	// Another network's ADD without it does not drop it.
	if got := record(plain); len(got) != 1 || !slices.Equal(got[0].Extra, with.Extra) {
		t.Fatalf("after an ADD without the extra address: %+v", got)
	}
	// Nor does a switch of backends by a network without it.
	switched := plain
	switched.Backend = "nftables"
	if got := record(switched); len(got) != 1 || got[0].Backend != "nftables" || !slices.Equal(got[0].Extra, with.Extra) {
		t.Fatalf("after a switch to nftables without the extra address: %+v", got)
	}
	if plain.Key() == with.Key() {
		t.Fatal("bases with different extra addresses share a key")
	}
	st.Close()
}
