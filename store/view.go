package store

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/singleflight"
)

// ReadAll returns every binding it can read; List also reports the
// records it skipped.
func ReadAll(dir string, timeout time.Duration) ([]Binding, error) {
	l, err := List(dir, timeout)
	return l.Bindings, err
}

// Listing is what one read of the whole store found.
type Listing struct {
	Bindings   []Binding          // in IP order (as strings)
	Unreadable []UnreadableRecord // records skipped, in key order
}

// List returns every binding and every record it had to skip. It holds the
// store for the one read and releases it at once: readers that keep bbolt
// open read-only would block the plugin. A state directory without a
// database holds no bindings.
func List(dir string, timeout time.Duration) (Listing, error) {
	var l Listing
	err := Read(dir, timeout, func(tx *Tx) error {
		err := tx.ForEach(func(b Binding) error {
			l.Bindings = append(l.Bindings, b)
			return nil
		})
		l.Unreadable = tx.Unreadable()
		return err
	})
	return l, err
}

// Read runs fn in a read-only transaction, holding the store's lock shared
// for just that long. A state directory without a database runs nothing.
func Read(dir string, timeout time.Duration, fn func(*Tx) error) error {
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
		if _, err := readSchema(tx); err != nil {
			return err
		}
		return fn(&Tx{tx: tx})
	})
}

// View is a long-lived reader's in-memory copy of the bindings that is
// never stale: every Lookup first compares the generation counter (one load
// from a shared mapping, see generation.go) and reloads when a write has
// committed since the copy was made.
// So once a plugin's ADD or DEL has returned, every later Lookup sees it.
type View struct {
	dir     string
	timeout time.Duration
	gen     generationReader
	flight  singleflight.Group // one reload at a time, shared by its waiters
	cur     atomic.Pointer[snapshot]
	// reloads counts the reloads begun; see current for what it orders.
	reloads atomic.Uint64

	// OnCorrupt, if set, hears of every record a reload had to skip.
	OnCorrupt func(key string, err error)
	// OnReload, if set, hears of every reload that read the store: the
	// bindings it holds now, how long it took, and its error (bindings is
	// then 0). Set it before first use.
	OnReload func(bindings int, d time.Duration, err error)

	// Test seams, set only by this package's tests: afterJoin runs once a
	// caller is registered with a reload (started or joined), afterCopy
	// between a reload's copy of the records and their decoding.
	afterJoin, afterCopy func()
}

// snapshot is one copy of the bindings. Its records were read after its
// generation, so they hold at least every write that generation counts.
type snapshot struct {
	gen  generation
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

// Bindings returns the current copy's bindings by IP, as of the latest
// committed write. The map is shared and must not be written; a new map
// means the bindings changed (the responder prefetches and forgets tokens
// by it).
func (v *View) Bindings() (map[netip.Addr]Binding, error) {
	snap, err := v.current()
	if err != nil {
		return nil, err
	}
	return snap.byIP, nil
}

// Len returns how many bindings the current copy holds.
func (v *View) Len() (int, error) {
	snap, err := v.current()
	if err != nil {
		return 0, err
	}
	return len(snap.byIP), nil
}

// current returns a copy that holds every write the generation read on
// entry counts: the copy of that very generation, or one whose reload read
// the generation after this call did.
//
// Joining whatever reload is running is not enough: one that began before
// this call read the generation may have copied the records before a DEL
// and an ADD that had both returned by then, and would answer the new pod's
// request with the old pod's binding. Nor can generations be compared for
// "newer": the counter only grows within one generation file, and a state
// directory recreated under a running responder restarts it on a new
// inode. So reloads are ordered by when they began instead: reloads is
// read after the generation, and a reload numbered above it incremented it
// later still, then read the generation and the records. Reloads run one
// at a time, so the one joined by mistake is the last one begun before
// that read, and the next one begins after it: at most one reload more.
func (v *View) current() (*snapshot, error) {
	g, err := v.gen.read()
	if err != nil {
		return nil, err
	}
	if snap := v.cur.Load(); snap != nil && snap.gen == g {
		return snap, nil
	}
	begun := v.reloads.Load()
	for {
		r, err := v.reload()
		if err != nil {
			// A reload that began earlier failed: fail closed rather than
			// make this caller wait a second time.
			return nil, err
		}
		if r.snap.gen == g || r.n > begun {
			return r.snap, nil
		}
	}
}

// reloaded is what one reload hands its callers: the copy and the reload's
// number (see View.reloads).
type reloaded struct {
	snap *snapshot
	n    uint64
}

// reload makes a new copy. Concurrent callers share one reload and its
// result, error included, so a store that stays locked costs each waiting
// request one bounded wait, not one each in turn.
func (v *View) reload() (reloaded, error) {
	ch := v.flight.DoChan("reload", func() (any, error) {
		n := v.reloads.Add(1)
		// Read the counter before the data: a write that lands in between
		// makes the next Lookup reload again, never the other way round.
		g, err := v.gen.read()
		if err != nil {
			return nil, err
		}
		if snap := v.cur.Load(); snap != nil && snap.gen == g {
			return reloaded{snap, n}, nil
		}
		start := time.Now()
		// Copy the raw records under the lock and decode after releasing
		// it: the plugin waits only for the copy.
		var raw [][2][]byte
		err = Read(v.dir, v.timeout, func(tx *Tx) error {
			return tx.forEachRaw(func(k, val []byte) {
				raw = append(raw, [2][]byte{bytes.Clone(k), bytes.Clone(val)})
			})
		})
		if err != nil {
			err = fmt.Errorf("reload bindings: %w", err)
			if v.OnReload != nil {
				v.OnReload(0, time.Since(start), err)
			}
			return nil, err
		}
		if v.afterCopy != nil {
			v.afterCopy()
		}
		byIP := make(map[netip.Addr]Binding, len(raw))
		for _, kv := range raw {
			b, err := decodeBinding(kv[0], kv[1])
			if err != nil {
				// One bad record costs its IP an answer, not the node.
				if v.OnCorrupt != nil {
					v.OnCorrupt(string(kv[0]), err)
				}
				continue
			}
			if b.Released {
				continue // being taken over: unbound until its new owner is
			}
			byIP[b.IP] = b
		}
		snap := &snapshot{gen: g, byIP: byIP}
		v.cur.Store(snap)
		if v.OnReload != nil {
			v.OnReload(len(byIP), time.Since(start), nil)
		}
		return reloaded{snap, n}, nil
	})
	if v.afterJoin != nil {
		v.afterJoin()
	}
	res := <-ch
	if res.Err != nil {
		return reloaded{}, res.Err
	}
	return res.Val.(reloaded), nil
}

// Close releases the generation file's mapping.
func (v *View) Close() { v.gen.close() }
