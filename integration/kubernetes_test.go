package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/go-jose/go-jose/v4"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/metabind/metabind/integration/kubeapi"
	"github.com/metabind/metabind/integration/kubenode"
)

// Audiences of the Kubernetes tests: one granted to system:nodes in RBAC,
// one listed in the responder's configuration but not granted.
const (
	grantedAudience    = "https://vault.example"
	notGrantedAudience = "https://not-granted.example"
	gsaEmail           = "api@test-project.iam.gserviceaccount.com"
)

// Kubernetes mode against a real kube-apiserver (Node,RBAC authorization,
// NodeRestriction) in the node netns: pods are created through the API and
// ADDed through libcni with the API object's UID, as kubelet does; the
// responder uses the node's own credential. Each pod gets an ID token of
// its own service account, signed by the cluster's issuer, bound to it.
func TestKubernetesMode(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.70.0/24"})
	c := kubeapi.Start(t, t.TempDir(), kubeapi.NetNS(n.ns.Path()))
	c.GrantAudience(grantedAudience)
	c.CreateServiceAccount("payments", "api", map[string]string{"iam.gke.io/gcp-service-account": gsaEmail})
	c.CreateServiceAccount("web", "frontend", nil)
	n.startResponder(t, kubernetesResponderConfig(c))
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal(c.JWKS(), &keys); err != nil {
		t.Fatalf("the API server's JWKS: %v", err)
	}

	// add creates the pod through the API, then ADDs it as the runtime does,
	// and times the first ID token from inside it after the ADD returned.
	var firsts []time.Duration
	add := func(namespace, name, ksa string) *pod {
		t.Helper()
		apiPod := c.CreatePod(namespace, name, ksa, c.NodeName)
		p, err := n.addPodWithID(n.list, newPodNS(t), randomID(), namespace, name, string(apiPod.UID))
		if err != nil {
			t.Fatalf("ADD %s/%s: %v", namespace, name, err)
		}
		start := time.Now()
		code, body, err := p.metadataGet("/computeMetadata/v1/instance/service-accounts/default/identity?audience=" + grantedAudience)
		if err != nil || code != 200 {
			t.Fatalf("%s/%s's first ID token: %d %q %v", namespace, name, code, body, err)
		}
		firsts = append(firsts, time.Since(start))
		return p
	}
	api := add("payments", "api-1", "api")
	site := add("web", "site-1", "frontend")

	t.Run("each pod its own service account, verified against the cluster's JWKS", func(t *testing.T) {
		for _, tc := range []struct {
			p         *pod
			ksa       string
			email     string
			goClients bool
		}{
			{api, "api", gsaEmail, true},
			{site, "frontend", "test-project.svc.id.goog", false},
		} {
			token := tc.p.idToken(t, grantedAudience, 200)
			claims, err := verifyFrom(token, keys, c.Issuer, grantedAudience)
			if err != nil {
				t.Fatalf("%s's ID token does not verify against the API server's JWKS: %v", tc.p.name, err)
			}
			want := fmt.Sprintf("system:serviceaccount:%s:%s", tc.p.namespace, tc.ksa)
			if claims.Subject != want || claims.Kubernetes.Pod.UID != tc.p.uid || claims.Kubernetes.Pod.Name != tc.p.name ||
				claims.Kubernetes.ServiceAccount.Name != tc.ksa || claims.Kubernetes.Node.Name != c.NodeName {
				t.Errorf("%s's token: sub %q pod %s/%s sa %s node %s; want %s, %s/%s, %s, %s", tc.p.name, claims.Subject,
					claims.Kubernetes.Pod.Name, claims.Kubernetes.Pod.UID, claims.Kubernetes.ServiceAccount.Name, claims.Kubernetes.Node.Name,
					want, tc.p.name, tc.p.uid, tc.ksa, c.NodeName)
			}
			if code, body, _ := tc.p.metadataGet(emailPath); code != 200 || body != tc.email {
				t.Errorf("%s's email: %d %q, want %q", tc.p.name, code, body, tc.email)
			}
			// No access token without a cloud exchange: never the node's,
			// never the node issuer's.
			code, body, _ := tc.p.metadataGet("/computeMetadata/v1/instance/service-accounts/default/token")
			if code != 404 || !strings.Contains(body, "cloud exchange") {
				t.Errorf("%s's access token: %d %q, want 404 saying no cloud exchange is configured", tc.p.name, code, body)
			}
			if tc.goClients {
				// The real Go client library in the pod.
				out, err := exec.Command("nsenter", "--net="+tc.p.ns.Path(), "--", podClient, "-audience", grantedAudience, "-access=false").CombinedOutput()
				if err != nil {
					t.Fatalf("podclient: %v\n%s", err, out)
				}
				var a sdkAnswer
				if err := json.Unmarshal(out, &a); err != nil {
					t.Fatal(err)
				}
				if a.Email != tc.email {
					t.Errorf("Go client's email %q, want %q", a.Email, tc.email)
				}
				if _, err := verifyFrom(a.IDToken, keys, c.Issuer, grantedAudience); err != nil {
					t.Errorf("Go client's ID token: %v", err)
				}
			}
		}
	})

	t.Run("first token after ADD comes from the prefetched cache", func(t *testing.T) {
		t.Logf("first ID token after ADD returned: %v (%d pods)", firsts, len(firsts))
		// A new binding alone, with no request from its pod, has its token
		// minted: the responder saw the ADD's commit and prefetched.
		apiPod := c.CreatePod("payments", "api-quiet", "api", c.NodeName)
		if _, err := n.addPodWithID(n.list, newPodNS(t), randomID(), "payments", "api-quiet", string(apiPod.UID)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for tokensIssued(n.responderLog(), string(apiPod.UID)) != 1 {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("no token prefetched for a new binding within 5 s:\n%s", n.responderLog())
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("prefetched %v after the ADD returned, before any request", time.Since(start).Round(time.Millisecond))
		// One TokenRequest per pod and audience: the prefetch's, which the
		// first request joined or found done, and every later request too.
		for _, p := range []*pod{api, site} {
			if got := tokensIssued(n.responderLog(), p.uid); got != 1 {
				t.Errorf("%s: %d tokens issued, want the one prefetched", p.name, got)
			}
		}
	})

	t.Run("churn: cache hit rate", func(t *testing.T) {
		// 20 pods come and go one after the other; each asks for its ID token
		// five times while it lives (an SDK's refreshes, several clients).
		const pods, asks = 20, 5
		before := strings.Count(n.responderLog(), `"msg":"token issued"`)
		for i := range pods {
			p := add("payments", fmt.Sprintf("churn-%d", i), "api") // its first ask
			for range asks - 1 {
				p.idToken(t, grantedAudience, 200)
			}
			n.delPod(t, p)
			c.DeletePod("payments", p.name)
		}
		minted := strings.Count(n.responderLog(), `"msg":"token issued"`) - before
		hits := pods*asks - minted
		t.Logf("churn: %d pods x %d asks, %d TokenRequests (prefetches): cache hit rate %.0f%%", pods, asks, minted, 100*float64(hits)/float64(pods*asks))
		if minted != pods {
			t.Errorf("%d tokens minted for %d pods, want one each (the prefetch)", minted, pods)
		}
		churned := firsts[len(firsts)-pods:]
		slices.Sort(churned)
		t.Logf("first ID token after ADD returned, %d pods: p50 %v, max %v", pods, churned[pods/2], churned[pods-1])
	})

	t.Run("audiences: not granted in RBAC, not configured", func(t *testing.T) {
		if body := api.idToken(t, notGrantedAudience, 403); !strings.Contains(body, "not authorized to request tokens for audience") {
			t.Errorf("a configured audience RBAC does not grant: %q, want the API's reason", body)
		}
		if body := api.idToken(t, "https://anyone.example", 403); !strings.Contains(body, "kubernetes.audiences") {
			t.Errorf("an audience not configured: %q", body)
		}
	})

	t.Run("a pod deleted and recreated under its name: the old binding is refused", func(t *testing.T) {
		old := add("payments", "api-2", "api")
		c.DeletePod("payments", "api-2")
		c.CreatePod("payments", "api-2", "api", c.NodeName) // a new UID; the old binding lingers (no DEL yet)
		pollStatus(t, old, grantedAudience, 404, 10*time.Second)
		// The request's log line says why (request lines are written in
		// batches, at most 100 ms late).
		deadline := time.Now().Add(2 * time.Second)
		for !strings.Contains(n.responderLog(), `"reason":"pod payments/api-2 (UID `+old.uid+`) was deleted`) && !strings.Contains(n.responderLog(), `"reason":"get pod payments/api-2: UID`) {
			if time.Now().After(deadline) {
				t.Fatalf("no request log line with the refusal's reason:\n%s", n.responderLog())
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("a binding whose pod is on another node is refused", func(t *testing.T) {
		other := c.CreatePod("payments", "api-elsewhere", "api", "node-2")
		p, err := n.addPodWithID(n.list, newPodNS(t), randomID(), "payments", "api-elsewhere", string(other.UID))
		if err != nil {
			t.Fatal(err)
		}
		code, body := p.identityStatus(grantedAudience)
		if code != 403 && code != 404 {
			t.Fatalf("a pod scheduled on another node: %d %q, want 403 or 404", code, body)
		}
		t.Logf("pod on another node: %d %q", code, body)
	})

	t.Run("annotation change seen within 30 s", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sa, err := c.AdminClient.CoreV1().ServiceAccounts("web").Get(ctx, "frontend", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		const newEmail = "frontend@test-project.iam.gserviceaccount.com"
		sa.Annotations = map[string]string{"iam.gke.io/gcp-service-account": newEmail}
		if _, err := c.AdminClient.CoreV1().ServiceAccounts("web").Update(ctx, sa, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for {
			if code, body, _ := site.metadataGet(emailPath); code == 200 && body == newEmail {
				break
			}
			if time.Since(start) > 35*time.Second {
				t.Fatalf("email still not %s after %v", newEmail, time.Since(start))
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("annotation change served after %v", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("API server down: cached tokens served, new pods 503, recovery without a restart", func(t *testing.T) {
		apiPod := c.CreatePod("payments", "api-late", "api", c.NodeName)
		c.StopAPIServer()
		if body := api.idToken(t, grantedAudience, 200); body == "" {
			t.Fatal("no cached token while the API is down")
		}
		late, err := n.addPodWithID(n.list, newPodNS(t), randomID(), "payments", "api-late", string(apiPod.UID))
		if err != nil {
			t.Fatal(err)
		}
		if code, body := late.identityStatus(grantedAudience); code != 503 {
			t.Fatalf("a pod ADDed while the API is down: %d %q, want 503", code, body)
		}
		c.StartAPIServer()
		pollStatus(t, late, grantedAudience, 200, 30*time.Second)
	})
}

// kubernetesResponderConfig is the test's responder configuration in
// Kubernetes mode, with the node's credential.
func kubernetesResponderConfig(c *kubeapi.Cluster) string {
	return fmt.Sprintf(`project: {id: test-project, numericId: "424242424242"}
node: {name: %s, zone: test-zone-a}
issuer: {url: %s, tokenLifetime: 10m}
identities: []
kubernetes:
  kubeconfig: %s
  audiences: [%q, %q]
  tokenLifetime: 1h
`, c.NodeName, issuerURL, c.NodeKubeconfig, grantedAudience, notGrantedAudience)
}

// idToken asks for an ID token for audience from inside p and fails unless
// the answer has status want; it returns the body.
func (p *pod) idToken(t *testing.T, audience string, want int) string {
	t.Helper()
	code, body := p.identityStatus(audience)
	if code != want {
		t.Fatalf("%s's ID token for %s: %d %q, want %d", p.name, audience, code, body, want)
	}
	return body
}

func (p *pod) identityStatus(audience string) (int, string) {
	code, body, err := p.metadataGet("/computeMetadata/v1/instance/service-accounts/default/identity?audience=" + audience)
	if err != nil {
		return 0, err.Error()
	}
	return code, body
}

// pollStatus waits until p's ID token request answers want.
func pollStatus(t *testing.T, p *pod, audience string, want int, within time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		code, body := p.identityStatus(audience)
		if code == want {
			t.Logf("%s: %d after %v", p.name, want, time.Since(start).Round(10*time.Millisecond))
			return
		}
		if time.Since(start) > within {
			t.Fatalf("%s: still %d %q after %v, want %d", p.name, code, body, within, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tokensIssued counts the audit lines of tokens minted for the pod uid.
func tokensIssued(log, uid string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"msg":"token issued"`) && strings.Contains(line, `"podUID":"`+uid+`"`) {
			n++
		}
	}
	return n
}

// Kubernetes mode with a real container runtime: a Pod created through the
// API, its sandbox run by containerd's CRI plugin with the API object's UID
// (as kubelet passes it), the binding made by containerd's CNI ADD, and the
// real Go client in the sandbox gets the cluster's ID token, bound to that
// pod, which verifies against the API server's JWKS.
func TestKubernetesModeThroughContainerd(t *testing.T) {
	requireEnv(t)
	tools := lookContainerdTools(t)
	n := newNode(t, chain{name: "ptp", subnet: "10.197.74.0/24"})
	c := kubeapi.Start(t, t.TempDir(), kubeapi.NetNS(n.ns.Path()))
	c.GrantAudience(grantedAudience)
	c.CreateServiceAccount("payments", "api", map[string]string{"iam.gke.io/gcp-service-account": gsaEmail})
	apiPod := c.CreatePod("payments", "api-cri", "api", c.NodeName)
	n.startResponder(t, kubernetesResponderConfig(c))
	cd := startContainerd(t, n, tools)
	cd.importImage(t, kubenode.BuildPauseImage(t, cd.dir))

	config := filepath.Join(t.TempDir(), "pod.json")
	podJSON := fmt.Sprintf(`{"metadata": {"name": %q, "namespace": "payments", "uid": %q, "attempt": 0},
		"linux": {"security_context": {"namespace_options": {"network": 0}}}}`, apiPod.Name, apiPod.UID)
	if err := os.WriteFile(config, []byte(podJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(cd.crictl(t, "runp", config))
	t.Cleanup(func() {
		cd.crictl(t, "stopp", id)
		cd.crictl(t, "rmp", id)
	})
	netnsPath := cd.inspectPod(t, id).netnsPath()
	podNS, err := ns.GetNS(netnsPath)
	if err != nil {
		t.Fatalf("open the sandbox's netns %s: %v", netnsPath, err)
	}
	out, err := exec.Command("nsenter", "--net="+netnsPath, "--", podClient, "-audience", grantedAudience, "-access=false").CombinedOutput()
	podNS.Close()
	if err != nil {
		t.Fatalf("podclient in the containerd sandbox: %v\n%s", err, out)
	}
	var a sdkAnswer
	if err := json.Unmarshal(out, &a); err != nil {
		t.Fatal(err)
	}
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal(c.JWKS(), &keys); err != nil {
		t.Fatal(err)
	}
	claims, err := verifyFrom(a.IDToken, keys, c.Issuer, grantedAudience)
	if err != nil {
		t.Fatalf("the sandbox's ID token does not verify against the API server's JWKS: %v", err)
	}
	if a.Email != gsaEmail || claims.Subject != "system:serviceaccount:payments:api" ||
		claims.Kubernetes.Pod.UID != string(apiPod.UID) || claims.Kubernetes.Pod.Name != apiPod.Name {
		t.Errorf("email %q, sub %q, pod %s/%s; want %s, system:serviceaccount:payments:api, %s/%s",
			a.Email, claims.Subject, claims.Kubernetes.Pod.Name, claims.Kubernetes.Pod.UID, gsaEmail, apiPod.Name, apiPod.UID)
	}
}
