package installer

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const bridgeConf = `{"cniVersion":"1.0.0","name":"br","type":"bridge","ipam":{"type":"host-local","subnet":"10.22.0.0/16"}}
`

// TestConversionSurvivesADeathBeforeTheConfGoes: Install died after writing
// X.conflist and before removing X.conf, so the runtime still uses X.conf;
// the next Install replaces its own earlier conversion instead of refusing
// for ever.
func TestConversionSurvivesADeathBeforeTheConfGoes(t *testing.T) {
	o := newNode(t)
	conf := filepath.Join(o.ConfDir, "10-bridge.conf")
	writeFile(t, conf, bridgeConf, 0o644)
	mustInstall(t, o)
	writeFile(t, conf, bridgeConf, 0o644) // as if the removal never happened
	mustInstall(t, o)
	if _, err := os.Stat(conf); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the .conf is still there: the runtime would use it: %v", err)
	}
	if got := pluginTypes(t, filepath.Join(o.ConfDir, "10-bridge.conflist")); !slices.Equal(got, []string{"bridge", "metabind"}) {
		t.Errorf("plugins %q", got)
	}
}

// TestPrimaryRewritesItsConf: Multus and others write their .conf again when
// it goes. Install converts the new one (its backup is the new one too), and
// uninstall gives back the primary's newest bytes.
func TestPrimaryRewritesItsConf(t *testing.T) {
	o := newNode(t)
	conf := filepath.Join(o.ConfDir, "10-bridge.conf")
	writeFile(t, conf, bridgeConf, 0o644)
	mustInstall(t, o)
	newer := strings.Replace(bridgeConf, "10.22.0.0/16", "10.99.0.0/16", 1)
	writeFile(t, conf, newer, 0o644)
	mustInstall(t, o)
	list := filepath.Join(o.ConfDir, "10-bridge.conflist")
	if !strings.Contains(readString(t, list), "10.99.0.0/16") {
		t.Fatalf("the conversion kept the old config:\n%s", readString(t, list))
	}
	if _, err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, conf); got != newer {
		t.Errorf("uninstall restored\n%s\nwant the primary's newest\n%s", got, newer)
	}
	if _, err := os.Stat(list); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the conversion is left: %v", err)
	}
}

// TestUninstallKeepsALiveNewerConf: the primary wrote its .conf again and
// no Install ran since: uninstall must not put the older backup over it.
func TestUninstallKeepsALiveNewerConf(t *testing.T) {
	o := newNode(t)
	conf := filepath.Join(o.ConfDir, "10-bridge.conf")
	writeFile(t, conf, bridgeConf, 0o644)
	mustInstall(t, o)
	newer := strings.Replace(bridgeConf, "10.22.0.0/16", "10.99.0.0/16", 1)
	writeFile(t, conf, newer, 0o644)
	if _, err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, conf); got != newer {
		t.Errorf("uninstall wrote\n%s\nover the primary's newer\n%s", got, newer)
	}
	entries, _ := os.ReadDir(o.ConfDir)
	if len(entries) != 1 {
		t.Errorf("conf dir after uninstall: %d files, want the .conf alone", len(entries))
	}
}

// TestSymlinkedConflistStaysALink: some agents manage their conflist as a
// link; the target is chained and the link kept, and uninstall gives the
// target its bytes back.
func TestSymlinkedConflistStaysALink(t *testing.T) {
	o := newNode(t)
	realDir := t.TempDir()
	target := filepath.Join(realDir, "calico.conflist")
	orig := testdata(t, "10-calico.conflist")
	writeFile(t, target, orig, 0o644)
	link := filepath.Join(o.ConfDir, "10-calico.conflist")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	mustInstall(t, o)
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced by a file (%v)", err)
	}
	if got := pluginTypes(t, target); got[len(got)-1] != "metabind" {
		t.Fatalf("target not chained: %q", got)
	}
	if _, err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, target); got != orig {
		t.Errorf("target after uninstall:\n%s", got)
	}
}

// TestAWriteRacingOursWins: the primary writes its file between our read
// and our rename; ours is refused (errConflict) and the primary's stays,
// and Install, which plans again, chains the new content.
func TestAWriteRacingOursWins(t *testing.T) {
	o := newNode(t)
	path := filepath.Join(o.ConfDir, "10-calico.conflist")
	writeFile(t, path, testdata(t, "10-calico.conflist"), 0o644)
	want, err := entry(o.PluginConf)
	if err != nil {
		t.Fatal(err)
	}
	p, err := planChain(o.ConfDir, []string{"10-calico.conflist"}, want)
	if err != nil {
		t.Fatal(err)
	}
	newer := strings.Replace(readString(t, path), `"mtu": 0`, `"mtu": 1450`, 1)
	writeFile(t, path, newer, 0o644)
	if _, _, err := p.apply(); !errors.Is(err, errConflict) {
		t.Fatalf("apply over a newer file: %v, want errConflict", err)
	}
	if readString(t, path) != newer {
		t.Fatal("the primary's write was lost")
	}
	mustInstall(t, o)
	if got := readString(t, path); !strings.Contains(got, `"mtu": 1450`) || !strings.Contains(got, `"metabind"`) {
		t.Errorf("after Install:\n%s", got)
	}
}

// TestCheck: the probe of keep-chained: fails until installed, passes
// after, fails again when the primary drops metabind.
func TestCheck(t *testing.T) {
	o := newNode(t)
	path := filepath.Join(o.ConfDir, "10-calico.conflist")
	orig := testdata(t, "10-calico.conflist")
	writeFile(t, path, orig, 0o644)
	if err := Check(o); err == nil {
		t.Fatal("Check passed before Install")
	}
	mustInstall(t, o)
	if err := Check(o); err != nil {
		t.Fatalf("Check after Install: %v", err)
	}
	writeFile(t, path, orig, 0o644)
	if err := Check(o); err == nil || !strings.Contains(err.Error(), "not chained") {
		t.Fatalf("Check after the primary dropped metabind: %v", err)
	}
}
