package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// The generation file <stateDir>/bindings.gen holds a counter that every
// committed write bumps while it still holds the gate lock. A reader that
// pread()s a different value than it last loaded knows the bindings changed
// and reloads them; an unchanged value costs one syscall and no lock. This
// is how the responder sees every ADD and DEL that has returned without
// opening the database on every request.
//
// The counter is not fsynced: it only has to be seen by processes running
// now, and a responder that starts after a reboot loads everything anyway.

func generationPath(dir string) string { return dir + "/bindings.gen" }

func readCounter(f *os.File) (uint64, error) {
	var buf [8]byte
	n, err := f.ReadAt(buf[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if n < len(buf) {
		return 0, nil // new file: nothing written yet
	}
	return binary.LittleEndian.Uint64(buf[:]), nil
}

// bumpGeneration adds one to the counter. Callers hold the gate exclusively.
func bumpGeneration(dir string) error {
	path := generationPath(dir)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open generation %s: %w", path, err)
	}
	defer f.Close()
	n, err := readCounter(f)
	if err != nil {
		return fmt.Errorf("read generation %s: %w", path, err)
	}
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], n+1)
	if _, err := f.WriteAt(buf[:], 0); err != nil {
		return fmt.Errorf("write generation %s: %w", path, err)
	}
	return nil
}

// generationReader keeps the generation file open so a check is one pread.
// It is safe for concurrent use.
type generationReader struct {
	path string
	mu   sync.Mutex // guards opening f
	f    atomic.Pointer[os.File]
}

// read returns the current counter; 0 while no write has happened yet.
func (g *generationReader) read() (uint64, error) {
	f := g.f.Load()
	if f == nil {
		var err error
		if f, err = g.open(); f == nil {
			return 0, err
		}
	}
	n, err := readCounter(f)
	if err != nil {
		return 0, fmt.Errorf("read generation %s: %w", g.path, err)
	}
	return n, nil
}

func (g *generationReader) open() (*os.File, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.f.Load(); f != nil {
		return f, nil
	}
	f, err := os.Open(g.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open generation %s: %w", g.path, err)
	}
	g.f.Store(f)
	return f, nil
}

func (g *generationReader) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.f.Swap(nil); f != nil {
		f.Close()
	}
}
