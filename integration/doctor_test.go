package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/metabind/metabind/doctor"
	"github.com/metabind/metabind/integration/fakedns"
	"github.com/metabind/metabind/integration/kubeapi"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/responder/issuer"
)

// doctorNode is a node laid out as `metabindctl doctor` reads one: the
// conflist in a conf dir the runtime would load, the plugin in a CNI bin
// dir, the responder's configuration.
type doctorNode struct {
	*node
	confDir, cniBinDir, config string
}

func newDoctorNode(t *testing.T, subnet string) *doctorNode {
	n := newNode(t, chain{name: "ptp", subnet: subnet})
	d := &doctorNode{node: n, confDir: filepath.Join(n.dir, "net.d"), cniBinDir: filepath.Join(n.dir, "cni-bin"), config: filepath.Join(n.dir, "responder.yaml")}
	for _, dir := range []string{d.confDir, d.cniBinDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d.writeConflist(t, n.list.Bytes)
	if err := os.Symlink(filepath.Join(binDir, "metabind"), filepath.Join(d.cniBinDir, "metabind")); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *doctorNode) writeConflist(t *testing.T, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(d.confDir, "10-metabind-test.conflist"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// doctor runs `metabindctl doctor -o json` in the node netns and returns
// its results by check, and whether it exited non-zero.
func (d *doctorNode) doctor(t *testing.T, args ...string) (map[string]doctor.Result, bool) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + d.ns.Path(), "--", filepath.Join(binDir, "metabindctl"), "doctor",
		"--state-dir", d.stateDir, "--cni-conf-dir", d.confDir, "--cni-bin-dir", d.cniBinDir, "--config", d.config, "-o", "json"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("metabindctl doctor: %v\n%s", err, stderr.String())
	}
	var list []doctor.Result
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("metabindctl doctor -o json: %v\n%s\n%s", err, out, stderr.String())
	}
	byName := map[string]doctor.Result{}
	for _, r := range list {
		byName[r.Check] = r
	}
	return byName, err != nil
}

// wantHealthy: exit 0, every check ok or skipped; it logs the table.
func (d *doctorNode) wantHealthy(t *testing.T, results map[string]doctor.Result, failed bool, mustRun ...string) {
	t.Helper()
	for _, r := range results {
		if r.Status != doctor.OK && r.Status != doctor.Skipped {
			t.Errorf("%s: %s %q (fix %q)", r.Check, r.Status, r.Detail, r.Fix)
		}
	}
	for _, name := range mustRun {
		if results[name].Status != doctor.OK {
			t.Errorf("%s: %s, want ok", name, results[name].Status)
		}
	}
	if failed {
		t.Error("doctor exited non-zero on a healthy node")
	}
}

// wantFail: the check FAILs with detail and fix holding the given words,
// and doctor exits non-zero.
func wantFail(t *testing.T, results map[string]doctor.Result, failed bool, check, detail, fix string) {
	t.Helper()
	r := results[check]
	if r.Status != doctor.Fail || !strings.Contains(r.Detail, detail) || !strings.Contains(r.Fix, fix) {
		t.Errorf("%s: %s %q (fix %q), want FAIL with %q, fix %q", check, r.Status, r.Detail, r.Fix, detail, fix)
	}
	if !failed {
		t.Errorf("doctor exited 0 with %s failing", check)
	}
}

