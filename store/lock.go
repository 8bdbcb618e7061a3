package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrBusy means the store's lock could not be taken in the time allowed.
// The plugin reports it as CNI error 11 (try again later).
var ErrBusy = errors.New("binding store is busy")

// gate is an flock on <stateDir>/bindings.lock taken before bbolt's own
// lock on the database file.
//
// Why a second lock: bbolt polls its flock every 50 ms when it is taken, so
// a plugin that meets a reader would sleep 50 ms, and Linux flock does not
// favour writers. Every process that follows the gate polls it at a short
// interval instead, and because readers only take it briefly (the responder
// only after a write, see generation.go), a writer never waits for more than
// one short read. bbolt's lock stays in place for anything that opens the
// database directly.
type gate struct{ f *os.File }

const (
	gatePollMin = 200 * time.Microsecond
	gatePollMax = 5 * time.Millisecond
)

func lockGate(path string, exclusive bool, timeout time.Duration) (*gate, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	deadline := time.Now().Add(timeout)
	pause := gatePollMin
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &gate{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%w: %s held by another process for %v", ErrBusy, path, timeout)
		}
		time.Sleep(pause)
		if pause < gatePollMax {
			pause *= 2
		}
	}
}

// unlock releases the gate; closing the file drops the flock.
func (g *gate) unlock() error { return g.f.Close() }

// LockFile takes an flock on path (created if needed), exclusive or
// shared, waiting at most timeout (0: one try), with the same short polling
// as the store's own gate; ErrBusy when it runs out. Close the result to
// release it. The plugin guards its one-time iptables set-up with it, so
// that set-up never holds the store's lock.
func LockFile(path string, exclusive bool, timeout time.Duration) (io.Closer, error) {
	g, err := lockGate(path, exclusive, timeout)
	if err != nil {
		return nil, err
	}
	return g.f, nil
}
