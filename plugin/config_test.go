package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

const ptpPrevResult = `{
  "cniVersion": "1.1.0",
  "interfaces": [{"name": "veth1234", "mac": "aa:bb:cc:dd:ee:01"}, {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/pod"}],
  "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
          {"address": "fd00::5/64", "interface": 1},
          {"address": "10.9.0.5/24", "interface": 0}]
}`

func TestParseConfigDefaults(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"metabind"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.StateDir != DefaultStateDir || conf.LogFile != DefaultLogFile ||
		conf.Metadata.String() != DefaultMetadataAddress || conf.Responder.String() != DefaultResponderAddress {
		t.Fatalf("defaults not applied: %+v", conf)
	}
	if *conf.LogMaxSizeMB != DefaultLogMaxSizeMB || *conf.LogMaxBackups != DefaultLogMaxBackups ||
		conf.RequireResponder || conf.AdminAddress != DefaultAdminAddress {
		t.Fatalf("log and responder defaults not applied: %+v", conf)
	}
	if conf.Result != nil {
		t.Fatal("Result set without prevResult")
	}
	// 0 backups is a setting, not "unset".
	conf, err = ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"metabind","logMaxBackups":0,"logMaxSizeMB":1}`))
	if err != nil || *conf.LogMaxBackups != 0 || *conf.LogMaxSizeMB != 1 {
		t.Fatalf("logMaxBackups 0: %v, %v", conf, err)
	}
}

func TestParseConfigFull(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"metabind",
		"stateDir":"/tmp/s","logFile":"/tmp/l.log","metadataAddress":"169.254.169.254:8080","responderAddress":"169.254.169.250:9",
		"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"team":"payments"}},
		"prevResult":` + ptpPrevResult + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Metadata.Port() != 8080 || conf.Responder.String() != "169.254.169.250:9" || conf.StateDir != "/tmp/s" {
		t.Fatalf("values not read: %+v", conf)
	}
	if conf.RuntimeConfig.PodAnnotations["team"] != "payments" {
		t.Fatalf("annotations: %v", conf.RuntimeConfig.PodAnnotations)
	}
	ips := podIPs(conf.Result, "eth0", false)
	if len(ips) != 1 || ips[0].String() != "10.1.0.5" {
		t.Fatalf("podIPs(eth0) = %v, want only the IPv4 address on eth0", ips)
	}
}

func TestParseConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{`{"stateDir":"relative/dir"}`, "stateDir"},
		{`{"logFile":"cni.log"}`, "logFile"},
		{`{"metadataAddress":"169.254.169.254"}`, "metadataAddress"},
		{`{"metadataAddress":"metadata.google.internal:80"}`, "metadataAddress"},
		{`{"metadataAddress":"[fd00::1]:80"}`, "metadataAddress"},
		{`{"responderAddress":"169.254.169.252:0"}`, "responderAddress"},
		{`{"responderAddress":"169.254.169.254:80"}`, "responderAddress"},
		{`{"stateDir": 5}`, "stateDir"},
		{`{"metadataAddress6":"169.254.169.254:80"}`, "metadataAddress6"},
		{`{"metadataAddress6":"[fd00:ec2::254]"}`, "metadataAddress6"},
		{`{"metadataAddress6":"[fd00:ec2::254]:80","responderAddress6":"[fd00:ec2::254]:80"}`, "responderAddress6"},
		{`{"responderAddress6":"[fd00:ec2::252]:988"}`, "responderAddress6"},
		{`{"logMaxSizeMB":0}`, "logMaxSizeMB"},
		{`{"logMaxSizeMB":1025}`, "logMaxSizeMB"},
		{`{"logMaxBackups":-1}`, "logMaxBackups"},
		{`{"logMaxBackups":101}`, "logMaxBackups"},
		{`{"adminAddress":"localhost:9988"}`, "adminAddress"},
		{`{"adminAddress":"127.0.0.1"}`, "adminAddress"},
		{`{not json`, "parse netconf"},
	} {
		_, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"metabind",` + strings.TrimPrefix(tc.conf, "{")))
		if tc.conf == `{not json` {
			_, err = ParseConfig([]byte(tc.conf))
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%s) = %v, want an error naming %q", tc.conf, err, tc.want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	a, err := ParseArgs("K8S_POD_UID=u-1;IgnoreUnknown=1;K8S_POD_NAMESPACE=payments;K8S_POD_NAME=api-1;K8S_POD_INFRA_CONTAINER_ID=abc")
	if err != nil {
		t.Fatal(err)
	}
	if a.K8S_POD_NAMESPACE != "payments" || a.K8S_POD_NAME != "api-1" || a.K8S_POD_UID != "u-1" || a.K8S_POD_INFRA_CONTAINER_ID != "abc" {
		t.Fatalf("ParseArgs = %+v", a)
	}
	// Keys for other plugins never fail the pod, IgnoreUnknown or not.
	if a, err := ParseArgs("IP=10.1.0.9;K8S_POD_NAME=web"); err != nil || a.K8S_POD_NAME != "web" {
		t.Fatalf("unknown key: %+v, %v", a, err)
	}
	if a, err := ParseArgs(""); err != nil || a.K8S_POD_NAME != "" {
		t.Fatalf("empty args: %+v, %v", a, err)
	}
	if _, err := ParseArgs("K8S_POD_NAME"); err == nil || !strings.Contains(err.Error(), "CNI_ARGS") {
		t.Fatalf("malformed args: %v", err)
	}
}

func TestBadPrevResultIsKeptForADDToRefuse(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"metabind","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"banana"}]}}`))
	if err != nil {
		t.Fatalf("a bad prevResult must not fail DEL's parse: %v", err)
	}
	if conf.Result != nil || conf.ResultErr == nil || !strings.Contains(conf.ResultErr.Error(), "prevResult") {
		t.Fatalf("Result %v, ResultErr %v", conf.Result, conf.ResultErr)
	}
}

