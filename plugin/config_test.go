package plugin

import (
	"strings"
	"testing"
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
	if conf.Result != nil {
		t.Fatal("Result set without prevResult")
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
