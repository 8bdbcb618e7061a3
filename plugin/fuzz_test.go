package plugin

import (
	"strings"
	"testing"
)

// FuzzParseConfig: any netconf either parses into values that hold the
// invariants, or is refused with an error that names what is wrong; it
// never panics.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		`{"cniVersion":"1.1.0","name":"n","type":"metabind"}`,
		`{"cniVersion":"1.1.0","name":"n","type":"metabind","prevResult":` + ptpPrevResult + `}`,
		`{"cniVersion":"1.0.0","name":"n","type":"metabind","stateDir":"/s","logFile":"/l","metadataAddress":"169.254.169.254:80","responderAddress":"169.254.169.252:988"}`,
		`{"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"a":"b"}}}`,
		`{"metadataAddress":"[::1]:80"}`, `{"stateDir":"../x"}`, `{"prevResult":{"cniVersion":"9.9.9"}}`,
		`{"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.1/24","interface":99}]}}`,
		`null`, `[]`, `{`, "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := ParseConfig(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error with no message")
			}
			return
		}
		if !strings.HasPrefix(conf.StateDir, "/") || !strings.HasPrefix(conf.LogFile, "/") {
			t.Fatalf("relative path accepted: %q %q", conf.StateDir, conf.LogFile)
		}
		if !conf.Metadata.Addr().Is4() || conf.Metadata.Port() == 0 || !conf.Responder.Addr().Is4() || conf.Responder.Port() == 0 || conf.Metadata == conf.Responder {
			t.Fatalf("bad addresses accepted: %v %v", conf.Metadata, conf.Responder)
		}
		if conf.Result != nil {
			for _, ip := range podIPs(conf.Result, "eth0", false) {
				if !ip.Is4() {
					t.Fatalf("podIPs returned %v", ip)
				}
			}
		}
	})
}

// FuzzParseArgs: CNI_ARGS either parse or are refused; never a panic.
func FuzzParseArgs(f *testing.F) {
	for _, seed := range []string{
		"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u;K8S_POD_INFRA_CONTAINER_ID=c",
		"K8S_POD_NAME=a=b", "K8S_POD_NAME", ";;", "=", "IgnoreUnknown=0;X=1", "K8S_POD_NAME=%00",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseArgs(s)
		if err == nil && strings.Contains(string(a.K8S_POD_NAME), ";") {
			t.Fatalf("a pod name with ';' from %q", s)
		}
	})
}
