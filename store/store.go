package store

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketMeta        = []byte("meta")
	bucketBindings    = []byte("bindings")    // IP -> Binding (JSON)
	bucketAttachments = []byte("attachments") // containerID NUL ifname -> owned IPs (JSON list)
	bucketBases       = []byte("bases")       // metadata address SP responder address -> Base (JSON)
)

// DBPath is the database file under a state directory.
func DBPath(dir string) string { return filepath.Join(dir, "bindings.db") }

func lockPath(dir string) string { return filepath.Join(dir, "bindings.lock") }

// Store is the read-write handle the CNI plugin holds for one verb. Open it,
// run one Update, Close it: holding it blocks every other writer and reader.
type Store struct {
	dir  string
	db   *bolt.DB
	gate *gate
}

// Open takes the store for writing, creating the state directory and the
// database if needed. It waits at most timeout for other processes and
// returns an error wrapping ErrBusy when that runs out.
func Open(dir string, timeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	g, err := lockGate(lockPath(dir), true, timeout)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(DBPath(dir), 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		g.unlock()
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s is held open by a process that bypasses %s", ErrBusy, DBPath(dir), lockPath(dir))
		}
		return nil, fmt.Errorf("open %s: %w", DBPath(dir), err)
	}
	s := &Store{dir: dir, db: db, gate: g}
	// Every bbolt commit costs an fsync, so the schema is only written when
	// the store is new, older, or lacks compatVersion; otherwise it is only
	// checked, in a read transaction.
	ready := false
	err = db.View(func(tx *bolt.Tx) error {
		sc, err := readSchema(tx)
		ready = err == nil && sc.settled() && hasBuckets(tx)
		return err
	})
	if err == nil && !ready {
		err = db.Update(func(tx *bolt.Tx) error {
			if err := initSchema(tx); err != nil {
				return err
			}
			return bumpGeneration(dir) // a migration is a write readers must see
		})
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the database and the lock.
func (s *Store) Close() error {
	err := s.db.Close()
	if uerr := s.gate.unlock(); err == nil {
		err = uerr
	}
	return err
}

// Update runs fn in one read-write transaction. When fn returns an error
// nothing is written. The generation counter is bumped just before the
// commit, while the gate is held: a reader that sees the new value waits for
// the gate and then reads the committed data, and a commit that fails after
// the bump costs readers one needless reload, never a missed write.
func (s *Store) Update(fn func(*Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := fn(&Tx{tx: tx}); err != nil {
			return err
		}
		return bumpGeneration(s.dir)
	})
}

// Remove deletes the bindings pick chooses and returns them. pick runs in a
// read transaction, so a call that removes nothing commits nothing (no
// fsync, and no reload for readers); the store's lock is held throughout,
// so what pick saw is still there to delete.
func (s *Store) Remove(pick func(*Tx) ([]Binding, error)) ([]Binding, error) {
	var picked []Binding
	if err := s.View(func(tx *Tx) (err error) {
		picked, err = pick(tx)
		return err
	}); err != nil || len(picked) == 0 {
		return nil, err
	}
	err := s.Update(func(tx *Tx) error {
		for _, b := range picked {
			if err := tx.Delete(b.IP); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return picked, nil
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Tx is one transaction over the bindings.
type Tx struct {
	tx         *bolt.Tx
	unreadable []UnreadableRecord // skipped by this transaction's reads
}

// Get returns the binding of ip, if any. An unreadable record is no
// binding (see UnreadableRecord): the ADD the IP was handed to replaces it
// with Put. The error is nil today; it stays for reads that can fail.
func (t *Tx) Get(ip netip.Addr) (Binding, bool, error) {
	b := t.tx.Bucket(bucketBindings)
	if b == nil {
		return Binding{}, false, nil
	}
	key := []byte(ip.String())
	v := b.Get(key)
	if v == nil {
		return Binding{}, false, nil
	}
	bd, err := decodeBinding(key, v)
	if err != nil {
		t.skip(key, err)
		return Binding{}, false, nil
	}
	return bd, true, nil
}

// Put records b, replacing any binding of the same IP. If another
// attachment owned the IP, the IP is removed from that attachment's index.
func (t *Tx) Put(b Binding) error {
	if !b.IP.IsValid() {
		return errors.New("binding has no IP")
	}
	b.IP = b.IP.Unmap()
	if old, ok, err := t.Get(b.IP); err != nil {
		return err
	} else if ok && old.Attachment() != b.Attachment() {
		if err := t.unindex(old.Attachment(), b.IP); err != nil {
			return err
		}
	}
	v, err := encodeBinding(b)
	if err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketBindings).Put([]byte(b.IP.String()), v); err != nil {
		return err
	}
	ips, err := t.attachmentIPs(b.Attachment())
	if err != nil {
		return err
	}
	for _, ip := range ips {
		if ip == b.IP {
			return nil
		}
	}
	return t.putAttachmentIPs(b.Attachment(), append(ips, b.IP))
}

// Delete removes the binding of ip and its index entry. Deleting an IP that
// has no binding is not an error.
func (t *Tx) Delete(ip netip.Addr) error {
	old, ok, err := t.Get(ip)
	if err != nil || !ok {
		return err
	}
	if err := t.unindex(old.Attachment(), old.IP); err != nil {
		return err
	}
	return t.tx.Bucket(bucketBindings).Delete([]byte(old.IP.String()))
}

// ByAttachment returns the bindings an attachment owns.
func (t *Tx) ByAttachment(a Attachment) ([]Binding, error) {
	ips, err := t.attachmentIPs(a)
	if err != nil {
		return nil, err
	}
	out := make([]Binding, 0, len(ips))
	for _, ip := range ips {
		b, ok, err := t.Get(ip)
		if err != nil {
			return nil, err
		}
		if ok && b.Attachment() == a {
			out = append(out, b)
		}
	}
	return out, nil
}

// ForEach calls fn for every binding, in IP order (as strings). It skips
// unreadable records, so one cannot stop a GC or a listing; Unreadable
// reports them.
func (t *Tx) ForEach(fn func(Binding) error) error {
	b := t.tx.Bucket(bucketBindings)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		bd, err := decodeBinding(k, v)
		if err != nil {
			t.skip(k, err)
			return nil
		}
		return fn(bd)
	})
}

// forEachRaw calls fn with every binding record as stored; the slices are
// only valid inside the transaction.
func (t *Tx) forEachRaw(fn func(k, v []byte)) error {
	b := t.tx.Bucket(bucketBindings)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		fn(k, v)
		return nil
	})
}

func (t *Tx) unindex(a Attachment, ip netip.Addr) error {
	ips, err := t.attachmentIPs(a)
	if err != nil {
		return err
	}
	kept := ips[:0]
	for _, x := range ips {
		if x != ip {
			kept = append(kept, x)
		}
	}
	return t.putAttachmentIPs(a, kept)
}

func (t *Tx) attachmentIPs(a Attachment) ([]netip.Addr, error) {
	b := t.tx.Bucket(bucketAttachments)
	if b == nil {
		return nil, nil
	}
	v := b.Get(a.key())
	if v == nil {
		return nil, nil
	}
	return decodeIPList(a, v)
}

func (t *Tx) putAttachmentIPs(a Attachment, ips []netip.Addr) error {
	b := t.tx.Bucket(bucketAttachments)
	if len(ips) == 0 {
		return b.Delete(a.key())
	}
	v, err := encodeIPList(ips)
	if err != nil {
		return err
	}
	return b.Put(a.key(), v)
}
