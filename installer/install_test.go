package installer

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// TestRoundTripOnRealConfigs chains metabind behind the configs primary CNIs
// really write, checks the result as libcni loads it, installs again (no
// change at all), and uninstalls back to the exact original bytes.
func TestRoundTripOnRealConfigs(t *testing.T) {
	for _, tc := range []struct {
		file, chained string
		types         []string
	}{
		{"10-calico.conflist", "10-calico.conflist", []string{"calico", "bandwidth", "portmap", "metabind"}},
		{"10-flannel.conflist", "10-flannel.conflist", []string{"flannel", "portmap", "metabind"}},
		{"10-bridge.conf", "10-bridge.conflist", []string{"bridge", "metabind"}},
		{"10-ptp.conflist", "10-ptp.conflist", []string{"ptp", "portmap", "metabind"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			o := newNode(t)
			orig := testdata(t, tc.file)
			origPath := filepath.Join(o.ConfDir, tc.file)
			writeFile(t, origPath, orig, 0o640)
			chained := filepath.Join(o.ConfDir, tc.chained)

			r := mustInstall(t, o)
			if !r.Changed || !hasLine(r, "copied ") || !hasLine(r, "chained metabind into") {
				t.Errorf("report: %q", r.Lines)
			}
			// What containerd does with the dir: the first file, as a list.
			list, err := libcni.ConfListFromFile(chained)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range list.Plugins {
				got = append(got, p.Network.Type)
			}
			if !slices.Equal(got, tc.types) {
				t.Errorf("plugins %q, want %q", got, tc.types)
			}
			if last := list.Plugins[len(list.Plugins)-1].Bytes; !jsonEqual(last, []byte(wantEntry)) {
				t.Errorf("metabind's entry %s, want %s", last, wantEntry)
			}
			assertKeptVerbatim(t, tc.file, orig, readString(t, chained))
			if fi, _ := os.Stat(chained); fi.Mode().Perm() != 0o640 {
				t.Errorf("mode %v, want the original's 0640", fi.Mode())
			}
			if tc.chained != tc.file {
				if _, err := os.Stat(origPath); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the converted %s is still there: %v", tc.file, err)
				}
			}
			if b := readString(t, origPath+backupSuffix); b != orig {
				t.Errorf("backup %q, want the original bytes", b)
			}

			// Idempotent: nothing is written, not even an mtime.
			confBefore, binBefore := snapshot(t, o.ConfDir), snapshot(t, o.BinDir)
			r = mustInstall(t, o)
			if r.Changed || !hasLine(r, "already chained") || !hasLine(r, "up to date") {
				t.Errorf("second install: %q", r.Lines)
			}
			assertUnchanged(t, o.ConfDir, confBefore)
			assertUnchanged(t, o.BinDir, binBefore)

			// Uninstall gives back the original file, byte for byte, and nothing else.
			if _, err := Uninstall(o); err != nil {
				t.Fatal(err)
			}
			after := snapshot(t, o.ConfDir)
			if len(after) != 1 || after[tc.file].data != orig || after[tc.file].mode.Perm() != 0o640 {
				t.Errorf("after uninstall the conf dir holds %v, want only the original %s", after, tc.file)
			}
			if _, err := os.Stat(filepath.Join(o.BinDir, "metabind")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("binary left after uninstall: %v", err)
			}
			r, err = Uninstall(o)
			if err != nil || r.Changed {
				t.Errorf("second uninstall: %q %v", r.Lines, err)
			}
			if len(snapshot(t, o.ConfDir)) != 1 || readString(t, origPath) != orig {
				t.Error("second uninstall changed the conf dir")
			}
		})
	}
}

// assertKeptVerbatim checks that the chained file keeps every other plugin
// and top-level member: the same values (compared compactly, as bytes) and
// the top-level keys in their order.
func assertKeptVerbatim(t *testing.T, name, orig, chained string) {
	t.Helper()
	want, err := loadConf(name, []byte(orig))
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseConflist([]byte(chained))
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range want.plugins {
		if !bytes.Equal(compact(t, p), compact(t, got.plugins[i])) {
			t.Errorf("plugins[%d] changed:\n%s\n%s", i, compact(t, p), compact(t, got.plugins[i]))
		}
	}
	var keys []string
	for _, m := range got.top {
		keys = append(keys, m.key)
		if v, ok := want.top.get(m.key); ok && m.key != "plugins" && !bytes.Equal(compact(t, v), compact(t, m.value)) {
			t.Errorf("%q changed: %s -> %s", m.key, v, m.value)
		}
	}
	var wantKeys []string
	for _, m := range want.top {
		if m.key != "plugins" {
			wantKeys = append(wantKeys, m.key)
		}
	}
	if wantKeys = append(wantKeys, "plugins"); !slices.Equal(keys, wantKeys) {
		t.Errorf("top-level keys %q, want %q", keys, wantKeys)
	}
}

