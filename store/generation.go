package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The generation file <stateDir>/bindings.gen holds a counter that every
// committed write bumps while it still holds the gate lock. A reader that
// reads a different value than it last loaded knows the bindings changed
// and reloads them; an unchanged value costs one atomic load of a shared
// mapping of the file and no lock (see generationReader). This
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

// The generation file is read through a shared, read-only mapping of its
// first 8 bytes: Linux keeps a MAP_SHARED mapping coherent with pwrite()
// through the page cache, so a check is one atomic load, no syscall. What a
// mapping cannot see is a file replaced under the same name (a state
// directory wiped and recreated): its pages stay those of the old inode.
// So the name is stat()ed again at most every inodeCheckEvery, and on every
// read while there is nothing to map (no file yet, or one shorter than the
// counter), which is the state of a new node until its first write.
//
// A replaced file is thus noticed within inodeCheckEvery rather than at the
// very next read. That window only matters when a state directory is wiped
// and a new pod is bound to an IP of the old store within it; recovering a
// damaged database keeps bindings.gen (docs/OPERATIONS.md), and its writes
// are seen at once.

// inodeCheckEvery bounds how long a reader may keep the mapping of a
// replaced generation file.
const inodeCheckEvery = 10 * time.Millisecond

// generationReader maps the generation file and re-checks which file the
// name holds at most every checkEvery. It is safe for concurrent use.
type generationReader struct {
	path       string
	checkEvery time.Duration // 0: inodeCheckEvery; tests set it

	m   atomic.Pointer[mappedGeneration]
	due atomic.Bool // the name is to be stat()ed again

	mu    sync.Mutex // guards remapping and timer
	timer *time.Timer
}

// mappedGeneration is one generation file's counter, mapped. A replaced
// mapping is unmapped by its cleanup once no read holds it.
type mappedGeneration struct {
	ctr *uint64 // the first 8 bytes of the file
	ino uint64
}

// read returns the current generation; the zero value while no write has
// happened yet.
func (g *generationReader) read() (generation, error) {
	if m := g.m.Load(); m != nil && !g.due.Load() {
		if n, ok := m.load(); ok {
			return generation{ino: m.ino, n: n}, nil
		}
	}
	return g.check()
}

// load reads the counter. A file truncated under the mapping would fault
// (SIGBUS) instead of reading zero: that is turned into ok == false, and
// the caller stat()s the file again.
func (m *mappedGeneration) load() (n uint64, ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			n, ok = 0, false
		}
	}()
	n = atomic.LoadUint64(m.ctr)
	runtime.KeepAlive(m) // the mapping lives as long as m
	return n, true
}

// check stat()s the name, maps the file it holds now if that is another
// one, and reads the counter.
func (g *generationReader) check() (generation, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var st unix.Stat_t
	if err := unix.Stat(g.path, &st); err != nil {
		g.m.Store(nil)
		if errors.Is(err, unix.ENOENT) {
			return generation{}, nil
		}
		return generation{}, fmt.Errorf("stat generation %s: %w", g.path, err)
	}
	m := g.m.Load()
	if m == nil || m.ino != st.Ino || st.Size < 8 {
		var err error
		if m, err = mapGeneration(g.path); err != nil || m == nil {
			g.m.Store(nil)
			if err != nil {
				return generation{}, err
			}
			return generation{ino: st.Ino}, nil // nothing written yet
		}
		g.m.Store(m)
	}
	g.due.Store(false)
	every := g.checkEvery
	if every == 0 {
		every = inodeCheckEvery
	}
	if g.timer == nil {
		g.timer = time.AfterFunc(every, func() { g.due.Store(true) })
	} else {
		g.timer.Reset(every)
	}
	n, ok := m.load()
	if !ok {
		g.m.Store(nil)
		return generation{ino: m.ino}, nil
	}
	return generation{ino: m.ino, n: n}, nil
}

// mapGeneration maps the counter of the file at path; nil when there is no
// file, or one too short to hold the counter (being created: its writer
// holds the gate and will write it before returning).
func mapGeneration(path string) (*mappedGeneration, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open generation %s: %w", path, err)
	}
	defer f.Close() // the mapping holds the file
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat generation %s: %w", path, err)
	}
	if st.Size < 8 {
		return nil, nil
	}
	b, err := unix.Mmap(int(f.Fd()), 0, 8, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map generation %s: %w", path, err)
	}
	m := &mappedGeneration{ctr: (*uint64)(unsafe.Pointer(&b[0])), ino: st.Ino}
	runtime.AddCleanup(m, func(b []byte) { unix.Munmap(b) }, b)
	return m, nil
}

// close stops the timer and drops the mapping (unmapped once unused).
func (g *generationReader) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.timer != nil {
		g.timer.Stop()
	}
	g.m.Store(nil)
}
