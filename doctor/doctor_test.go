package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

var sample = []Result{
	{Check: "plugin-binary", Status: OK, Detail: "/opt/cni/bin/metabind answers VERSION"},
	{Check: "signing-keys", Status: Fail, Detail: "/var/lib/metabind/signing-key.pem has mode 0644", Fix: "chmod 600 /var/lib/metabind/signing-key.pem"},
	{Check: "pod-dns", Status: Skipped, Detail: "no --pod-netns"},
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sample); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "CHECK") || !strings.Contains(lines[0], "STATUS") || !strings.Contains(lines[0], "FIX") {
		t.Fatalf("table:\n%s", b.String())
	}
	if !strings.Contains(lines[2], "FAIL") || !strings.HasSuffix(lines[2], "chmod 600 /var/lib/metabind/signing-key.pem") {
		t.Errorf("failing line %q: want FAIL and its fix last", lines[2])
	}
	if !strings.HasSuffix(lines[1], " -") {
		t.Errorf("ok line %q: want - for no fix", lines[1])
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, sample); err != nil {
		t.Fatal(err)
	}
	var got []Result
	if err := json.Unmarshal(b.Bytes(), &got); err != nil || len(got) != 3 || got[1] != sample[1] {
		t.Fatalf("JSON round trip: %v %+v\n%s", err, got, b.String())
	}
	if !strings.Contains(b.String(), `"status": "FAIL"`) || strings.Count(b.String(), `"fix"`) != 1 {
		t.Errorf("JSON:\n%s", b.String())
	}
}

func TestFailed(t *testing.T) {
	if !Failed(sample) {
		t.Error("a FAIL among the results: want Failed")
	}
	if Failed([]Result{sample[0], sample[2], {Status: Warn}}) {
		t.Error("ok, skipped and warn only: want not Failed")
	}
}

// On an empty node every check runs and names itself; the ones whose input
// is not configured are skipped, not failed.
func TestRunOnAnEmptyNode(t *testing.T) {
	dir := t.TempDir()
	rs := Run(context.Background(), Options{
		StateDir: filepath.Join(dir, "state"), CNIConfDir: filepath.Join(dir, "net.d"), CNIBinDir: filepath.Join(dir, "bin"),
		ConfigFile: filepath.Join(dir, "responder.yaml"), AdminAddress: "127.0.0.1:1",
	})
	if len(rs) != len(checks) {
		t.Fatalf("%d results for %d checks", len(rs), len(checks))
	}
	want := map[string]Status{"plugin-binary": Fail, "conflist": Fail, "config": Skipped, "kubernetes-pods": Skipped,
		"kubernetes-tokens": Skipped, "clock-skew": Skipped, "pod-dns": Skipped, "base-rules": Skipped, "store": Warn}
	for _, r := range rs {
		if w, ok := want[r.Check]; ok && r.Status != w {
			t.Errorf("%s: %s (%s), want %s", r.Check, r.Status, r.Detail, w)
		}
		if r.Status == Fail && r.Fix == "" {
			t.Errorf("%s fails with no fix: %s", r.Check, r.Detail)
		}
	}
}
