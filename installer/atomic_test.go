package installer

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestFailedWriteKeepsOldBytes: a write that fails midway, or a rename that
// fails, leaves the old file whole and no temp file behind.
func TestFailedWriteKeepsOldBytes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "10-calico.conflist")
	old := testdata(t, "10-calico.conflist")
	writeFile(t, path, old, 0o644)
	before := snapshot(t, dir)
	err := writeAtomic(path, ".10-calico.conflist.metabind-tmp*", 0o644, func(w io.Writer) error {
		w.Write([]byte(`{"cniVersion":"0.3.1","name":"k8s-pod-`))
		return errors.New("disk full")
	})
	if err == nil {
		t.Fatal("no error")
	}
	assertUnchanged(t, dir, before)

	// A rename onto a non-empty directory fails after the temp file is complete.
	blocked := filepath.Join(dir, "20-blocked.conflist")
	if err := os.MkdirAll(filepath.Join(blocked, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	before = snapshot(t, dir)
	if err := writeConf(blocked, []byte(old), 0o644); err == nil {
		t.Fatal("rename over a directory succeeded")
	}
	assertUnchanged(t, dir, before)
}

// TestWriteKeepsMode: a rewritten config keeps the mode the CNI agent gave it.
func TestWriteKeepsMode(t *testing.T) {
	o := newNode(t)
	path := filepath.Join(o.ConfDir, "10-flannel.conflist")
	writeFile(t, path, testdata(t, "10-flannel.conflist"), 0o600)
	mustInstall(t, o)
	for _, p := range []string{path, path + backupSuffix} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", p, fi.Mode(), err)
		}
	}
}
