package plugin

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

func TestSupportedVersions(t *testing.T) {
	want := []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
	if got := SupportedVersions.SupportedVersions(); !slices.Equal(got, want) {
		t.Fatalf("SupportedVersions = %v, want %v", got, want)
	}
}

// skelRun runs funcs the way cmd/metabind does, through skel with
// SupportedVersions, for one runtime call: the CNI environment, stdin, and
// what the plugin printed.
func skelRun(t *testing.T, command, stdin string, funcs skel.CNIFuncs) (*types.Error, []byte) {
	t.Helper()
	for k, v := range map[string]string{
		"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/pod", "CNI_IFNAME": "eth0",
		"CNI_PATH": "/opt/cni/bin", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=payments;K8S_POD_NAME=api-1",
		// The netns is not opened here; skel's check that it is not the
		// plugin's own is for a real one.
		"CNI_NETNS_OVERRIDE": "1",
	} {
		t.Setenv(k, v)
	}
	dir := t.TempDir()
	in, err := os.Create(filepath.Join(dir, "stdin"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := io.WriteString(in, stdin); err != nil {
		t.Fatal(err)
	}
	in.Seek(0, io.SeekStart)
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// skel reads os.Stdin and the plugin prints to os.Stdout, as in the
	// binary; both are put back before anything else runs.
	stdinWas, stdoutWas := os.Stdin, os.Stdout
	os.Stdin, os.Stdout = in, out
	cniErr := skel.PluginMainFuncsWithError(funcs, SupportedVersions, "metabind test")
	os.Stdin, os.Stdout = stdinWas, stdoutWas
	printed, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return cniErr, printed
}

// Each verb reaches the plugin only at the versions where the spec has it:
// ADD and DEL from 0.3.0, CHECK from 0.4.0, GC and STATUS at 1.1.0. The
// others are refused with CNI error 2 before any verb runs (a GC that ran
// at 0.3.1 with an empty list would unbind every pod). Nothing below 0.3.0
// is accepted.
func TestEachVerbRunsOnlyAtVersionsThatHaveIt(t *testing.T) {
	since := map[string]string{"ADD": "0.3.0", "DEL": "0.3.0", "CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		for _, verb := range []string{"ADD", "DEL", "CHECK", "GC", "STATUS"} {
			reached := ""
			// The plugin's own verbs, each replaced by a recorder; a verb
			// Funcs left nil stays nil, and skel would answer for it.
			funcs := New().Funcs()
			record := func(name string, f func(*skel.CmdArgs) error) func(*skel.CmdArgs) error {
				if f == nil {
					return nil
				}
				return func(*skel.CmdArgs) error { reached = name; return nil }
			}
			funcs.Add, funcs.Del, funcs.Check = record("ADD", funcs.Add), record("DEL", funcs.Del), record("CHECK", funcs.Check)
			funcs.GC, funcs.Status = record("GC", funcs.GC), record("STATUS", funcs.Status)

			cniErr, _ := skelRun(t, verb, fmt.Sprintf(`{"cniVersion":%q,"name":"n","type":"metabind","cni.dev/valid-attachments":[]}`, v), funcs)
			want, _ := version.GreaterThanOrEqualTo(v, since[verb])
			switch {
			case want && (cniErr != nil || reached != verb):
				t.Errorf("%s at %s: reached %q, error %v; want it to run", verb, v, reached, cniErr)
			case !want && (reached != "" || cniErr == nil || cniErr.Code != types.ErrIncompatibleCNIVersion):
				t.Errorf("%s at %s: reached %q, error %v; want CNI error %d and no verb run", verb, v, reached, cniErr, types.ErrIncompatibleCNIVersion)
			}
		}
	}
}

// A chained plugin hands prevResult on unchanged, in the conflist's
// version: the real ADD, for a pod with nothing to bind (IPv6 only, no
// metadataAddress6), prints back exactly what it was given.
func TestAddPassesPrevResultThroughAtEveryVersion(t *testing.T) {
	const ipv6Only = `{"cniVersion": "1.1.0",
	  "interfaces": [{"name": "veth1234", "mac": "aa:bb:cc:dd:ee:01"}, {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/pod"}],
	  "ips": [{"address": "fd00::5/64", "gateway": "fd00::1", "interface": 1}],
	  "routes": [{"dst": "::/0"}],
	  "dns": {"nameservers": ["fd00::10"], "search": ["svc.cluster.local"]}}`
	for _, v := range SupportedVersions.SupportedVersions() {
		prev := resultAt(t, ipv6Only, v)
		dir := t.TempDir()
		stdin := fmt.Sprintf(`{"cniVersion":%q,"name":"n","type":"metabind","stateDir":%q,"logFile":%q,"prevResult":%s}`,
			v, filepath.Join(dir, "state"), filepath.Join(dir, "cni.log"), prev)
		cniErr, printed := skelRun(t, "ADD", stdin, New().Funcs())
		if cniErr != nil {
			t.Errorf("ADD at %s: %v", v, cniErr)
			continue
		}
		var got, want map[string]any
		if err := json.Unmarshal(printed, &got); err != nil {
			t.Fatalf("ADD at %s printed %q: %v", v, printed, err)
		}
		json.Unmarshal(prev, &want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ADD at %s printed\n%s\nwant prevResult unchanged\n%s", v, printed, prev)
		}
	}
}

// resultAt is the 1.1.0 result r as a plugin at spec version v prints it.
func resultAt(t *testing.T, r, v string) []byte {
	t.Helper()
	res, err := version.NewResult("1.1.0", []byte(r))
	if err != nil {
		t.Fatal(err)
	}
	at, err := res.GetAsVersion(v)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(at)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
