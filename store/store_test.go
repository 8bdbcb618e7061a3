package store

import (
	"errors"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func binding(ip, cid, pod string) Binding {
	return Binding{
		IP: netip.MustParseAddr(ip), ContainerID: cid, IfName: "eth0", HostInterface: "veth" + cid,
		Namespace: "ns", Pod: pod, PodUID: "uid-" + pod, Created: time.Unix(1700000000, 0).UTC(),
		Annotations: map[string]string{"a": "b"},
	}
}

func update(t *testing.T, dir string, fn func(*Tx) error) {
	t.Helper()
	st, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestPutGetDeleteAndIndex(t *testing.T) {
	dir := t.TempDir()
	a := binding("10.0.0.2", "c1", "a")
	a2 := binding("10.0.0.3", "c1", "a")
	update(t, dir, func(tx *Tx) error {
		if err := tx.Put(a); err != nil {
			return err
		}
		return tx.Put(a2)
	})
	all, err := ReadAll(dir, time.Second)
	if err != nil || len(all) != 2 {
		t.Fatalf("ReadAll = %v, %v; want 2 bindings", all, err)
	}
	if all[0].Pod != "a" || all[0].Annotations["a"] != "b" || !all[0].Created.Equal(a.Created) {
		t.Fatalf("round trip lost fields: %+v", all[0])
	}

	// IPAM hands 10.0.0.3 to another container: the new owner replaces the
	// binding and the old attachment no longer lists the IP.
	b := binding("10.0.0.3", "c2", "b")
	update(t, dir, func(tx *Tx) error {
		if err := tx.Put(b); err != nil {
			return err
		}
		old, err := tx.ByAttachment(a.Attachment())
		if err != nil || len(old) != 1 || old[0].IP != a.IP {
			t.Errorf("c1 owns %v, %v; want only %s", old, err, a.IP)
		}
		got, ok, err := tx.Get(b.IP)
		if err != nil || !ok || got.ContainerID != "c2" {
			t.Errorf("Get(%s) = %+v %v %v", b.IP, got, ok, err)
		}
		return nil
	})

	update(t, dir, func(tx *Tx) error {
		if err := tx.Delete(a.IP); err != nil {
			return err
		}
		if err := tx.Delete(netip.MustParseAddr("10.9.9.9")); err != nil {
			t.Errorf("deleting an unbound IP: %v", err)
		}
		left, err := tx.ByAttachment(a.Attachment())
		if err != nil || len(left) != 0 {
			t.Errorf("c1 still owns %v, %v", left, err)
		}
		return nil
	})
	all, _ = ReadAll(dir, time.Second)
	if len(all) != 1 || all[0].ContainerID != "c2" {
		t.Fatalf("after delete: %+v", all)
	}
}

func TestFailedUpdateWritesNothing(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("iptables failed")
	err = st.Update(func(tx *Tx) error {
		if err := tx.Put(binding("10.0.0.2", "c1", "a")); err != nil {
			return err
		}
		return boom
	})
	st.Close()
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want %v", err, boom)
	}
	if all, _ := ReadAll(dir, time.Second); len(all) != 0 {
		t.Fatalf("a failed update left %+v", all)
	}
}

func TestWriterGetsErrBusyWhileLocked(t *testing.T) {
	dir := t.TempDir()
	holder, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	start := time.Now()
	_, err = Open(dir, 100*time.Millisecond)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("second writer: %v, want ErrBusy", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("gave up after %v, want about 100ms", waited)
	}
	if _, err := ReadAll(dir, 50*time.Millisecond); !errors.Is(err, ErrBusy) {
		t.Fatalf("reader during a write: %v, want ErrBusy", err)
	}
}

// A store written at schema 1 (no network in bindings, no bases bucket)
// reads as it is and is migrated by the first writer, bindings kept.
func TestSchema1StoreIsReadAndMigrated(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(DBPath(dir), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	v1 := `{"ip":"10.1.0.5","containerID":"c1","ifName":"eth0","hostInterface":"veth1","responder":"169.254.169.252:988","namespace":"ns","pod":"p","created":"2026-01-01T00:00:00Z"}`
	err = db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucket(bucketMeta)
		meta.Put(keySchema, []byte("1"))
		b, _ := tx.CreateBucket(bucketBindings)
		b.Put([]byte("10.1.0.5"), []byte(v1))
		a, _ := tx.CreateBucket(bucketAttachments)
		return a.Put([]byte("c1\x00eth0"), []byte(`["10.1.0.5"]`))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	all, err := ReadAll(dir, time.Second)
	if err != nil || len(all) != 1 || all[0].Pod != "p" || all[0].Network != "" {
		t.Fatalf("reading a schema 1 store: %+v, %v", all, err)
	}
	if bases, err := ReadBases(dir, time.Second); err != nil || len(bases) != 0 {
		t.Fatalf("bases of a schema 1 store: %v, %v", bases, err)
	}
	update(t, dir, func(tx *Tx) error { return tx.RecordBase(testBase) })
	err = Read(dir, time.Second, func(tx *Tx) error {
		v := tx.tx.Bucket(bucketMeta).Get(keySchema)
		if string(v) != strconv.Itoa(SchemaVersion) {
			t.Errorf("schema after the first write = %s, want %d", v, SchemaVersion)
		}
		if c := tx.tx.Bucket(bucketMeta).Get(keyCompat); string(c) != strconv.Itoa(CompatVersion) {
			t.Errorf("compatVersion after the first write = %s, want %d", c, CompatVersion)
		}
		got, ok, err := tx.Get(netip.MustParseAddr("10.1.0.5"))
		if err != nil || !ok || got.ContainerID != "c1" {
			t.Errorf("binding after migration: %+v %v %v", got, ok, err)
		}
		by, err := tx.ByAttachment(Attachment{ContainerID: "c1", IfName: "eth0"})
		if err != nil || len(by) != 1 {
			t.Errorf("attachment index after migration: %v %v", by, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if bases, err := ReadBases(dir, time.Second); err != nil || len(bases) != 1 || bases[0].Metadata != testBase.Metadata {
		t.Fatalf("bases after RecordBase: %v, %v", bases, err)
	}
}

func TestMissingStoreIsEmpty(t *testing.T) {
	dir := t.TempDir()
	all, err := ReadAll(dir, time.Second)
	if err != nil || len(all) != 0 {
		t.Fatalf("ReadAll on empty dir = %v, %v", all, err)
	}
	v := NewView(dir, time.Second)
	defer v.Close()
	if _, ok, err := v.Lookup(netip.MustParseAddr("10.0.0.2")); ok || err != nil {
		t.Fatalf("Lookup on empty dir = %v, %v", ok, err)
	}
	if _, err := os.Stat(DBPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a reader created the database: %v", err)
	}
}

// Every write that has returned is seen by the next Lookup: the responder's
// freshness guarantee.
func TestViewSeesEveryCommittedWrite(t *testing.T) {
	dir := t.TempDir()
	v := NewView(dir, time.Second)
	defer v.Close()
	ip := netip.MustParseAddr("10.0.0.2")
	for i := 0; i < 50; i++ {
		owner := []string{"a", "b"}[i%2]
		update(t, dir, func(tx *Tx) error { return tx.Put(binding(ip.String(), "c-"+owner, owner)) })
		got, ok, err := v.Lookup(ip)
		if err != nil || !ok || got.Pod != owner {
			t.Fatalf("cycle %d: Lookup = %+v %v %v, want pod %s", i, got, ok, err, owner)
		}
		update(t, dir, func(tx *Tx) error { return tx.Delete(ip) })
		if _, ok, err := v.Lookup(ip); ok || err != nil {
			t.Fatalf("cycle %d: Lookup after delete = %v %v", i, ok, err)
		}
	}
}

func TestViewConcurrentLookupsDuringWrites(t *testing.T) {
	dir := t.TempDir()
	v := NewView(dir, 2*time.Second)
	defer v.Close()
	ip := netip.MustParseAddr("10.0.0.2")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := v.Lookup(ip); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < 30; i++ {
		update(t, dir, func(tx *Tx) error { return tx.Put(binding(ip.String(), "c", "p")) })
	}
	close(stop)
	wg.Wait()
}

// A state directory wiped and recreated under a running reader (reinstall)
// is noticed even though the new counter restarts: the reader's mapping
// still shows the old file, so it is noticed at the next check of the name,
// at most inodeCheckEvery later (generation.go).
func TestViewNoticesARecreatedStateDir(t *testing.T) {
	dir := t.TempDir()
	v := NewView(dir, time.Second)
	defer v.Close()
	ip := netip.MustParseAddr("10.0.0.2")
	update(t, dir, func(tx *Tx) error { return tx.Put(binding(ip.String(), "c-a", "a")) })
	if b, ok, _ := v.Lookup(ip); !ok || b.Pod != "a" {
		t.Fatalf("before wipe: %+v %v", b, ok)
	}
	for _, f := range []string{DBPath(dir), generationPath(dir), lockPath(dir)} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	update(t, dir, func(tx *Tx) error { return tx.Put(binding(ip.String(), "c-b", "b")) })
	waitForPod(t, v, ip, "b", "after wipe")
}

// waitForPod polls v until ip is bound to pod, and fails if that takes
// longer than a replaced generation file may go unnoticed (with room for a
// slow machine).
func waitForPod(t *testing.T, v *View, ip netip.Addr, pod, what string) {
	t.Helper()
	start := time.Now()
	for {
		b, ok, err := v.Lookup(ip)
		if ok && err == nil && b.Pod == pod {
			return
		}
		if time.Since(start) > inodeCheckEvery+time.Second {
			t.Fatalf("%s: Lookup = %+v %v %v after %v; want pod %s", what, b, ok, err, time.Since(start), pod)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRemoveCommitsOnlyWhatItPicks(t *testing.T) {
	dir := t.TempDir()
	update(t, dir, func(tx *Tx) error { return tx.Put(binding("10.0.0.2", "c1", "a")) })
	gen := func() uint64 {
		g := generationReader{path: generationPath(dir)}
		defer g.close()
		v, _ := g.read()
		return v.n
	}
	st, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	before := gen()
	none, err := st.Remove(func(tx *Tx) ([]Binding, error) { return tx.ByAttachment(Attachment{"nobody", "eth0"}) })
	if err != nil || len(none) != 0 || gen() != before {
		t.Fatalf("removing nothing: %v %v, generation %d -> %d (a commit)", none, err, before, gen())
	}
	got, err := st.Remove(func(tx *Tx) ([]Binding, error) { return tx.ByAttachment(Attachment{"c1", "eth0"}) })
	if err != nil || len(got) != 1 || gen() == before {
		t.Fatalf("removing c1: %v %v", got, err)
	}
	var left int
	st.View(func(tx *Tx) error { return tx.ForEach(func(Binding) error { left++; return nil }) })
	if left != 0 {
		t.Fatalf("%d bindings left", left)
	}
}
