package installer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinaryCopy: the copy is executable, skipped when the bytes are the
// same (no write at all), redone when they differ, and leaves no temp file.
func TestBinaryCopy(t *testing.T) {
	o := newNode(t)
	writeFile(t, filepath.Join(o.ConfDir, "10-ptp.conflist"), testdata(t, "10-ptp.conflist"), 0o644)
	dst := filepath.Join(o.BinDir, "metabind")
	mustInstall(t, o)
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o755 || readString(t, dst) != readString(t, o.PluginBinary) {
		t.Fatalf("copied binary: %v %v", fi, err)
	}
	before := snapshot(t, o.BinDir)
	if r := mustInstall(t, o); !hasLine(r, dst+" is up to date") {
		t.Errorf("report %q", r.Lines)
	}
	assertUnchanged(t, o.BinDir, before)

	writeFile(t, o.PluginBinary, "\x7fELF metabind v2", 0o755)
	if r := mustInstall(t, o); !hasLine(r, "copied "+o.PluginBinary+" to "+dst) {
		t.Errorf("report %q", r.Lines)
	}
	if readString(t, dst) != "\x7fELF metabind v2" {
		t.Error("new binary not copied")
	}
	if got := snapshot(t, o.BinDir); len(got) != 1 {
		t.Errorf("bin dir holds %v, want only metabind", got)
	}
}

// TestInstallOrder: the conflist is written only after the binary is in
// place, so a failed copy leaves the config as it was.
func TestInstallOrder(t *testing.T) {
	o := newNode(t)
	writeFile(t, filepath.Join(o.ConfDir, "10-calico.conflist"), testdata(t, "10-calico.conflist"), 0o644)
	before := snapshot(t, o.ConfDir)
	o.PluginBinary = filepath.Join(t.TempDir(), "missing")
	if _, err := Install(o); err == nil || !strings.Contains(err.Error(), "plugin binary") {
		t.Fatalf("err %v", err)
	}
	assertUnchanged(t, o.ConfDir, before)
}

// TestUninstallOrder: the binary goes only after no conflist names it, so
// a conflist that cannot be unchained keeps its binary.
func TestUninstallOrder(t *testing.T) {
	o := newNode(t)
	path := filepath.Join(o.ConfDir, "10-calico.conflist")
	writeFile(t, path, testdata(t, "10-calico.conflist"), 0o644)
	mustInstall(t, o)
	writeFile(t, path, readString(t, path)+"garbage", 0o644) // names metabind, no longer parses
	if _, err := Uninstall(o); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(filepath.Join(o.BinDir, "metabind")); err != nil {
		t.Errorf("binary removed while a conflist still names metabind: %v", err)
	}
}
