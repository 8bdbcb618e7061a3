package admin

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// The taint is removed only once every check passes, and a failed removal
// is tried again until it succeeds.
func TestRemoveTaintWhenReady(t *testing.T) {
	var ready atomic.Bool
	var calls, looks atomic.Int32
	checks := []Check{pass("store"), {Name: "rules", Run: func() (string, error) {
		looks.Add(1)
		if !ready.Load() {
			return "", errors.New("not yet")
		}
		return "", nil
	}}}
	remove := func(context.Context) (bool, error) {
		if !ready.Load() {
			t.Error("remove called before every check passed")
		}
		if calls.Add(1) == 1 {
			return false, errors.New("forbidden")
		}
		return true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		RemoveTaintWhenReady(ctx, checks, 5*time.Millisecond, remove, slog.New(slog.DiscardHandler))
		close(done)
	}()
	for looks.Load() < 3 { // several looks, all not ready
		if ctx.Err() != nil {
			t.Fatal("no readiness look within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	if calls.Load() != 0 {
		t.Fatal("removed before ready")
	}
	ready.Store(true)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("not removed within 10 s")
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d attempts, want 2 (one failed, one retried)", n)
	}
}

// Ending the context ends the wait, ready or not.
func TestRemoveTaintWhenReadyStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		RemoveTaintWhenReady(ctx, []Check{fail("store", "locked")}, time.Millisecond,
			func(context.Context) (bool, error) { t.Error("removed while not ready"); return true, nil }, slog.New(slog.DiscardHandler))
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("did not return after its context ended")
	}
}