func TestParseConfigDualStack(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"metabind","metadataAddress6":"[fd00:ec2::254]:80",
		"prevResult":` + ptpPrevResult + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Metadata6.String() != "[fd00:ec2::254]:80" || conf.Responder6.String() != DefaultResponderAddress6 {
		t.Fatalf("IPv6 addresses: %v %v", conf.Metadata6, conf.Responder6)
	}
	if ips := podIPs(conf.Result, "eth0", true); len(ips) != 2 || ips[1].String() != "fd00::5" {
		t.Fatalf("dual-stack podIPs = %v", ips)
	}
}

func TestParseConfigRefusesUnknownKeysNamingTheNearest(t *testing.T) {
	for _, tc := range []struct{ extra, want string }{
		{`"metadataAdress6":"[fd00:ec2::254]:80"`, `netconf key "metadataAdress6" is not known; did you mean "metadataAddress6"?`},
		{`"responderAdress":"169.254.169.250:9"`, `netconf key "responderAdress" is not known; did you mean "responderAddress"?`},
		{`"statedir":"/tmp/s"`, `did you mean "stateDir"?`},
		// encoding/json alone would take it for stateDir; nobody else would.
		{`"StateDir":"/tmp/s"`, `netconf key "StateDir" is not known; did you mean "stateDir"?`},
		{`"capabilites":{"io.kubernetes.cri.pod-annotations":true}`, `did you mean "capabilities"?`},
		{`"runtimeconfig":{}`, `did you mean "runtimeConfig"?`},
		{`"responderaddress":"169.254.169.250:9","metadataAddres":"169.254.169.254:80"`,
			`netconf key "metadataAddres" is not known; did you mean "metadataAddress"?; netconf key "responderaddress" is not known; did you mean "responderAddress"?`},
	} {
		// logFile in the test's directory: were the key accepted, ADD would
		// log before it failed.
		stdin := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","type":"metabind","logFile":%q,%s}`,
			filepath.Join(t.TempDir(), "cni.log"), tc.extra))
		_, err := ParseConfig(stdin)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%s) = %v, want %q", tc.extra, err, tc.want)
		}
		// What the runtime sees: CNI error 7 with that message.
		err = New().Add(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", StdinData: stdin})
		var cniErr *types.Error
		if !errors.As(err, &cniErr) || cniErr.Code != types.ErrInvalidNetworkConfig || !strings.Contains(cniErr.Msg, tc.want) {
			t.Errorf("ADD with %s = %v, want CNI error %d saying %q", tc.extra, err, types.ErrInvalidNetworkConfig, tc.want)
		}
	}
}