// startDNS serves a cluster DNS at ip:53 in the node netns, with names or
// knowing nothing; ip is the pod's gateway (the node side of its veth) or
// gets added to the node's loopback. It returns a resolv.conf naming it, as
// the kubelet writes for a pod.
func (d *doctorNode) startDNS(t *testing.T, ip string, names map[string]netip.Addr) string {
	t.Helper()
	var conn net.PacketConn
	err := d.ns.Do(func(ns.NetNS) error {
		if !d.hasAddr(ip) {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			addr, _ := netlink.ParseAddr(ip + "/32")
			if err := netlink.AddrAdd(lo, addr); err != nil {
				return err
			}
		}
		var err error
		conn, err = net.ListenPacket("udp", net.JoinHostPort(ip, "53"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := fakedns.Serve(conn, names)
	t.Cleanup(func() { srv.Close() })
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver "+ip+"\noptions ndots:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// hasAddr reports whether the node netns (entered) holds ip.
func (d *doctorNode) hasAddr(ip string) bool {
	addrs, _ := netlink.AddrList(nil, netlink.FAMILY_V4)
	for _, a := range addrs {
		if a.IP.String() == ip {
			return true
		}
	}
	return false
}

// doctor on a healthy node passes (exit 0, every check ok or skipped),
// then finds each seeded fault with the right check failing and its fix:
// a signing key readable by others, metabind not last in the conflist, a
// cluster DNS that does not know metadata.google.internal, the responder
// down, a missing jump, and per-pod rules out of step with the bindings
// (where `metabindctl rules list` marks the orphan and the missing rules).
func TestDoctor(t *testing.T) {
	d := newDoctorNode(t, "10.197.120.0/24")
	responder := d.startResponder(t, responderConfig)
	api := d.addPod(t, "payments", "api-1")
	web := d.addPod(t, "web", "site-1")
	d.waitReadyz(t, http.StatusOK, "readyz check passed", 10*time.Second)
	resolv := d.startDNS(t, api.result.IPs[0].Gateway.String(), map[string]netip.Addr{"metadata.google.internal": netip.MustParseAddr(metadataIP)})
	podArgs := []string{"--pod-netns", api.ns.Path(), "--pod-resolv-conf", resolv}

	results, failed := d.doctor(t, podArgs...)
	d.wantHealthy(t, results, failed, "plugin-binary", "conflist", "datapath", "store", "base-rules", "pod-rules",
		"responder", "readyz", "signing-keys", "config", "pod-dns")
	if t.Failed() {
		t.FailNow()
	}
	table := d.run(t, filepath.Join(binDir, "metabindctl"), append([]string{"doctor", "--state-dir", d.stateDir, "--cni-conf-dir", d.confDir,
		"--cni-bin-dir", d.cniBinDir, "--config", d.config}, podArgs...)...)
	t.Logf("healthy node:\n%s", table)

	t.Run("signing key mode 0644", func(t *testing.T) {
		key := issuer.SigningKeyPath(d.stateDir)
		if err := os.Chmod(key, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(key, 0o600)
		results, failed := d.doctor(t, podArgs...)
		wantFail(t, results, failed, "signing-keys", key+" has mode 0644", "chmod 600 "+key)
	})

	t.Run("metabind not last in the conflist", func(t *testing.T) {
		var list map[string]any
		if err := json.Unmarshal(d.list.Bytes, &list); err != nil {
			t.Fatal(err)
		}
		list["plugins"] = append(list["plugins"].([]any), map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}})
		d.writeConflist(t, mustJSON(t, list))
		defer d.writeConflist(t, d.list.Bytes)
		results, failed := d.doctor(t, podArgs...)
		wantFail(t, results, failed, "conflist", "not the last plugin", "metabindctl install --cni-conf-dir "+d.confDir)
	})

	t.Run("cluster DNS without the metadata name", func(t *testing.T) {
		unaware := d.startDNS(t, "10.197.200.53", nil)
		results, failed := d.doctor(t, "--pod-netns", web.ns.Path(), "--pod-resolv-conf", unaware)
		wantFail(t, results, failed, "pod-dns", "NXDOMAIN", "deploy/coredns-metadata.yaml")
	})

	// From here on the responder is down, so its repair loop leaves the
	// damage below for doctor to find.
	responder.Process.Kill()
	responder.Wait()
	t.Run("responder down", func(t *testing.T) {
		results, failed := d.doctor(t, podArgs...)
		wantFail(t, results, failed, "responder", "no answer on "+responderAddr, "start metabind-responder")
		wantFail(t, results, failed, "readyz", adminAddr, "start metabind-responder")
	})

	t.Run("missing jump", func(t *testing.T) {
		d.flushDNATHook(t) // nat PREROUTING, or the nftables prerouting chain
		results, failed := d.doctor(t, podArgs...)
		wantFail(t, results, failed, "base-rules", "lacks metabind's rule", "metabindctl gc")
		table, _ := exec.Command("nsenter", append([]string{"--net=" + d.ns.Path(), "--", filepath.Join(binDir, "metabindctl"), "doctor",
			"--state-dir", d.stateDir, "--cni-conf-dir", d.confDir, "--cni-bin-dir", d.cniBinDir, "--config", d.config}, podArgs...)...).CombinedOutput()
		t.Logf("responder down, a jump missing:\n%s", table)
		d.run(t, filepath.Join(binDir, "metabindctl"), "--state-dir", d.stateDir, "gc")
		if results, _ := d.doctor(t, podArgs...); results["base-rules"].Status != doctor.OK {
			t.Errorf("after metabindctl gc: base-rules %s %q", results["base-rules"].Status, results["base-rules"].Detail)
		}
	})

	t.Run("rules out of step", func(t *testing.T) {
		testRulesOutOfStep(t, d, api, web, podArgs)
	})
}

// testRulesOutOfStep removes web's DNAT piece and adds one under a
// container no binding names (for an address no pod has, on api's veth),
// through the node's backend: doctor's pod-rules check and `rules list`
// both find the orphan and the binding short of its rules.
func testRulesOutOfStep(t *testing.T, d *doctorNode, api, web *pod, podArgs []string) {
	const stranger = "0123456789abcdef0123"
	var apiPiece redirect.Owned
	for _, o := range d.natOwned(t) {
		switch o.ContainerID {
		case api.rt.ContainerID:
			apiPiece = o
		case web.rt.ContainerID:
			if err := d.ns.Do(func(ns.NetNS) error { return d.backendIn(t).Delete(o) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if apiPiece.ContainerID == "" {
		t.Fatalf("api's DNAT piece not found: %v", d.natOwned(t))
	}
	strangerIP := netip.AddrFrom4([4]byte{10, 197, 200, 99})
	err := d.ns.Do(func(ns.NetNS) error {
		rd := d.backendIn(t)
		if _, err := rd.Add(redirect.Rule{HostInterface: apiPiece.Interface, IP: strangerIP, Responder: responderAddrPort, ContainerID: stranger, IfName: "eth0"}); err != nil {
			return err
		}
		owned, err := rd.ListOwned()
		for _, o := range owned {
			if o.ContainerID == stranger && o.Chain == redirect.SourceChain {
				err = errors.Join(err, rd.Delete(o)) // the orphan is a DNAT piece alone
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	results, failed := d.doctor(t, podArgs...)
	wantFail(t, results, failed, "pod-rules", fmt.Sprintf("1 binding without its rules: %s (web/site-1)", web.ip), "metabindctl gc")
	wantFail(t, results, failed, "pod-rules", "1 rule without a binding: METABIND-DNAT "+strangerIP.String()+" "+stranger[:13]+"/eth0", "")

	ctl := filepath.Join(binDir, "metabindctl")
	var listed struct {
		Rules []struct {
			Family  string
			Rule    struct{ Chain, ContainerID string }
			Binding *struct{ Namespace, Pod, ContainerID string }
		}
		Missing  []struct{ IP, Namespace, Pod string }
		Orphans  int
		Bindings int
	}
	out := d.run(t, ctl, "--state-dir", d.stateDir, "rules", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("rules list -o json: %v\n%s", err, out)
	}
	owners := map[string]int{}
	for _, r := range listed.Rules {
		switch {
		case r.Binding == nil && r.Rule.ContainerID == stranger:
			owners["orphan"]++
		case r.Binding != nil && r.Binding.ContainerID == r.Rule.ContainerID:
			owners[r.Binding.Namespace+"/"+r.Binding.Pod+" "+r.Rule.Chain]++
		default:
			t.Errorf("rule %+v listed with binding %+v", r.Rule, r.Binding)
		}
		if r.Family != "IPv4" {
			t.Errorf("rule %+v: family %q", r.Rule, r.Family)
		}
	}
	want := map[string]int{"orphan": 1, "payments/api-1 METABIND-DNAT": 1, "payments/api-1 METABIND-SOURCE": 1, "web/site-1 METABIND-SOURCE": 1}
	if fmt.Sprint(owners) != fmt.Sprint(want) || listed.Orphans != 1 || listed.Bindings != 2 ||
		len(listed.Missing) != 1 || listed.Missing[0].IP != web.ip.String() || listed.Missing[0].Pod != "site-1" {
		t.Errorf("rules list: owners %v (want %v), %d orphans, %d bindings, missing %+v\n%s", owners, want, listed.Orphans, listed.Bindings, listed.Missing, out)
	}
	table := d.run(t, ctl, "--state-dir", d.stateDir, "rules", "list")
	t.Logf("rules list:\n%s", table)
	for _, line := range strings.Split(table, "\n") {
		switch {
		case strings.Contains(line, stranger[:13]) && !strings.Contains(line, "ORPHAN"):
			t.Errorf("the orphan's line is not marked: %q", line)
		case strings.Contains(line, "site-1") && strings.Contains(line, web.ip.String()) && strings.HasPrefix(line, "IPv4    -") && !strings.Contains(line, "MISSING"):
			t.Errorf("the binding without rules is not marked: %q", line)
		}
	}
	if !strings.Contains(table, "MISSING: binding without its rules") || !strings.Contains(table, "ORPHAN: no binding") {
		t.Errorf("rules list table marks neither:\n%s", table)
	}

	// gc puts them in step again, and doctor agrees.
	d.run(t, ctl, "--state-dir", d.stateDir, "gc")
	if results, _ := d.doctor(t, podArgs...); results["pod-rules"].Status != doctor.OK {
		t.Errorf("after metabindctl gc: pod-rules %s %q", results["pod-rules"].Status, results["pod-rules"].Detail)
	}
}

// With a kubernetes: section, doctor checks the node credential against a
// real API server: it lists this node's pods, may request tokens for the
// configured audiences (by access review while no pod is on the node, by a
// dry-run TokenRequest once one is), and the clocks agree.
func TestDoctorKubernetes(t *testing.T) {
	d := newDoctorNode(t, "10.197.121.0/24")
	c := kubeapi.Start(t, t.TempDir(), kubeapi.NetNS(d.ns.Path()))
	const granted, refused = "https://vault.example", "https://not-granted.example"
	c.GrantAudience(granted)
	config := strings.Replace(responderConfig, "node: {name: node-test,", "node: {name: "+c.NodeName+",", 1) +
		fmt.Sprintf("kubernetes: {kubeconfig: %q, audiences: [%q]}\n", c.NodeKubeconfig, granted)
	if err := os.WriteFile(d.config, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	results, _ := d.doctor(t)
	for _, name := range []string{"config", "kubernetes-pods", "kubernetes-tokens", "clock-skew"} {
		if r := results[name]; r.Status != doctor.OK {
			t.Errorf("no pod on the node: %s %s %q (fix %q)", name, r.Status, r.Detail, r.Fix)
		}
	}
	if !strings.Contains(results["kubernetes-tokens"].Detail, "SelfSubjectAccessReview") {
		t.Errorf("no pod on the node: tokens checked by %q, want SelfSubjectAccessReview", results["kubernetes-tokens"].Detail)
	}

	c.CreatePod("payments", "api-1", "", c.NodeName)
	if err := os.WriteFile(d.config, []byte(strings.Replace(config, fmt.Sprintf("[%q]", granted), fmt.Sprintf("[%q, %q]", granted, refused), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	results, failed := d.doctor(t)
	wantFail(t, results, failed, "kubernetes-tokens", "dry-run TokenRequest for pod payments/api-1 refused: "+refused, "deploy/rbac.yaml")
	if strings.Contains(results["kubernetes-tokens"].Detail, granted+":") {
		t.Errorf("the granted audience is reported refused: %q", results["kubernetes-tokens"].Detail)
	}
	if r := results["kubernetes-pods"]; r.Status != doctor.OK || !strings.Contains(r.Detail, "1 seen") {
		t.Errorf("kubernetes-pods %s %q", r.Status, r.Detail)
	}
	c.GrantAudience(refused)
	deadline := time.Now().Add(10 * time.Second)
	for {
		results, _ = d.doctor(t)
		if results["kubernetes-tokens"].Status == doctor.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audience granted: kubernetes-tokens still %q", results["kubernetes-tokens"].Detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(results["kubernetes-tokens"].Detail, "dry-run TokenRequest for pod payments/api-1 granted") {
		t.Errorf("kubernetes-tokens %q", results["kubernetes-tokens"].Detail)
	}
}
