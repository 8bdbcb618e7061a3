package store

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ReadAll returns every binding. It holds the store for the one read and
// releases it at once: readers that keep bbolt open read-only would block
// the plugin. A state directory without a database holds no bindings.
func ReadAll(dir string, timeout time.Duration) ([]Binding, error) {
	var out []Binding
	err := read(dir, timeout, func(tx *Tx) error {
		return tx.ForEach(func(b Binding) error {
			out = append(out, b)
			return nil
		})
	})
	return out, err
}

func read(dir string, timeout time.Duration, fn func(*Tx) error) error {
	if _, err := os.Stat(DBPath(dir)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	g, err := lockGate(lockPath(dir), false, timeout)
	if err != nil {
		return err
	}
	defer g.unlock()
	db, err := bolt.Open(DBPath(dir), 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return fmt.Errorf("%w: %s is held open by a process that bypasses %s", ErrBusy, DBPath(dir), lockPath(dir))
		}
		return fmt.Errorf("open %s: %w", DBPath(dir), err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			if err := checkSchema(meta.Get(keySchema)); err != nil {
				return err
			}
		}
		return fn(&Tx{tx: tx})
	})
}

// View is a long-lived reader's in-memory copy of the bindings that is
// never stale: every Lookup first compares the generation counter (one
// pread) and reloads when a write has committed since the copy was made.
// So once a plugin's ADD or DEL has returned, every later Lookup sees it.
type View struct {
	dir     string
	timeout time.Duration
	gen     generationReader
	mu      sync.Mutex // one reload at a time; concurrent lookups share it
	cur     atomic.Pointer[snapshot]
}

type snapshot struct {
	gen  uint64
	byIP map[netip.Addr]Binding
}

// NewView reads the store under dir; timeout bounds a reload's wait for the
// lock.
func NewView(dir string, timeout time.Duration) *View {
	return &View{dir: dir, timeout: timeout, gen: generationReader{path: generationPath(dir)}}
}

// Lookup returns the binding of ip as of the latest committed write.
func (v *View) Lookup(ip netip.Addr) (Binding, bool, error) {
	snap, err := v.current()
	if err != nil {
		return Binding{}, false, err
	}
	b, ok := snap.byIP[ip.Unmap()]
	return b, ok, nil
}

// Len returns how many bindings the current copy holds.
func (v *View) Len() (int, error) {
	snap, err := v.current()
	if err != nil {
		return 0, err
	}
	return len(snap.byIP), nil
}

func (v *View) current() (*snapshot, error) {
	g, err := v.gen.read()
	if err != nil {
		return nil, err
	}
	if snap := v.cur.Load(); snap != nil && snap.gen == g {
		return snap, nil
	}
	return v.reload()
}

func (v *View) reload() (*snapshot, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	// Read the counter before the data: a write that lands in between makes
	// the next Lookup reload again, never the other way round.
	g, err := v.gen.read()
	if err != nil {
		return nil, err
	}
	if snap := v.cur.Load(); snap != nil && snap.gen == g {
		return snap, nil // another goroutine reloaded while we waited
	}
	byIP := make(map[netip.Addr]Binding)
	err = read(v.dir, v.timeout, func(tx *Tx) error {
		return tx.ForEach(func(b Binding) error {
			byIP[b.IP] = b
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("reload bindings: %w", err)
	}
	snap := &snapshot{gen: g, byIP: byIP}
	v.cur.Store(snap)
	return snap, nil
}

// Close releases the generation file.
func (v *View) Close() { v.gen.close() }