func compact(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestPicksTheFileTheRuntimeUses: the lexically first .conf/.conflist/.json,
// ignoring other files, our backups among them; the others stay untouched.
func TestPicksTheFileTheRuntimeUses(t *testing.T) {
	o := newNode(t)
	calico := testdata(t, "10-calico.conflist")
	for name, data := range map[string]string{
		"10-calico.conflist":                calico,
		"99-loopback.conf":                  `{"cniVersion":"1.0.0","name":"lo","type":"loopback"}`,
		"20-flannel.conflist":               testdata(t, "10-flannel.conflist"),
		"00-notes.txt":                      "not a config",
		"01-old.conflist.metabind-backup":   "{",
		"05-calico-kubeconfig":              "apiVersion: v1",
		".02-hidden.conflist.metabind-tmp1": "{",
	} {
		writeFile(t, filepath.Join(o.ConfDir, name), data, 0o644)
	}
	names, err := libcni.ConfFiles(o.ConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if names[0] != filepath.Join(o.ConfDir, "10-calico.conflist") {
		t.Fatalf("libcni's first is %s", names[0])
	}
	before := snapshot(t, o.ConfDir)
	mustInstall(t, o)
	after := snapshot(t, o.ConfDir)
	for name, st := range before {
		if name != "10-calico.conflist" && after[name] != st {
			t.Errorf("%s changed", name)
		}
	}
	if got := pluginTypes(t, filepath.Join(o.ConfDir, "10-calico.conflist")); got[len(got)-1] != "metabind" {
		t.Errorf("calico not chained: %q", got)
	}
}

func TestNoConfigYet(t *testing.T) {
	o := newNode(t)
	_, err := Install(o)
	if !errors.Is(err, ErrNoConfig) || !strings.Contains(err.Error(), "has not written its config yet") {
		t.Fatalf("err %v, want ErrNoConfig", err)
	}
	if len(snapshot(t, o.BinDir)) != 0 {
		t.Error("binary copied with no config to chain into")
	}
}

// TestMetabindIsMovedLastAndReplaced: one metabind entry, the wanted one, last.
func TestMetabindIsMovedLastAndReplaced(t *testing.T) {
	for name, conf := range map[string]string{
		"first, old entry":  `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"metabind","stateDir":"/old"},{"type":"ptp"},{"type":"portmap"}]}`,
		"last, other entry": `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"portmap"},{"type":"metabind"}]}`,
		"twice":             `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},` + wantEntry + `,{"type":"portmap"},` + wantEntry + `]}`,
		"wanted, not last":  `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},` + wantEntry + `,{"type":"portmap"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			o := newNode(t)
			path := filepath.Join(o.ConfDir, "10-net.conflist")
			writeFile(t, path, conf, 0o644)
			if r := mustInstall(t, o); !hasLine(r, "chained metabind into") {
				t.Errorf("report %q", r.Lines)
			}
			c, err := parseConflist([]byte(readString(t, path)))
			if err != nil {
				t.Fatal(err)
			}
			if got := pluginTypes(t, path); !slices.Equal(got, []string{"ptp", "portmap", "metabind"}) {
				t.Errorf("plugins %q", got)
			}
			if !jsonEqual(c.plugins[2], []byte(wantEntry)) {
				t.Errorf("entry %s", c.plugins[2])
			}
		})
	}
}

// TestMalformedConfigIsRefusedUntouched: the error names the file and the
// problem; neither the conf dir nor the bin dir changes.
func TestMalformedConfigIsRefusedUntouched(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"10-a.conflist", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}`, "EOF"},
		{"10-a.conflist", `{"cniVersion":"1.0.0","name":"n","plugins":{"type":"ptp"}}`, `"plugins" is not an array`},
		{"10-a.conflist", `{"name":"n","plugins":[{"type":"ptp"}]}`, `no "cniVersion"`},
		{"10-a.conflist", `{"cniVersion":"","name":"n","plugins":[{"type":"ptp"}]}`, `empty "cniVersion"`},
		{"10-a.conflist", `{"cniVersion":"1.0.0","plugins":[{"type":"ptp"}]}`, `no "name"`},
		{"10-a.conflist", `{"cniVersion":"1.0.0","name":"n","plugins":[]}`, `"plugins" is empty`},
		{"10-a.conflist", `{"cniVersion":"1.0.0","name":"n","plugins":[{"ipMasq":true}]}`, `plugins[0]: no "type"`},
		{"10-a.conflist", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]} {}`, "data after"},
		{"10-a.conflist", `[1,2]`, "not a JSON object"},
		{"10-a.conf", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]}`, `no "type"`},
		{"10-a.json", `{"cniVersion":1,"name":"n","type":"bridge"}`, `"cniVersion" is not a string`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			o := newNode(t)
			path := filepath.Join(o.ConfDir, tc.name)
			writeFile(t, path, tc.data, 0o644)
			before := snapshot(t, o.ConfDir)
			_, err := Install(o)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one naming %s and %q", err, path, tc.want)
			}
			assertUnchanged(t, o.ConfDir, before)
			if len(snapshot(t, o.BinDir)) != 0 {
				t.Error("binary copied for a config that was refused")
			}
		})
	}
}

