package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
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

// generation identifies a state of the store: the counter, and the inode of
// the file holding it, so that a state directory wiped and recreated under a
// running reader (a reinstall) reads as a change even when the new counter
// happens to equal the old one.
type generation struct{ ino, n uint64 }

// generationReader keeps the generation file open so a check is one stat
// and one pread. It is safe for concurrent use.
type generationReader struct {
	path string
	mu   sync.Mutex // guards replacing f
	f    atomic.Pointer[openGeneration]
}

type openGeneration struct {
	f   *os.File
	ino uint64
}

// read returns the current generation; the zero value while no write has
// happened yet.
func (g *generationReader) read() (generation, error) {
	var st unix.Stat_t
	if err := unix.Stat(g.path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return generation{}, nil
		}
		return generation{}, fmt.Errorf("stat generation %s: %w", g.path, err)
	}
	o := g.f.Load()
	if o == nil || o.ino != st.Ino {
		var err error
		if o, err = g.open(st.Ino); err != nil || o == nil {
			return generation{}, err
		}
	}
	n, err := readCounter(o.f)
	if err != nil {
		return generation{}, fmt.Errorf("read generation %s: %w", g.path, err)
	}
	return generation{ino: o.ino, n: n}, nil
}

func (g *generationReader) open(ino uint64) (*openGeneration, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if o := g.f.Load(); o != nil && o.ino == ino {
		return o, nil
	}
	f, err := os.Open(g.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open generation %s: %w", g.path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat generation %s: %w", g.path, err)
	}
	o := &openGeneration{f: f, ino: st.Ino}
	// The replaced file is left to the garbage collector's finalizer: a
	// concurrent read may still be using it.
	g.f.Store(o)
	return o, nil
}

func (g *generationReader) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if o := g.f.Swap(nil); o != nil {
		o.f.Close()
	}
}
