package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/metabind/metabind/integration/fakegoogle"
	"github.com/metabind/metabind/integration/kubeapi"
)

// The address on the node where pods reach the stand-in Google API (an
// address of the test's own node netns).
const fakeGoogleAddr = "10.197.99.1"

// GCP workload identity federation in Kubernetes mode, as GKE's metadata
// server does it: the pod's pod-bound token (audience: the provider) is
// exchanged at STS, then IAM Credentials impersonates the Google service
// account its KSA names. STS, IAM and a Google API are stand-ins over TLS
// that check what Google checks: the subject token's signature against the
// API server's JWKS, issuer, audience, expiry, and which principal may
// impersonate which account.
func TestGCPWorkloadIdentityFederation(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.80.0/22"})
	n.run(t, "ip", "addr", "add", fakeGoogleAddr+"/32", "dev", "lo")
	c := kubeapi.Start(t, t.TempDir(), kubeapi.NetNS(n.ns.Path()))
	fg := fakegoogle.Start(t, t.TempDir(), fakegoogle.Options{
		ProjectNumber: "123456789012", Pool: "metabind", Provider: "cluster",
		Issuer: c.Issuer,
		JWKS: func() ([]byte, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return c.AdminClient.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
		},
		ListenAddr: "0.0.0.0:0", NetNS: n.ns.Path(), CertIPs: []net.IP{net.ParseIP(fakeGoogleAddr)},
	})
	c.GrantAudience(fg.Audience())
	ksa := func(name, gsa string, allowed bool) {
		ann := map[string]string{}
		if gsa != "" {
			ann["iam.gke.io/gcp-service-account"] = gsa
		}
		c.CreateServiceAccount("payments", name, ann)
		if allowed {
			fg.Allow(fg.Principal("system:serviceaccount:payments:"+name), gsa)
		}
	}
	ksa("api", gsaEmail, true)
	ksa("direct", "", false)
	ksa("denied", "denied@test-project.iam.gserviceaccount.com", false)
	ksa("batch", "batch@test-project.iam.gserviceaccount.com", true)
	ksa("outage", "outage@test-project.iam.gserviceaccount.com", true)
	n.startResponder(t, fmt.Sprintf(`project: {id: test-project, numericId: "424242424242"}
node: {name: %s, zone: test-zone-a}
issuer: {url: %s, tokenLifetime: 10m}
identities: []
kubernetes: {kubeconfig: %s}
gcp:
  workloadIdentityProvider: projects/123456789012/locations/global/workloadIdentityPools/metabind/providers/cluster
  stsURL: %s
  iamCredentialsURL: %s
  caFile: %s
limits: {requestsPerSecond: 10000, burst: 100000}
`, c.NodeName, issuerURL, c.NodeKubeconfig, fg.STSURL, fg.IAMURL, fg.CAFile))
	apiURL := fmt.Sprintf("https://%s:%d/storage/v1/b/test-bucket", fakeGoogleAddr, fg.Port)

	add := func(name, ksa string) *pod {
		t.Helper()
		apiPod := c.CreatePod("payments", name, ksa, c.NodeName)
		p, err := n.addPodWithID(n.list, newPodNS(t), randomID(), "payments", name, string(apiPod.UID))
		if err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		return p
	}
	// goClient runs the real Go libraries in the pod: metadata for the
	// email and ID token, oauth2/google's ComputeTokenSource for the access
	// token, and an authorized call to the Google API with it.
	goClient := func(p *pod, id bool) sdkAnswer {
		t.Helper()
		cmd := exec.Command("nsenter", "--net="+p.ns.Path(), "--", podClient, "-audience", grantedAudience,
			fmt.Sprintf("-id=%v", id), "-api", apiURL)
		cmd.Env = append(cmd.Environ(), "SSL_CERT_FILE="+fg.CAFile)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("podclient in %s: %v\n%s", p.name, err, out)
		}
		var a sdkAnswer
		if err := json.Unmarshal(out, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}

	t.Run("annotated KSA: the Google service account's tokens", func(t *testing.T) {
		p := add("api-1", "api")
		a := goClient(p, true)
		info, ok := fg.TokenInfo(a.AccessToken)
		if a.Email != gsaEmail || a.APIStatus != 200 || !ok || info.ServiceAccount != gsaEmail {
			t.Fatalf("email %q, API call %d, token %+v (known %v); want %s, 200, an access token of %s", a.Email, a.APIStatus, info, ok, gsaEmail, gsaEmail)
		}
		var keys jose.JSONWebKeySet
		if err := json.Unmarshal(fg.IDTokenKeys(), &keys); err != nil {
			t.Fatal(err)
		}
		claims, err := verifyFrom(a.IDToken, keys, "https://accounts.google.com", grantedAudience)
		if err != nil || claims.Email != gsaEmail {
			t.Fatalf("ID token: %v, email %q; want Google-signed for %s", err, claims.Email, gsaEmail)
		}
	})

	t.Run("KSA without annotation: the federated token, no ID token", func(t *testing.T) {
		p := add("direct-1", "direct")
		a := goClient(p, false)
		info, ok := fg.TokenInfo(a.AccessToken)
		if a.Email != "test-project.svc.id.goog" || a.APIStatus != 200 || !ok || info.ServiceAccount != "" {
			t.Fatalf("email %q, API call %d, token %+v (known %v); want the pool's name, 200, a federated token", a.Email, a.APIStatus, info, ok)
		}
		if body := p.idToken(t, grantedAudience, 404); !strings.Contains(body, "iam.gke.io/gcp-service-account") {
			t.Fatalf("ID token without the annotation: %q, want 404 naming the annotation", body)
		}
	})

	t.Run("permission denied: 403 with Google's message", func(t *testing.T) {
		p := add("denied-1", "denied")
		code, body, err := p.metadataGet("/computeMetadata/v1/instance/service-accounts/default/token")
		if err != nil || code != 403 || !strings.Contains(body, "iam.serviceAccounts.getAccessToken") {
			t.Fatalf("token for a principal IAM does not allow: %d %q %v; want 403 with Google's reason", code, body, err)
		}
	})

	t.Run("50 pods of one KSA at once: one exchange", func(t *testing.T) {
		before := fg.Calls()
		const pods = 50
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			tokens  = map[string]bool{}
			firsts  []time.Duration
			failure string
		)
		next := make(chan int, pods)
		for i := range pods {
			next <- i
		}
		close(next)
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					apiPod := c.CreatePod("payments", fmt.Sprintf("batch-%d", i), "batch", c.NodeName)
					p, err := n.addPodWithID(n.list, newPodNS(t), randomID(), "payments", apiPod.Name, string(apiPod.UID))
					if err != nil {
						mu.Lock()
						failure = err.Error()
						mu.Unlock()
						return
					}
					start := time.Now()
					code, body, err := p.metadataGet("/computeMetadata/v1/instance/service-accounts/default/token")
					took := time.Since(start)
					mu.Lock()
					if err != nil || code != 200 {
						failure = fmt.Sprintf("%s: %d %q %v", p.name, code, body, err)
					} else {
						var tok struct {
							AccessToken string `json:"access_token"`
						}
						json.Unmarshal([]byte(body), &tok)
						tokens[tok.AccessToken] = true
						firsts = append(firsts, took)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if failure != "" {
			t.Fatal(failure)
		}
		after := fg.Calls()
		slices.Sort(firsts)
		// The stand-in counts every call; the denied KSA's pod above may still
		// be refused meanwhile (a refusal is not cached: its prefetch asks
		// again), so its refused calls are not this KSA's.
		denied := after.Denied - before.Denied
		exchanges, iam := after.STS-before.STS-denied, after.AccessTokens-before.AccessTokens-denied
		minted := 0
		for _, line := range strings.Split(n.responderLog(), "\n") {
			if strings.Contains(line, `"msg":"token issued"`) && strings.Contains(line, `"serviceAccount":"batch"`) {
				minted++
			}
		}
		t.Logf("%d pods of one KSA: %d STS exchanges, %d IAM calls, %d tokens minted, %d distinct tokens served; first token after ADD p50 %v, max %v",
			pods, exchanges, iam, minted, len(tokens), firsts[len(firsts)/2], firsts[len(firsts)-1])
		if exchanges != 1 || iam != 1 || minted != 1 || len(tokens) != 1 {
			t.Fatalf("want one exchange and one token shared by the KSA's pods")
		}
	})

	t.Run("STS down: 503 with Retry-After, then recovery", func(t *testing.T) {
		fg.SetDown(true)
		p := add("outage-1", "outage")
		resp, err := nsHTTPClient(p.ns, nil).Do(metadataRequest(t, "/computeMetadata/v1/instance/service-accounts/default/token"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("token while Google is down: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		fg.SetDown(false)
		start := time.Now()
		for {
			code, _, err := p.metadataGet("/computeMetadata/v1/instance/service-accounts/default/token")
			if err == nil && code == 200 {
				break
			}
			if time.Since(start) > 45*time.Second {
				t.Fatalf("still %d (%v) 45 s after Google came back", code, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("served %v after Google came back", time.Since(start).Round(10*time.Millisecond))
	})
}

// metadataRequest is a GET of the metadata address with GCE's header.
func metadataRequest(t *testing.T, path string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+metadataIP+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Metadata-Flavor", "Google")
	return req
}

// GCP on a standalone node: the node's own issuer signs the subject token
// (the provider trusts its JWKS, as uploaded from `metabindctl keys jwks`;
// here the stand-in reads the JWKS the responder serves, as it would read
// a re-upload), the identity rule's email names the Google service
// account. Under steady load, with tokens that live 10 s (refreshed when 2 s
// remain) and a signing-key rotation mid-run, no request fails.
func TestGCPStandaloneRefreshAndKeyRotation(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.84.0/24"})
	const gsa = "api@test-project.iam.gserviceaccount.com"
	fg := fakegoogle.Start(t, t.TempDir(), fakegoogle.Options{
		ProjectNumber: "123456789012", Pool: "metabind", Provider: "node",
		Issuer: issuerURL,
		JWKS: func() ([]byte, error) {
			_, body, err := get(n.httpClient(), "http://"+responderAddr+"/openid/v1/jwks")
			return []byte(body), err
		},
		NetNS: n.ns.Path(), TokenLifetime: 10 * time.Second,
	})
	fg.Allow(fg.Principal("system:serviceaccount:payments:api"), gsa)
	n.startResponder(t, fmt.Sprintf(`project: {id: test-project, numericId: "424242424242"}
node: {name: node-test, zone: test-zone-a}
issuer: {url: %s, tokenLifetime: 10m}
identities:
  - {namespace: payments, serviceAccount: api, email: %s}
gcp:
  workloadIdentityProvider: projects/123456789012/locations/global/workloadIdentityPools/metabind/providers/node
  stsURL: %s
  iamCredentialsURL: %s
  caFile: %s
limits: {requestsPerSecond: 10000, burst: 100000}
`, issuerURL, gsa, fg.STSURL, fg.IAMURL, fg.CAFile))
	p := n.addPod(t, "payments", "api-1")

	var fails, served int
	rotated := false
	seen := map[string]bool{}
	start := time.Now()
	for time.Since(start) < 25*time.Second {
		if !rotated && time.Since(start) > 12*time.Second {
			n.run(t, filepath.Join(binDir, "metabindctl"), "--state-dir", n.stateDir, "keys", "rotate")
			rotated = true
		}
		code, body, err := p.metadataGet("/computeMetadata/v1/instance/service-accounts/default/token")
		if err != nil || code != 200 {
			fails++
			t.Logf("%v: %d %q %v", time.Since(start).Round(time.Millisecond), code, body, err)
		} else {
			var tok struct {
				AccessToken string `json:"access_token"`
			}
			json.Unmarshal([]byte(body), &tok)
			if info, ok := fg.TokenInfo(tok.AccessToken); !ok || info.ServiceAccount != gsa {
				t.Fatalf("token %+v (known %v), want a live access token of %s", info, ok, gsa)
			}
			seen[tok.AccessToken] = true
			served++
		}
		time.Sleep(20 * time.Millisecond)
	}
	calls := fg.Calls()
	t.Logf("25 s of requests, a key rotation at 12 s: %d served, %d failed; %d tokens, %d STS exchanges, %d IAM calls",
		served, fails, len(seen), calls.STS, calls.AccessTokens)
	if fails > 0 || len(seen) < 3 {
		t.Fatalf("%d failed requests and %d tokens; want none failed and the token refreshed before each expiry", fails, len(seen))
	}
}