func TestPluginConf(t *testing.T) {
	o := newNode(t)
	writeFile(t, filepath.Join(o.ConfDir, "10-ptp.conflist"), testdata(t, "10-ptp.conflist"), 0o644)
	for conf, want := range map[string]string{
		`{"type":"bridge"}`:                      `"type" must be "metabind"`,
		`{"stateDir":"/x"}`:                      `"type" must be "metabind"`,
		`["metabind"]`:                           "not a JSON object",
		`{"type":"metabind","capabilities":[1]}`: `"capabilities" is not an object`,
	} {
		o.PluginConf = json.RawMessage(conf)
		if _, err := Install(o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", conf, err, want)
		}
	}
	// Capabilities the conf gives are kept; ours is added.
	got, err := entry(json.RawMessage(`{"type":"metabind","capabilities":{"portMappings":false},"logFile":"/var/log/m.log"}`))
	want := `{"type":"metabind","capabilities":{"portMappings":false,"io.kubernetes.cri.pod-annotations":true},"logFile":"/var/log/m.log"}`
	if err != nil || string(got) != want {
		t.Errorf("entry %s %v, want %s", got, err, want)
	}
	if got, _ := entry(nil); string(got) != `{"type":"metabind","capabilities":{"io.kubernetes.cri.pod-annotations":true}}` {
		t.Errorf("default entry %s", got)
	}
}

// TestCiliumNeedsForce: a primary whose datapath bypasses netfilter is
// refused without changing anything; --force chains with a warning.
func TestCiliumNeedsForce(t *testing.T) {
	o := newNode(t)
	path := filepath.Join(o.ConfDir, "05-cilium.conflist")
	writeFile(t, path, `{"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni","enable-debug":false}]}`, 0o644)
	before := snapshot(t, o.ConfDir)
	_, err := Install(o)
	if err == nil || !strings.Contains(err.Error(), "bypasses netfilter") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("err %v", err)
	}
	assertUnchanged(t, o.ConfDir, before)
	o.Force = true
	r := mustInstall(t, o)
	if !hasLine(r, "warning: chaining metabind behind cilium-cni anyway") {
		t.Errorf("report %q", r.Lines)
	}
	if got := pluginTypes(t, path); !slices.Equal(got, []string{"cilium-cni", "metabind"}) {
		t.Errorf("plugins %q", got)
	}
}

// TestConvertRefusedWhenItWouldLoseFirstPlace: 10-a.conf cannot become
// 10-a.conflist when another file sorts between them (or is that file).
func TestConvertRefusedWhenItWouldLoseFirstPlace(t *testing.T) {
	for _, other := range []string{"10-a.conflist", "10-a.confa.json"} {
		o := newNode(t)
		writeFile(t, filepath.Join(o.ConfDir, "10-a.conf"), testdata(t, "10-bridge.conf"), 0o644)
		writeFile(t, filepath.Join(o.ConfDir, other), testdata(t, "10-ptp.conflist"), 0o644)
		before := snapshot(t, o.ConfDir)
		if _, err := Install(o); err == nil || !strings.Contains(err.Error(), other+" is in the way") {
			t.Errorf("%s: err %v", other, err)
		}
		assertUnchanged(t, o.ConfDir, before)
	}
}
