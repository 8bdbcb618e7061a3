package installer

import (
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wantEntry is what the tests chain: their PluginConf plus the capability.
const wantEntry = `{"type":"metabind","stateDir":"/var/lib/metabind","capabilities":{"io.kubernetes.cri.pod-annotations":true}}`

// newNode lays out a node: an empty conf dir, an empty bin dir and a
// metabind binary to install, as in the container image.
func newNode(t *testing.T) Options {
	t.Helper()
	root := t.TempDir()
	o := Options{
		ConfDir:      filepath.Join(root, "etc", "cni", "net.d"),
		BinDir:       filepath.Join(root, "opt", "cni", "bin"),
		PluginBinary: filepath.Join(root, "image", "metabind"),
		PluginConf:   json.RawMessage(`{"type":"metabind","stateDir":"/var/lib/metabind"}`),
	}
	for _, d := range []string{o.ConfDir, o.BinDir, filepath.Dir(o.PluginBinary)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, o.PluginBinary, "\x7fELF metabind v1", 0o755)
	return o
}

func writeFile(t *testing.T, path, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fileState is what "unchanged" means for a file.
type fileState struct {
	data  string
	mode  fs.FileMode
	mtime time.Time
}

// snapshot records every file in dir.
func snapshot(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := map[string]fileState{}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		st := fileState{mode: fi.Mode(), mtime: fi.ModTime()}
		if !e.IsDir() {
			st.data = readString(t, filepath.Join(dir, e.Name()))
		}
		s[e.Name()] = st
	}
	return s
}

func assertUnchanged(t *testing.T, dir string, before map[string]fileState) {
	t.Helper()
	if after := snapshot(t, dir); !maps.Equal(before, after) {
		t.Errorf("%s changed:\nbefore %v\nafter  %v", dir, before, after)
	}
}

// pluginTypes lists a conflist's plugin types in order.
func pluginTypes(t *testing.T, path string) []string {
	t.Helper()
	c, err := parseConflist([]byte(readString(t, path)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var types []string
	for _, p := range c.plugins {
		typ, _ := typeOf(p)
		types = append(types, typ)
	}
	return types
}

func mustInstall(t *testing.T, o Options) Report {
	t.Helper()
	r, err := Install(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func hasLine(r Report, substr string) bool {
	for _, l := range r.Lines {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}
