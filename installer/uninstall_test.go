package installer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestUninstallKeepsLaterChanges: when the primary's config changed after
// install, uninstall writes it without metabind rather than the stale
// backup, and removes the backup; a second conflist naming metabind is
// cleaned too.
func TestUninstallKeepsLaterChanges(t *testing.T) {
	o := newNode(t)
	path := filepath.Join(o.ConfDir, "10-calico.conflist")
	writeFile(t, path, testdata(t, "10-calico.conflist"), 0o644)
	other := filepath.Join(o.ConfDir, "99-other.conflist")
	writeFile(t, other, `{"cniVersion":"1.0.0","name":"o","plugins":[{"type":"ptp"},{"type":"metabind"}]}`, 0o644)
	mustInstall(t, o)
	changed := strings.Replace(readString(t, path), `"mtu": 0`, `"mtu": 1450`, 1)
	writeFile(t, path, changed, 0o644)

	r, err := Uninstall(o)
	if err != nil {
		t.Fatal(err)
	}
	if !hasLine(r, "removed metabind from "+path) || !hasLine(r, "removed metabind from "+other) || !hasLine(r, "removed "+filepath.Join(o.BinDir, "metabind")) {
		t.Errorf("report %q", r.Lines)
	}
	got := readString(t, path)
	if !strings.Contains(got, `"mtu": 1450`) || !slices.Equal(pluginTypes(t, path), []string{"calico", "bandwidth", "portmap"}) {
		t.Errorf("uninstalled:\n%s", got)
	}
	if !slices.Equal(pluginTypes(t, other), []string{"ptp"}) {
		t.Errorf("other still chained: %q", pluginTypes(t, other))
	}
	if _, err := os.Stat(path + backupSuffix); !os.IsNotExist(err) {
		t.Errorf("backup left: %v", err)
	}
}

// TestUninstallRemovesAListOfOnlyMetabind: an empty list would break the
// runtime, so the file goes.
func TestUninstallRemovesAListOfOnlyMetabind(t *testing.T) {
	o := newNode(t)
	path := filepath.Join(o.ConfDir, "10-only.conflist")
	writeFile(t, path, `{"cniVersion":"1.0.0","name":"o","plugins":[{"type":"metabind"}]}`, 0o644)
	if r, err := Uninstall(o); err != nil || !hasLine(r, "metabind was its only plugin") {
		t.Fatalf("%q %v", r.Lines, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("file left: %v", err)
	}
}
