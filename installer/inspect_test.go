package installer

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestInspect(t *testing.T) {
	for _, tc := range []struct {
		name, file, data string
		want             Chaining
	}{
		{"chained last", "10-ptp.conflist",
			`{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"ptp"},{"type":"metabind","capabilities":{"io.kubernetes.cri.pod-annotations":true}}]}`,
			Chaining{Types: []string{"ptp", "metabind"}, Primary: "ptp", Entries: 1, Last: true, PodAnnotations: true}},
		{"not last, no capability", "10-ptp.conflist",
			`{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"ptp"},{"type":"metabind"},{"type":"portmap"}]}`,
			Chaining{Types: []string{"ptp", "metabind", "portmap"}, Primary: "ptp", Entries: 1}},
		{"not chained, .conf", "10-bridge.conf",
			`{"cniVersion":"1.1.0","name":"n","type":"bridge"}`,
			Chaining{Types: []string{"bridge"}, Primary: "bridge"}},
		{"behind cilium", "05-cilium.conflist",
			`{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"cilium-cni"},{"type":"metabind"}]}`,
			Chaining{Types: []string{"cilium-cni", "metabind"}, Primary: "cilium-cni", Entries: 1, Last: true, Bypass: bypassesNetfilter["cilium-cni"]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newNode(t)
			writeFile(t, filepath.Join(o.ConfDir, tc.file), tc.data, 0o644)
			writeFile(t, filepath.Join(o.ConfDir, "99-later.conflist"), `{"cniVersion":"1.1.0","name":"x","plugins":[{"type":"metabind"}]}`, 0o644)
			got, err := Inspect(o.ConfDir)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.File = filepath.Join(o.ConfDir, tc.file)
			if got.File != tc.want.File || got.Primary != tc.want.Primary || got.Entries != tc.want.Entries || got.Last != tc.want.Last ||
				got.PodAnnotations != tc.want.PodAnnotations || got.Bypass != tc.want.Bypass || len(got.Types) != len(tc.want.Types) {
				t.Fatalf("Inspect = %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := Inspect(t.TempDir()); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("empty conf dir: %v, want ErrNoConfig", err)
	}
}
