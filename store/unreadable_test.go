package store

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// plant writes value under key in the bindings bucket as damage would,
// bypassing the store, and bumps the generation so that Views reload.
func plant(t *testing.T, dir, key, value string) {
	t.Helper()
	db, err := bolt.Open(DBPath(dir), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketBindings).Put([]byte(key), []byte(value)) })
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = bumpGeneration(dir)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Two kinds of damage: a record that is not JSON, and one stored under
// another IP than its own.
const (
	notJSON   = "10.0.0.9"
	otherIPs  = "10.0.0.7"
	unrelated = `{"ip":"10.0.0.8"}`
)

func plantDamage(t *testing.T, dir string) {
	t.Helper()
	plant(t, dir, notJSON, `{not json`)
	plant(t, dir, otherIPs, unrelated)
}

func checkReported(t *testing.T, what string, got []UnreadableRecord) {
	t.Helper()
	if len(got) != 2 || got[0].Key != otherIPs || got[1].Key != notJSON ||
		!strings.Contains(got[0].Err.Error(), `"10.0.0.8"`) || !strings.Contains(got[1].Err.Error(), "invalid character") {
		t.Errorf("%s reported %v, want %s (IP 10.0.0.8) and %s (bad JSON)", what, got, otherIPs, notJSON)
	}
}

// One undecodable record is skipped and reported by every reader; it does
// not hide the others.
func TestReadersSkipAndReportUnreadableRecords(t *testing.T) {
	dir := t.TempDir()
	update(t, dir, func(tx *Tx) error {
		if err := tx.Put(binding("10.0.0.2", "c-a", "a")); err != nil {
			return err
		}
		return tx.Put(binding("10.0.0.4", "c-b", "b"))
	})
	plantDamage(t, dir)

	l, err := List(dir, time.Second)
	if err != nil || len(l.Bindings) != 2 || l.Bindings[0].Pod != "a" || l.Bindings[1].Pod != "b" {
		t.Fatalf("List = %+v, %v; want pods a and b", l.Bindings, err)
	}
	checkReported(t, "List", l.Unreadable)
	if all, err := ReadAll(dir, time.Second); err != nil || len(all) != 2 {
		t.Errorf("ReadAll = %+v, %v; want pods a and b", all, err)
	}

	// In a transaction (the plugin's GC picks with ForEach): a record met
	// twice is reported once.
	st, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.View(func(tx *Tx) error {
		for range 2 {
			seen := 0
			if err := tx.ForEach(func(Binding) error { seen++; return nil }); err != nil || seen != 2 {
				t.Errorf("ForEach visited %d, %v; want 2", seen, err)
			}
		}
		checkReported(t, "Tx.Unreadable after ForEach", tx.Unreadable())
		for _, ip := range []string{notJSON, otherIPs} {
			if b, ok, err := tx.Get(netip.MustParseAddr(ip)); ok || err != nil {
				t.Errorf("Get(%s) = %+v %v %v, want no binding", ip, b, ok, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The ADD that is handed an IP whose record is unreadable takes it over:
// Get says unbound, Put replaces the record. The unknown old owner's index
// entry still lists the IP, but never gives it back: ByAttachment checks
// ownership, so the old owner's DEL or GC removes nothing of the new pod.
func TestPutReplacesAnUnreadableRecord(t *testing.T) {
	dir := t.TempDir()
	old := binding(notJSON, "c-old", "old")
	update(t, dir, func(tx *Tx) error { return tx.Put(old) })
	plant(t, dir, notJSON, `{not json`)

	nu := binding(notJSON, "c-new", "new")
	update(t, dir, func(tx *Tx) error {
		if _, ok, err := tx.Get(nu.IP); ok || err != nil {
			t.Errorf("Get of the unreadable record = %v, %v; want no binding", ok, err)
		}
		if err := tx.Put(nu); err != nil {
			t.Errorf("Put over the unreadable record: %v", err)
		}
		if got := tx.Unreadable(); len(got) != 1 || got[0].Key != notJSON {
			t.Errorf("Unreadable = %v, want the replaced record", got)
		}
		return nil
	})

	l, err := List(dir, time.Second)
	if err != nil || len(l.Bindings) != 1 || l.Bindings[0].Pod != "new" || len(l.Unreadable) != 0 {
		t.Fatalf("after the takeover: %+v, unreadable %v, %v", l.Bindings, l.Unreadable, err)
	}
	st, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	removed, err := st.Remove(func(tx *Tx) ([]Binding, error) { return tx.ByAttachment(old.Attachment()) })
	if err != nil || len(removed) != 0 {
		t.Fatalf("the old owner's DEL removed %+v, %v; want nothing", removed, err)
	}
	removed, err = st.Remove(func(tx *Tx) ([]Binding, error) { return tx.ByAttachment(nu.Attachment()) })
	if err != nil || len(removed) != 1 || removed[0].Pod != "new" {
		t.Fatalf("the new owner's DEL removed %+v, %v; want its binding", removed, err)
	}
}

// The responder's View skips them too: their IPs go unanswered, every
// other pod is answered, and OnCorrupt hears of each.
func TestViewSkipsUnreadableRecords(t *testing.T) {
	dir := t.TempDir()
	update(t, dir, func(tx *Tx) error { return tx.Put(binding("10.0.0.2", "c-a", "a")) })
	plantDamage(t, dir)
	v := NewView(dir, time.Second)
	defer v.Close()
	var skipped []UnreadableRecord
	v.OnCorrupt = func(key string, err error) { skipped = append(skipped, UnreadableRecord{key, err}) }
	if b, ok, err := v.Lookup(netip.MustParseAddr("10.0.0.2")); err != nil || !ok || b.Pod != "a" {
		t.Fatalf("good record: %+v %v %v", b, ok, err)
	}
	for _, ip := range []string{notJSON, otherIPs, "10.0.0.8"} {
		if b, ok, err := v.Lookup(netip.MustParseAddr(ip)); ok || err != nil {
			t.Errorf("Lookup(%s) = %+v %v %v, want no binding", ip, b, ok, err)
		}
	}
	checkReported(t, "OnCorrupt", skipped)
}
