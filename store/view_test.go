package store

import (
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recv waits for what a goroutine under test sends; the deadline only turns
// a hang into a failure.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case x := <-ch:
		return x
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s within 5s", what)
		panic("unreachable")
	}
}

type lookupResult struct {
	b   Binding
	ok  bool
	err error
}

func lookupAsync(v *View, ip netip.Addr) <-chan lookupResult {
	ch := make(chan lookupResult, 1)
	go func() {
		b, ok, err := v.Lookup(ip)
		ch <- lookupResult{b, ok, err}
	}()
	return ch
}

// A Lookup that read generation g is never answered from a copy made before
// g, even when it joins a reload that was already running: here the reload
// copied pod a's binding, then a's DEL and b's ADD of the same IP committed
// and returned, then b's first request came in.
func TestLookupNeverJoinsAnOlderReload(t *testing.T) {
	dir := t.TempDir()
	ip := netip.MustParseAddr("10.0.0.2")
	update(t, dir, func(tx *Tx) error { return tx.Put(binding(ip.String(), "c-a", "a")) })

	v := NewView(dir, time.Second)
	defer v.Close()
	copied, release := make(chan struct{}), make(chan struct{})
	var first sync.Once
	v.afterCopy = func() { first.Do(func() { close(copied); <-release }) }
	joined := make(chan struct{}, 8)
	v.afterJoin = func() { joined <- struct{}{} }

	early := lookupAsync(v, ip) // starts the reload, which holds a's record
	recv(t, joined, "reload started")
	recv(t, copied, "copy of the records")

	// The plugin's DEL of a and ADD of b: both commit and return while the
	// reload still holds its copy (the copy released the store's lock).
	update(t, dir, func(tx *Tx) error { return tx.Delete(ip) })
	update(t, dir, func(tx *Tx) error { return tx.Put(binding(ip.String(), "c-b", "b")) })

	late := lookupAsync(v, ip) // reads the new generation, joins the old reload
	recv(t, joined, "second Lookup joining the reload")
	close(release)

	if r := recv(t, late, "second Lookup"); r.err != nil || !r.ok || r.b.Pod != "b" {
		t.Fatalf("Lookup after b's ADD returned = pod %q (bound %v, error %v), want pod b: it was answered from a copy older than the generation it read",
			r.b.Pod, r.ok, r.err)
	}
	// The first caller asked before the writes: pod a was the truth then.
	if r := recv(t, early, "first Lookup"); r.err != nil || !r.ok || (r.b.Pod != "a" && r.b.Pod != "b") {
		t.Fatalf("first Lookup = %+v %v %v", r.b, r.ok, r.err)
	}
}

// The same guarantee under load: while one IP passes from pod to pod, no
// Lookup returns an owner older than the last ADD that had returned when
// the Lookup began. Every reload is held after its copy until the next ADD
// has returned, so requests keep arriving that read a generation newer than
// the reload running. Bounded to about a second.
func TestLookupIsNeverOlderThanAReturnedWrite(t *testing.T) {
	dir := t.TempDir()
	ip := netip.MustParseAddr("10.0.0.2")
	// Other pods' bindings make a reload's decoding outlast a commit, so that
	// ADDs return and Lookups arrive while it runs.
	update(t, dir, func(tx *Tx) error {
		for i := range 5000 {
			other := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
			if err := tx.Put(binding(other.String(), "o"+strconv.Itoa(i), "other")); err != nil {
				return err
			}
		}
		return tx.Put(binding(ip.String(), "c0", "0"))
	})
	v := NewView(dir, 2*time.Second)
	defer v.Close()
	stop := make(chan struct{})

	var returned atomic.Int64 // the owner whose ADD returned last
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				want := returned.Load()
				b, ok, err := v.Lookup(ip)
				got, _ := strconv.ParseInt(b.Pod, 10, 64)
				if err != nil || !ok || got < want {
					t.Errorf("Lookup begun after pod %d's ADD returned = pod %q (bound %v, error %v)", want, b.Pod, ok, err)
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(time.Second)
	for i := int64(1); i <= 300 && time.Now().Before(deadline); i++ {
		owner := strconv.FormatInt(i, 10)
		update(t, dir, func(tx *Tx) error { return tx.Put(binding(ip.String(), "c"+owner, owner)) })
		returned.Store(i)
	}
	close(stop)
	wg.Wait()
}
