package integration

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/metabind/metabind/integration/kubeapi"
	"github.com/metabind/metabind/kube"
)

// adminAddr is the responder's default --admin-listen.
const adminAddr = "127.0.0.1:9988"

// adminGet asks the admin server from the node netns, where the kubelet's
// probes come from.
func (n *node) adminGet(path string) (int, string, error) {
	return get(n.httpClient(), "http://"+adminAddr+path)
}

// waitReadyz polls /readyz until it answers code with a body holding want,
// and returns the body.
func (n *node) waitReadyz(t *testing.T, code int, want string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, body, err := n.adminGet("/readyz")
		if err == nil && got == code && strings.Contains(body, want) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not %d with %q within %v: last %d %q %v", code, want, within, got, body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The admin address: the node's loopback answers the probes, listing each
// check; a bound pod reaches them nowhere (its gateway, the responder's
// address, its own loopback), and the metadata address answers /readyz and
// /healthz from the metadata handler (404), not the probes; damaged rules
// make /readyz 503 until the repair loop has put them back.
func TestAdminAddress(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.94.0/24"})
	n.startResponder(t, responderConfig)

	// Before any ADD: ready, no base to check.
	body := n.waitReadyz(t, http.StatusOK, "[+]rules ok: no bases recorded yet", 10*time.Second)
	t.Logf("/readyz before any ADD:\n%s", body)
	if code, body, err := n.adminGet("/healthz"); err != nil || code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q %v", code, body, err)
	}

	p := n.addPod(t, "payments", "api-1")
	body = n.waitReadyz(t, http.StatusOK, "[+]rules ok\n", 10*time.Second)
	want := "[+]store ok\n[+]rules ok\n[+]signing-key ok\nreadyz check passed\n"
	if body != want {
		t.Fatalf("/readyz with a base recorded:\n%s\nwant (no kubernetes check outside Kubernetes mode)\n%s", body, want)
	}

	t.Run("pods cannot reach it", func(t *testing.T) {
		gw := p.result.IPs[0].Gateway
		if gw == nil {
			t.Fatalf("ADD result has no gateway: %+v", p.result.IPs[0])
		}
		client := nsHTTPClient(p.ns, nil)
		for _, host := range []string{gw.String(), "127.0.0.1", "169.254.169.252", metadataIP} {
			for _, path := range []string{"/readyz", "/healthz", "/metrics"} {
				mustGetNothing(t, "admin port at "+host+" from the pod", client, "http://"+host+":9988"+path)
			}
		}
		// The metadata address (and the responder's, which is where it
		// leads) is the metadata handler: it has no probes.
		for _, host := range []string{metadataIP, responderAddr} {
			for _, path := range []string{"/readyz", "/healthz", "/readyz?verbose", "/metrics"} {
				resp, err := client.Get("http://" + host + path)
				if err != nil {
					t.Errorf("%s%s from the pod: %v", host, path, err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Metadata-Flavor") != "Google" ||
					strings.Contains(string(b), "[+]") || strings.TrimSpace(string(b)) == "ok" {
					t.Errorf("%s%s from the pod: %d %q (Metadata-Flavor %q), want the metadata handler's 404",
						host, path, resp.StatusCode, b, resp.Header.Get("Metadata-Flavor"))
				}
			}
		}
		// And the probes still answer on the node's loopback.
		if code, _, err := n.adminGet("/readyz"); err != nil || code != http.StatusOK {
			t.Fatalf("/readyz from the node after the pod's attempts: %d %v", code, err)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		const token = `metabind_requests_total{code="200",endpoint="token",flavour="gce"}`
		before, _ := n.metric(t, token)
		q := n.addPod(t, "payments", "api-2")
		for _, pod := range []*pod{p, q, p} {
			if code, body, err := pod.metadataGet("/computeMetadata/v1/instance/service-accounts/default/token"); err != nil || code != http.StatusOK {
				t.Fatalf("token from %s: %d %q %v", pod.name, code, body, err)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			after, _ := n.metric(t, token)
			bindings, _ := n.metric(t, "metabind_bindings")
			if after == before+3 && bindings == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/metrics: %s %v (before the requests %v, want 3 more), metabind_bindings %v (want 2 pods bound)", token, after, before, bindings)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("damaged rules are not ready until repaired", func(t *testing.T) {
		began := time.Now()
		want := n.flushInputHook(t) // metabind's jumps gone
		body := n.waitReadyz(t, http.StatusServiceUnavailable, want, 10*time.Second)
		t.Logf("/readyz %v after the INPUT hook's flush:\n%s", time.Since(began).Round(10*time.Millisecond), body)
		if !strings.HasSuffix(body, "readyz check failed\n") || !strings.Contains(body, "[+]store ok\n") {
			t.Fatalf("/readyz body:\n%s", body)
		}
		n.waitReadyz(t, http.StatusOK, "[+]rules ok\n", 10*time.Second)
		t.Logf("ready again %v after the damage", time.Since(began).Round(10*time.Millisecond))
		if problems := n.baseProblems(t); len(problems) > 0 {
			t.Fatalf("ready with a damaged base: %v", problems)
		}
		if v, _ := n.metric(t, `metabind_rule_repairs_total{kind="base"}`); v < 1 {
			t.Errorf("metabind_rule_repairs_total{kind=\"base\"} %v after the repair, want at least 1", v)
		}
	})
}

// The responder refuses an admin address that is a metadata listen
// address.
func TestAdminAddressRefusesTheMetadataAddress(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.96.0/24"})
	n.responderArgs = []string{"--admin-listen", responderAddr}
	cmdOut := n.runResponderOnce(t)
	if !strings.Contains(cmdOut, "overlaps the metadata address "+responderAddr) {
		t.Fatalf("responder with --admin-listen %s:\n%s\nwant a refusal", responderAddr, cmdOut)
	}
}

// runResponderOnce runs the responder to its exit (5 s at most) and
// returns its output.
func (n *node) runResponderOnce(t *testing.T) string {
	t.Helper()
	cfg := filepath.Join(n.dir, "once.yaml")
	if err := os.WriteFile(cfg, []byte(responderConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.ns.Path(), "--", filepath.Join(binDir, "metabind-responder"),
		"--state-dir", n.stateDir, "--listen", n.listen, "--config", cfg}, n.responderArgs...)...).CombinedOutput()
	return string(out)
}

// With --remove-startup-taint the responder removes metabind's startup
// taint from its Node, keeping the node's other taints, and only once
// every readiness check passes: it starts on a node whose base is damaged
// (not ready until the repair loop has looked again after its repair),
// and the taint is seen gone only when /readyz answers 200.
func TestStartupTaintRemovedOnceReady(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.95.0/24"})
	c := kubeapi.Start(t, t.TempDir(), kubeapi.NetNS(n.ns.Path()))
	ours := corev1.Taint{Key: kube.StartupTaint, Effect: corev1.TaintEffectNoSchedule}
	other := corev1.Taint{Key: "example.com/maintenance", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	c.SetTaints(ours, other)

	n.addPod(t, "payments", "api-1") // records the base
	n.flushInputHook(t)
	// The admin's credential stands in for the agent's ServiceAccount
	// (kube's TestTaintRemovalAgainstAPIServer runs with get and patch on
	// nodes only).
	n.responderArgs = []string{"--remove-startup-taint", "--node-name", c.NodeName, "--taint-kubeconfig", c.AdminKubeconfig}
	n.startResponder(t, kubernetesResponderConfig(c))

	sawNotReady := false
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The taint first, then readiness: a taint already gone must come
		// with a ready responder (readiness, once passed, stays here).
		taints := c.Node().Spec.Taints
		code, body, err := n.adminGet("/readyz")
		tainted := slices.ContainsFunc(taints, func(tt corev1.Taint) bool { return tt.Key == kube.StartupTaint })
		if !tainted {
			if err != nil || code != http.StatusOK {
				t.Fatalf("the taint was gone while /readyz answered %d %q %v", code, body, err)
			}
			want := "[+]store ok\n[+]rules ok\n[+]kubernetes ok\n[+]signing-key ok\nreadyz check passed\n"
			if body != want {
				t.Fatalf("/readyz in Kubernetes mode:\n%s\nwant\n%s", body, want)
			}
			if len(taints) != 1 || taints[0].Key != other.Key {
				t.Fatalf("taints after the removal: %v, want only %v", taints, other)
			}
			break
		}
		if err == nil && code == http.StatusServiceUnavailable {
			sawNotReady = true
		}
		if time.Now().After(deadline) {
			t.Fatalf("the taint is still there 30 s on; /readyz %d %q %v", code, body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !sawNotReady {
		t.Fatal("never saw the responder not ready with the taint on: the test did not test the order")
	}
	if log := n.responderLog(); strings.Count(log, "removed the startup taint") != 1 {
		t.Fatalf("want one log of the removal:\n%s", log)
	}
}

// metric is the value of one series on the admin server's /metrics, as
// Prometheus' text format writes it (labels in name order), and whether
// it is there.
func (n *node) metric(t *testing.T, series string) (float64, bool) {
	t.Helper()
	code, body, err := n.adminGet("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics from the node: %d %v", code, err)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("/metrics: %q: %v", line, err)
			}
			return f, true
		}
	}
	return 0, false
}
