package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metabind/metabind/installer"
)

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func testNode(t *testing.T) *node {
	dir := t.TempDir()
	return &node{Options: Options{
		StateDir: filepath.Join(dir, "state"), CNIConfDir: filepath.Join(dir, "net.d"), CNIBinDir: filepath.Join(dir, "bin"),
		ConfigFile: filepath.Join(dir, "responder.yaml"), AdminAddress: "127.0.0.1:1", Timeout: DefaultTimeout,
	}}
}

func wantStatus(t *testing.T, r Result, s Status, detail string) {
	t.Helper()
	if r.Status != s || !strings.Contains(r.Detail, detail) {
		t.Fatalf("got %s %q (fix %q), want %s with %q", r.Status, r.Detail, r.Fix, s, detail)
	}
	if s == Fail && r.Fix == "" {
		t.Fatalf("FAIL %q with no fix", r.Detail)
	}
}

func TestCheckBinary(t *testing.T) {
	n := testNode(t)
	path := filepath.Join(n.CNIBinDir, "metabind")
	wantStatus(t, checkBinary(context.Background(), n), Fail, "missing")

	writeFile(t, path, "#!/bin/sh\necho '{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.0.0\",\"1.1.0\"]}'\n", 0o644)
	r := checkBinary(context.Background(), n)
	wantStatus(t, r, Fail, "not executable")
	if r.Fix != "chmod 755 "+path {
		t.Errorf("fix %q", r.Fix)
	}
	os.Chmod(path, 0o755)
	wantStatus(t, checkBinary(context.Background(), n), OK, "supports 1.0.0, 1.1.0")

	writeFile(t, path, "#!/bin/sh\necho 'not a plugin'\n", 0o755)
	wantStatus(t, checkBinary(context.Background(), n), Fail, "does not answer CNI_COMMAND=VERSION")
}

func TestCheckConflist(t *testing.T) {
	const head = `{"cniVersion":"1.1.0","name":"k8s","plugins":[`
	const caps = `"capabilities":{"io.kubernetes.cri.pod-annotations":true}`
	for _, tc := range []struct {
		name, plugins string
		status        Status
		detail        string
	}{
		{"chained last", `{"type":"ptp"},{"type":"metabind",` + caps + `}`, OK, "chained last"},
		{"not last", `{"type":"ptp"},{"type":"metabind",` + caps + `},{"type":"portmap"}`, Fail, "not the last plugin"},
		{"not chained", `{"type":"ptp"}`, Fail, "does not chain metabind"},
		{"twice", `{"type":"ptp"},{"type":"metabind"},{"type":"metabind",` + caps + `}`, Fail, "2 times"},
		{"no capability", `{"type":"ptp"},{"type":"metabind"}`, Fail, "io.kubernetes.cri.pod-annotations"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testNode(t)
			writeFile(t, filepath.Join(n.CNIConfDir, "10-k8s.conflist"), head+tc.plugins+"]}", 0o644)
			r := checkConflist(context.Background(), n)
			wantStatus(t, r, tc.status, tc.detail)
			if tc.status == Fail && !strings.Contains(r.Fix, "metabindctl install --cni-conf-dir "+n.CNIConfDir) {
				t.Errorf("fix %q: want the install command", r.Fix)
			}
		})
	}
	wantStatus(t, checkConflist(context.Background(), testNode(t)), Fail, installer.ErrNoConfig.Error())
}

func TestCheckDatapath(t *testing.T) {
	n := testNode(t)
	wantStatus(t, checkDatapath(context.Background(), n), Skipped, "no config")
	writeFile(t, filepath.Join(n.CNIConfDir, "05-cilium.conflist"), `{"cniVersion":"1.1.0","name":"cilium","plugins":[{"type":"cilium-cni"},{"type":"metabind"}]}`, 0o644)
	wantStatus(t, checkDatapath(context.Background(), n), Fail, "bypasses netfilter")
	writeFile(t, filepath.Join(n.CNIConfDir, "01-ptp.conflist"), `{"cniVersion":"1.1.0","name":"ptp","plugins":[{"type":"ptp"},{"type":"metabind"}]}`, 0o644)
	wantStatus(t, checkDatapath(context.Background(), n), OK, "primary plugin ptp")
}
