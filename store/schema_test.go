package store

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// setSchema stamps the store under dir with the given meta values, as a
// binary of that schema would have; an empty compat removes the key, and
// extra buckets stand for what a newer layout added.
func setSchema(t *testing.T, dir, version, compat string, extra ...string) {
	t.Helper()
	db, err := bolt.Open(DBPath(dir), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keySchema, []byte(version)); err != nil {
			return err
		}
		if compat == "" {
			return meta.Delete(keyCompat)
		}
		if err := meta.Put(keyCompat, []byte(compat)); err != nil {
			return err
		}
		for _, name := range extra {
			b, err := tx.CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			if err := b.Put([]byte("k"), []byte("v")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// storedSchema is the store's meta values as stored.
func storedSchema(t *testing.T, dir string) (version, compat string) {
	t.Helper()
	err := Read(dir, time.Second, func(tx *Tx) error {
		meta := tx.tx.Bucket(bucketMeta)
		version, compat = string(meta.Get(keySchema)), string(meta.Get(keyCompat))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return version, compat
}

var testBase = Base{Metadata: netip.MustParseAddrPort("169.254.169.254:80"), Responder: netip.MustParseAddrPort("169.254.169.252:988"), Backend: "iptables"}

// A store of a newer schema that declares itself writable by this one (an
// additive change: here a bucket this binary does not know) is read and
// written through every path, and keeps its versions and its new bucket: a
// rollback never downgrades it under the newer binaries.
func TestNewerCompatibleSchemaIsReadAndWritten(t *testing.T) {
	dir := t.TempDir()
	update(t, dir, func(tx *Tx) error { return tx.Put(binding("10.0.0.2", "c1", "a")) })
	setSchema(t, dir, "3", "2", "future")

	if all, err := ReadAll(dir, time.Second); err != nil || len(all) != 1 || all[0].Pod != "a" {
		t.Fatalf("ReadAll of a (3, compat 2) store: %v, %v", all, err)
	}
	update(t, dir, func(tx *Tx) error {
		if err := tx.Put(binding("10.0.0.3", "c2", "b")); err != nil {
			return err
		}
		if err := tx.RecordBase(testBase); err != nil {
			return err
		}
		return tx.Delete(netip.MustParseAddr("10.0.0.2"))
	})
	v := NewView(dir, time.Second)
	defer v.Close()
	if b, ok, err := v.Lookup(netip.MustParseAddr("10.0.0.3")); err != nil || !ok || b.Pod != "b" {
		t.Fatalf("View of a (3, compat 2) store: %+v %v %v", b, ok, err)
	}
	if _, ok, err := v.Lookup(netip.MustParseAddr("10.0.0.2")); err != nil || ok {
		t.Fatalf("deleted binding still seen: %v %v", ok, err)
	}
	if bases, err := ReadBases(dir, time.Second); err != nil || len(bases) != 1 {
		t.Fatalf("ReadBases of a (3, compat 2) store: %v, %v", bases, err)
	}
	if version, compat := storedSchema(t, dir); version != "3" || compat != "2" {
		t.Fatalf("after this binary's writes the store is (%s, compat %s), want (3, compat 2)", version, compat)
	}
	err := Read(dir, time.Second, func(tx *Tx) error {
		if got := tx.tx.Bucket([]byte("future")).Get([]byte("k")); string(got) != "v" {
			t.Errorf("the newer layout's bucket holds %q after this binary's writes", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A newer store that does not admit this binary (compatVersion above its
// schema, or none recorded) is refused by Open and by every reader, with an
// error naming both versions and what to upgrade; it is left as it was.
func TestNewerIncompatibleSchemaIsRefused(t *testing.T) {
	for _, compat := range []string{"3", ""} {
		t.Run("compat="+compat, func(t *testing.T) {
			dir := t.TempDir()
			update(t, dir, func(tx *Tx) error { return tx.Put(binding("10.0.0.2", "c1", "a")) })
			setSchema(t, dir, "3", compat)

			v := NewView(dir, time.Second)
			defer v.Close()
			errs := map[string]error{}
			_, errs["Open"] = Open(dir, time.Second)
			_, errs["ReadAll"] = ReadAll(dir, time.Second)
			_, errs["ReadBases"] = ReadBases(dir, time.Second)
			_, _, errs["View.Lookup"] = v.Lookup(netip.MustParseAddr("10.0.0.2"))
			for path, err := range errs {
				if !errors.Is(err, ErrNewerSchema) {
					t.Errorf("%s of a (3, compat %q) store: %v, want ErrNewerSchema", path, compat, err)
					continue
				}
				for _, want := range []string{"schema version 3", "this store.test is schema 2", "upgrade store.test", "schema 3 or newer"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s: error %q does not say %q", path, err, want)
					}
				}
			}
			t.Logf("Open refuses with: %v", errs["Open"])
			db, err := bolt.Open(DBPath(dir), 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.View(func(tx *bolt.Tx) error {
				meta := tx.Bucket(bucketMeta)
				if v, c := meta.Get(keySchema), meta.Get(keyCompat); string(v) != "3" || string(c) != compat {
					t.Errorf("a refused store was rewritten to (%s, compat %s)", v, c)
				}
				return nil
			})
		})
	}
}

// A schema 2 store written before compatVersion existed (the previous
// release) gains the key at the first open for writing, bindings kept.
func TestSchema2StoreGainsCompatVersion(t *testing.T) {
	dir := t.TempDir()
	update(t, dir, func(tx *Tx) error { return tx.Put(binding("10.0.0.2", "c1", "a")) })
	setSchema(t, dir, "2", "")
	if version, compat := storedSchema(t, dir); version != "2" || compat != "" {
		t.Fatalf("set-up: (%s, compat %s)", version, compat)
	}
	update(t, dir, func(*Tx) error { return nil })
	if version, compat := storedSchema(t, dir); version != "2" || compat != "2" {
		t.Fatalf("after an open for writing: (%s, compat %s), want (2, compat 2)", version, compat)
	}
	if all, err := ReadAll(dir, time.Second); err != nil || len(all) != 1 {
		t.Fatalf("bindings: %v, %v", all, err)
	}
}

// Versions reports what the store records, as readers see it.
func TestVersions(t *testing.T) {
	dir := t.TempDir()
	update(t, dir, func(tx *Tx) error { return tx.Put(binding("10.0.0.2", "c1", "a")) })
	versions := func() (v, c int) {
		t.Helper()
		if err := Read(dir, time.Second, func(tx *Tx) error { v, c = tx.Versions(); return nil }); err != nil {
			t.Fatal(err)
		}
		return v, c
	}
	if v, c := versions(); v != SchemaVersion || c != CompatVersion {
		t.Fatalf("Versions = %d, %d; want %d, %d", v, c, SchemaVersion, CompatVersion)
	}
	setSchema(t, dir, "3", "2")
	if v, c := versions(); v != 3 || c != 2 {
		t.Fatalf("Versions of a (3, compat 2) store = %d, %d", v, c)
	}
}