// Every key the CNI spec reserves or gives a meaning, that libcni injects,
// or that conflist tooling copies into a plugin's config is accepted; keys
// inside runtimeConfig, args, ipam and dns belong to others and are not
// checked.
func TestParseConfigAcceptsSpecAndRuntimeKeys(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","cniVersions":["0.3.1","1.1.0"],"name":"k8s-pod-network","type":"metabind",
		"disableCheck":true,"disableGC":false,"loadOnlyInlinedPlugins":false,"ipMasq":false,
		"capabilities":{"io.kubernetes.cri.pod-annotations":true,"portMappings":true},
		"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"team":"payments"},"portMappings":[],"someRuntimeKey":1},
		"args":{"cni":{"ips":["10.1.0.5"]},"anyone":{"x":1}},
		"ipam":{"type":"host-local","whatever":1},"dns":{"nameservers":["10.0.0.10"],"unknownDNSKey":1},
		"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}],
		"cni.dev/some-future-key":true,
		"stateDir":"/tmp/s","logFile":"/tmp/l.log","metadataAddress":"169.254.169.254:80","responderAddress":"169.254.169.252:988",
		"metadataAddress6":"[fd00:ec2::254]:80","responderAddress6":"[fd00:ec2::252]:988",
		"prevResult":` + ptpPrevResult + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.RuntimeConfig.PodAnnotations["team"] != "payments" || conf.Result == nil || len(conf.ValidAttachments) != 1 {
		t.Fatalf("values not read: %+v", conf)
	}
}

// The known keys are NetConf's json keys, read from the struct: a field
// added to it (or to types.NetConf) is known without a list to update.
func TestKnownKeysAreNetConfsJSONKeys(t *testing.T) {
	for _, key := range []string{
		"cniVersion", "name", "type", "capabilities", "ipam", "dns", "prevResult", "cni.dev/valid-attachments", // types.NetConf
		"stateDir", "metadataAddress", "responderAddress", "logFile", "metadataAddress6", "responderAddress6", "runtimeConfig",
	} {
		if !slices.Contains(knownKeys, key) {
			t.Errorf("%q is not a known key; known: %v", key, knownKeys)
		}
	}
	for _, key := range []string{"NetConf", "Metadata", "Responder", "Result", "ResultErr", "PrevResult", "RawPrevResult", "RuntimeConfig"} {
		if slices.Contains(knownKeys, key) {
			t.Errorf("%q is known, but encoding/json never reads it", key)
		}
	}
	// The rules encoding/json follows, on a struct that has each case.
	type inner struct {
		Deep string `json:"deep"`
	}
	type named struct{ X int }
	var got []string
	got = jsonKeys(reflect.TypeFor[struct {
		types.NetConf
		*inner
		named    `json:"namedEmbedded"`
		Tagged   string `json:"tagged,omitempty"`
		Untagged string
		Skipped  string `json:"-"`
		hidden   string
	}]())
	want := []string{"cniVersion", "name", "type", "capabilities", "ipam", "dns", "prevResult", "cni.dev/valid-attachments",
		"deep", "namedEmbedded", "tagged", "Untagged"}
	if !slices.Equal(got, want) {
		t.Errorf("jsonKeys = %v, want %v", got, want)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"", "abc", 3}, {"abc", "", 3}, {"stateDir", "stateDir", 0},
		{"metadataAdress6", "metadataAddress6", 1}, {"tpye", "type", 2}, {"kitten", "sitting", 3}, {"StateDir", "stateDir", 1},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// recordingExec stands in for the plugin binaries under libcni: the main
// plugin returns prevResult, and every stdin metabind would get is kept.
type recordingExec struct {
	result []byte            // what "ptp" and "metabind" answer ADD with
	stdin  map[string][]byte // metabind's stdin by CNI_COMMAND
}

func (e *recordingExec) ExecPlugin(_ context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var command string
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			command = v
		}
	}
	if filepath.Base(path) == "metabind" {
		e.stdin[command] = stdin
	}
	if command == "ADD" {
		return e.result, nil
	}
	return nil, nil
}

func (e *recordingExec) FindInPath(plugin string, _ []string) (string, error) {
	return "/fake/" + plugin, nil
}

func (e *recordingExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// What libcni really sends metabind for each verb, at each spec version,
// parses: name, cniVersion, prevResult, runtimeConfig and the GC lists
// (both spellings) that it injects are accepted.
func TestParseConfigAcceptsWhatLibcniSends(t *testing.T) {
	for _, v := range SupportedVersions.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			result := resultAt(t, ptpPrevResult, v)
			list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"` + v + `","name":"k8s-pod-network","plugins":[
				{"type":"ptp","ipMasq":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}]]}},
				{"type":"metabind","stateDir":"/var/lib/metabind","capabilities":{"io.kubernetes.cri.pod-annotations":true}}]}`))
			if err != nil {
				t.Fatal(err)
			}
			exec := &recordingExec{result: result, stdin: map[string][]byte{}}
			cni := libcni.NewCNIConfigWithCacheDir([]string{"/fake"}, t.TempDir(), exec)
			rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/run/netns/pod", IfName: "eth0",
				Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "payments"}, {"K8S_POD_NAME", "api-1"}},
				CapabilityArgs: map[string]any{PodAnnotationsCapability: map[string]string{"team": "payments"}}}
			ctx := context.Background()
			if _, err := cni.AddNetworkList(ctx, list, rt); err != nil {
				t.Fatal(err)
			}
			if err := cni.CheckNetworkList(ctx, list, rt); err != nil && !errors.Is(err, libcni.ErrorCheckNotSupp) {
				t.Fatal(err)
			}
			if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}}}); err != nil {
				t.Fatal(err)
			}
			if err := cni.GetStatusNetworkList(ctx, list); err != nil {
				t.Fatal(err)
			}
			if err := cni.DelNetworkList(ctx, list, rt); err != nil {
				t.Fatal(err)
			}

			want := []string{"ADD", "DEL"}
			if ok, _ := version.GreaterThanOrEqualTo(v, "0.4.0"); ok {
				want = append(want, "CHECK")
			}
			if ok, _ := version.GreaterThanOrEqualTo(v, "1.1.0"); ok {
				want = append(want, "GC", "STATUS")
			}
			for _, command := range want {
				stdin, ok := exec.stdin[command]
				if !ok {
					t.Errorf("libcni sent metabind no %s", command)
					continue
				}
				if _, err := ParseConfig(stdin); err != nil {
					t.Errorf("%s stdin from libcni refused: %v\n%s", command, err, stdin)
				}
			}
			// The injected keys the test is about are really there.
			for command, key := range map[string]string{"ADD": `"prevResult"`, "GC": `"cni.dev/attachments"`} {
				if stdin, ok := exec.stdin[command]; ok && !strings.Contains(string(stdin), key) {
					t.Errorf("libcni's %s stdin has no %s: %s", command, key, stdin)
				}
			}
			if stdin := exec.stdin["ADD"]; !strings.Contains(string(stdin), `"runtimeConfig"`) {
				t.Errorf("libcni's ADD stdin has no runtimeConfig: %s", stdin)
			}
			if stdin, ok := exec.stdin["GC"]; ok && !strings.Contains(string(stdin), `"cni.dev/valid-attachments"`) {
				t.Errorf("libcni's GC stdin has no cni.dev/valid-attachments: %s", stdin)
			}
		})
	}
}

// DEL goes on despite an unknown key, so a typo in the conflist cannot
// leave pods stuck in Terminating; it logs what is wrong.
func TestDelGoesOnDespiteUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "cni.log")
	stdin := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","type":"metabind","stateDir":%q,"logFile":%q,"metadataAdress6":"[fd00:ec2::254]:80"}`,
		filepath.Join(dir, "state"), logFile))
	if err := New().Del(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", StdinData: stdin}); err != nil {
		t.Fatalf("DEL with an unknown key = %v, want success", err)
	}
	log, _ := os.ReadFile(logFile)
	if !strings.Contains(string(log), `did you mean \"metadataAddress6\"?`) {
		t.Fatalf("DEL did not log the unknown key:\n%s", log)
	}
	var cniErr *types.Error
	if err := New().Check(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", StdinData: stdin}); !errors.As(err, &cniErr) || cniErr.Code != types.ErrInvalidNetworkConfig {
		t.Fatalf("CHECK with an unknown key = %v, want CNI error 7", err)
	}
}
