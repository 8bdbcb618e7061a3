package store

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A write by another process (the plugin) is seen by the very next Lookup,
// through the mapping alone: the name is not checked again during the test.
// The writer is this test binary run again (see TestMain's helper).
func TestLookupSeesAnotherProcessWrite(t *testing.T) {
	dir := t.TempDir()
	ip := netip.MustParseAddr("10.0.0.2")
	update(t, dir, func(tx *Tx) error { return tx.Put(binding(ip.String(), "c-0", "0")) })
	v := NewView(dir, time.Second)
	v.gen.checkEvery = time.Hour
	defer v.Close()
	if b, ok, err := v.Lookup(ip); !ok || err != nil || b.Pod != "0" {
		t.Fatalf("first Lookup = %+v %v %v", b, ok, err)
	}
	mapped := v.gen.m.Load()
	if mapped == nil {
		t.Fatal("the generation file is not mapped")
	}
	for i := 1; i <= 5; i++ {
		pod := fmt.Sprint(i)
		writeInAnotherProcess(t, dir, ip, pod)
		if b, ok, err := v.Lookup(ip); !ok || err != nil || b.Pod != pod {
			t.Fatalf("Lookup after process %d's write returned = pod %q (%v %v), want pod %s", i, b.Pod, ok, err, pod)
		}
	}
	if v.gen.m.Load() != mapped || v.gen.due.Load() {
		t.Fatal("the name was checked again: the mapping alone was not what saw the writes")
	}
}

// writerHelperEnv makes this test binary, run again, the writer of
// TestLookupSeesAnotherProcessWrite.
const writerHelperEnv = "METABIND_STORE_TEST_WRITE"

func TestMain(m *testing.M) {
	if arg := os.Getenv(writerHelperEnv); arg != "" {
		var dir, ip, pod string
		if _, err := fmt.Sscan(arg, &dir, &ip, &pod); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		st, err := Open(dir, 5*time.Second)
		if err == nil {
			err = st.Update(func(tx *Tx) error { return tx.Put(binding(ip, "c-"+pod, pod)) })
			st.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func writeInAnotherProcess(t *testing.T, dir string, ip netip.Addr, pod string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s", writerHelperEnv, dir, ip, pod))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("writer process: %v: %s", err, out)
	}
}

// A generation file replaced by another inode (here by rename, holding the
// very counter the reader last saw) reads as a new generation once the name
// is checked again, at most inodeCheckEvery later; until then the old
// mapping is what the reader holds, and it stays readable.
func TestViewNoticesAReplacedGenerationFile(t *testing.T) {
	dir := t.TempDir()
	ip := netip.MustParseAddr("10.0.0.2")
	update(t, dir, func(tx *Tx) error { return tx.Put(binding(ip.String(), "c-a", "a")) })
	v := NewView(dir, time.Second)
	defer v.Close()
	if b, ok, _ := v.Lookup(ip); !ok || b.Pod != "a" {
		t.Fatalf("before: %+v %v", b, ok)
	}
	before, err := v.gen.read()
	if err != nil || before.n == 0 {
		t.Fatalf("generation %+v %v", before, err)
	}
	// b replaces a in the database without a bump, then a file with the
	// old counter replaces the generation file: only its inode changed.
	st, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = st.db.Update(func(tx *bolt.Tx) error { return (&Tx{tx: tx}).Put(binding(ip.String(), "c-b", "b")) })
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], before.n)
	tmp := generationPath(dir) + ".new"
	if err := os.WriteFile(tmp, buf[:], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, generationPath(dir)); err != nil {
		t.Fatal(err)
	}
	waitForPod(t, v, ip, "b", "after the generation file was replaced")
	if after, _ := v.gen.read(); after.ino == before.ino || after.n != before.n {
		t.Fatalf("generation %+v -> %+v, want a new inode with the same counter", before, after)
	}
}

// A generation file missing at first, created later, and then truncated
// under the mapping: each reads as its counter (0 while there is none) and
// never faults.
func TestGenerationMissingCreatedTruncated(t *testing.T) {
	dir := t.TempDir()
	g := generationReader{path: generationPath(dir), checkEvery: time.Hour}
	defer g.close()
	if got, err := g.read(); err != nil || got != (generation{}) {
		t.Fatalf("missing: %+v %v", got, err)
	}
	if err := bumpGeneration(dir); err != nil {
		t.Fatal(err)
	}
	if got, err := g.read(); err != nil || got.n != 1 || g.m.Load() == nil {
		t.Fatalf("created: %+v %v, mapped %v", got, err, g.m.Load() != nil)
	}
	if err := bumpGeneration(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := g.read(); got.n != 2 {
		t.Fatalf("after a bump: %+v", got)
	}
	if err := os.Truncate(generationPath(dir), 0); err != nil {
		t.Fatal(err)
	}
	if got, err := g.read(); err != nil || got.n != 0 {
		t.Fatalf("truncated: %+v %v", got, err)
	}
	if err := bumpGeneration(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := g.read(); got.n != 1 {
		t.Fatalf("after a bump of the truncated file: %+v", got)
	}
}
