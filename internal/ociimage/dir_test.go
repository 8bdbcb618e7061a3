package ociimage

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestLayerFromDir reads files, links and directories with their modes,
// the sticky bit of a /tmp included, and refuses a FIFO.
func TestLayerFromDir(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"usr/sbin", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/xtables-nft-multi"), []byte("elf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("xtables-nft-multi", filepath.Join(root, "usr/sbin/iptables")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	l, err := LayerFromDir(root)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]File{}
	for _, f := range l {
		got[f.Path] = f
	}
	if f := got["usr/sbin/xtables-nft-multi"]; string(f.Data) != "elf" || f.Mode != 0o755 || f.Dir || f.Link != "" {
		t.Errorf("file: %+v", f)
	}
	if f := got["usr/sbin/iptables"]; f.Link != "xtables-nft-multi" || f.Data != nil {
		t.Errorf("link: %+v", f)
	}
	if f := got["tmp"]; !f.Dir || f.Mode != 0o1777 {
		t.Errorf("tmp: dir %t mode %o, want a directory of mode 1777", f.Dir, f.Mode)
	}
	if len(got) != 5 {
		t.Errorf("%d entries, want 5 (usr, usr/sbin, two in it, tmp): %v", len(got), got)
	}

	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LayerFromDir(root); err == nil {
		t.Error("a FIFO was taken into a layer")
	}
}
