package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/metabind/metabind/integration/kubeapi"
)

const (
	grantedAudience    = "https://vault.example"
	notGrantedAudience = "https://not-granted.example"
	gsaAnnotation      = "iam.gke.io/gcp-service-account"
)

// logBuffer collects a client's logs; they are printed when the test fails
// (the informer may log after the test returned, when t.Log would panic).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// nodeClient is a Client with the node's own credential, informer not
// started.
func nodeClient(t *testing.T, c *kubeapi.Cluster) *Client {
	t.Helper()
	logs := &logBuffer{}
	kc, err := New(Config{Kubeconfig: c.NodeKubeconfig, NodeName: c.NodeName},
		slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("client log:\n%s", logs)
		}
	})
	return kc
}

// startedClient is a nodeClient whose informer has synced.
func startedClient(t *testing.T, c *kubeapi.Cluster) *Client {
	t.Helper()
	kc := nodeClient(t, c)
	// Start's context is the informer's life.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if kc.HasSynced() {
		t.Fatal("HasSynced before Start")
	}
	if err := kc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if !kc.HasSynced() {
		t.Fatal("not HasSynced once Start returned")
	}
	return kc
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	for !cond() {
		if time.Since(began) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(began)
}

func wantForbidden(t *testing.T, err error, reason string) {
	t.Helper()
	var fe *ErrForbidden
	if !errors.As(err, &fe) {
		t.Fatalf("err %v, want ErrForbidden", err)
	}
	if !strings.Contains(fe.Reason, reason) {
		t.Fatalf("reason %q, want it to contain %q", fe.Reason, reason)
	}
}

// TestAgainstAPIServer runs the client with the node's own credential
// against a real kube-apiserver (Node,RBAC authorization, NodeRestriction
// admission) and its controller-manager.
func TestAgainstAPIServer(t *testing.T) {
	c := kubeapi.Start(t, t.TempDir())
	c.GrantAudience(grantedAudience)
	c.CreateServiceAccount("team", "api", map[string]string{gsaAnnotation: "api@demo.iam.gserviceaccount.com"})
	c.CreateServiceAccount("team", "batch", nil)
	kc := startedClient(t, c)
	ctx := context.Background()

	t.Run("PodFromInformer", func(t *testing.T) {
		pod := c.CreatePod("team", "informer", "api", c.NodeName)
		waitFor(t, "informer has the pod", 10*time.Second, func() bool { return kc.cachedPod(string(pod.UID)) != nil })
		gets := kc.podGets.Load()
		got, err := kc.Pod(ctx, "team", "informer", string(pod.UID))
		if err != nil {
			t.Fatal(err)
		}
		if got.UID != pod.UID || ServiceAccountName(got) != "api" {
			t.Fatalf("pod %s/%s uid %s sa %s", got.Namespace, got.Name, got.UID, ServiceAccountName(got))
		}
		if n := kc.podGets.Load() - gets; n != 0 {
			t.Fatalf("%d GETs for a pod the informer has", n)
		}
	})

	t.Run("PodRightAfterCreation", func(t *testing.T) {
		// As a request right after the CNI ADD: never a miss, whether the
		// informer has the pod yet or the GET fallback finds it.
		gets, graces := kc.podGets.Load(), kc.podGraces.Load()
		var worst time.Duration
		for i := range 10 {
			name := fmt.Sprintf("fresh-%d", i)
			pod := c.CreatePod("team", name, "batch", c.NodeName)
			began := time.Now()
			got, err := kc.Pod(ctx, "team", name, string(pod.UID))
			if err != nil {
				t.Fatalf("%s right after creation: %v", name, err)
			}
			if got.UID != pod.UID {
				t.Fatalf("%s: uid %s, want %s", name, got.UID, pod.UID)
			}
			worst = max(worst, time.Since(began))
		}
		t.Logf("10 pods asked for right after creation: %d GETs (%d answered 403 at first), slowest answer %v",
			kc.podGets.Load()-gets, kc.podGraces.Load()-graces, worst.Round(time.Microsecond))
	})

	t.Run("PodByGETWithoutInformer", func(t *testing.T) {
		pod := c.CreatePod("team", "get", "api", c.NodeName)
		cold := nodeClient(t, c) // informer never started: every pod is a GET
		got, err := cold.Pod(ctx, "team", "get", string(pod.UID))
		if err != nil {
			t.Fatal(err)
		}
		// One GET, and one more when the Node authorizer did not know the
		// pod yet (403 for a moment after creation: the grace).
		if got.UID != pod.UID || cold.podGets.Load() != 1+cold.podGraces.Load() {
			t.Fatalf("uid %s, %d GETs (%d after a 403)", got.UID, cold.podGets.Load(), cold.podGraces.Load())
		}
	})

	t.Run("UIDMismatchIsNotFound", func(t *testing.T) {
		c.CreatePod("team", "mismatch", "api", c.NodeName)
		for _, kc := range []*Client{kc, nodeClient(t, c)} {
			_, err := kc.Pod(ctx, "team", "mismatch", "00000000-0000-0000-0000-000000000001")
			if !errors.Is(err, ErrPodNotFound) {
				t.Fatalf("err %v, want ErrPodNotFound", err)
			}
		}
		if _, err := kc.Pod(ctx, "team", "mismatch", ""); !errors.Is(err, ErrPodNotFound) {
			t.Fatalf("binding without UID: err %v, want ErrPodNotFound", err)
		}
	})

	t.Run("RecreatedPodIsNotFound", func(t *testing.T) {
		old := c.CreatePod("team", "recreated", "api", c.NodeName)
		waitFor(t, "informer has the pod", 10*time.Second, func() bool { return kc.cachedPod(string(old.UID)) != nil })
		c.DeletePod("team", "recreated")
		now := c.CreatePod("team", "recreated", "api", c.NodeName)
		// The old binding lingers: never answered with the new pod, on either path.
		for _, kc := range []*Client{kc, nodeClient(t, c)} {
			if _, err := kc.Pod(ctx, "team", "recreated", string(old.UID)); !errors.Is(err, ErrPodNotFound) {
				t.Fatalf("old UID: err %v, want ErrPodNotFound", err)
			}
		}
		if got, err := kc.Pod(ctx, "team", "recreated", string(now.UID)); err != nil || got.UID != now.UID {
			t.Fatalf("new UID: %v", err)
		}
	})

	t.Run("DeletedPodIsNotFound", func(t *testing.T) {
		gone := make(chan string, 100)
		kc.OnPodGone(func(uid string) { gone <- uid })
		pod := c.CreatePod("team", "deleted", "api", c.NodeName)
		waitFor(t, "informer has the pod", 10*time.Second, func() bool { return kc.cachedPod(string(pod.UID)) != nil })
		c.DeletePod("team", "deleted")
		deadline := time.After(10 * time.Second)
		for seen := false; !seen; {
			select {
			case uid := <-gone:
				seen = uid == string(pod.UID)
			case <-deadline:
				t.Fatal("OnPodGone not called within 10s")
			}
		}
		// The API answers a node's GET of a pod that no longer exists with
		// 403 (the Node authorizer relates nothing to it); the informer
		// saw it go, so the binding is stale: not found.
		_, err := kc.Pod(ctx, "team", "deleted", string(pod.UID))
		if !errors.Is(err, ErrPodNotFound) {
			t.Fatalf("err %v, want ErrPodNotFound", err)
		}
	})

	t.Run("PodOnAnotherNodeIsForbidden", func(t *testing.T) {
		pod := c.CreatePod("team", "elsewhere", "api", "node-2")
		began := time.Now()
		_, err := kc.Pod(ctx, "team", "elsewhere", string(pod.UID))
		wantForbidden(t, err, "no relationship found between node 'node-1' and this object")
		t.Logf("403 after %v (grace for a pod the API has not related yet)", time.Since(began).Round(time.Millisecond))
	})

	t.Run("ServiceAccountCachedAndRefreshed", func(t *testing.T) {
		c.CreatePod("team", "sa-reader", "api", c.NodeName) // the node may GET the accounts of its pods
		sac := nodeClient(t, c)
		if sac.saTTL != 30*time.Second {
			t.Fatalf("default TTL %v, want 30s", sac.saTTL)
		}
		sac.saTTL = 3 * time.Second
		first := time.Now()
		sa, err := sac.ServiceAccount(ctx, "team", "api")
		if err != nil {
			t.Fatal(err)
		}
		if sa.Annotations[gsaAnnotation] != "api@demo.iam.gserviceaccount.com" {
			t.Fatalf("annotations %v", sa.Annotations)
		}
		setAnnotation(t, c, "team", "api", "api-v2@demo.iam.gserviceaccount.com")
		defer setAnnotation(t, c, "team", "api", "api@demo.iam.gserviceaccount.com")
		sa, err = sac.ServiceAccount(ctx, "team", "api")
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(first) < sac.saTTL {
			if sa.Annotations[gsaAnnotation] != "api@demo.iam.gserviceaccount.com" || sac.saFetches.Load() != 1 {
				t.Fatalf("within the TTL: %v after %d GETs, want the cached account after 1", sa.Annotations, sac.saFetches.Load())
			}
		}
		took := waitFor(t, "annotation change seen", sac.saTTL+5*time.Second, func() bool {
			sa, err := sac.ServiceAccount(ctx, "team", "api")
			return err == nil && sa.Annotations[gsaAnnotation] == "api-v2@demo.iam.gserviceaccount.com"
		})
		t.Logf("annotation change seen after %v with a %v TTL, %d GETs", took.Round(time.Millisecond), sac.saTTL, sac.saFetches.Load())
		if n := sac.saFetches.Load(); n > 3 {
			t.Fatalf("%d GETs in about one TTL", n)
		}
	})

	t.Run("ServiceAccountOneGETInFlight", func(t *testing.T) {
		c.CreatePod("team", "sa-flight", "batch", c.NodeName)
		sac := nodeClient(t, c)
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for range 20 {
			wg.Go(func() {
				_, err := sac.ServiceAccount(ctx, "team", "batch")
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := sac.saFetches.Load(); n != 1 {
			t.Fatalf("%d GETs for 20 concurrent callers, want 1", n)
		}
	})

	t.Run("ServiceAccountOfNoPodHereIsForbidden", func(t *testing.T) {
		c.CreateServiceAccount("other", "unused", nil)
		_, err := kc.ServiceAccount(ctx, "other", "unused")
		wantForbidden(t, err, "no relationship found")
	})

	t.Run("TokenRequestVerifiesAgainstJWKS", func(t *testing.T) {
		pod := c.CreatePod("team", "tokens", "api", c.NodeName)
		got, err := kc.Pod(ctx, "team", "tokens", string(pod.UID))
		if err != nil {
			t.Fatal(err)
		}
		node, err := c.AdminClient.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ksa, err := c.AdminClient.CoreV1().ServiceAccounts("team").Get(ctx, "api", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		keys := jwks(t, c)
		for _, lifetime := range []time.Duration{0, 15 * time.Minute} {
			began := time.Now()
			token, expiry, err := kc.TokenRequest(ctx, got, grantedAudience, lifetime)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("TokenRequest (lifetime %v) took %v", lifetime, time.Since(began).Round(time.Millisecond))
			cl := verify(t, token, keys)
			want := lifetime
			if want == 0 {
				want = DefaultTokenLifetime
			}
			checks := []struct {
				what      string
				got, want any
			}{
				{"iss", cl.Issuer, c.Issuer},
				{"aud", strings.Join(cl.Audience, ","), grantedAudience},
				{"sub", cl.Subject, "system:serviceaccount:team:api"},
				{"namespace", cl.K8s.Namespace, "team"},
				{"pod name", cl.K8s.Pod.Name, "tokens"},
				{"pod uid", cl.K8s.Pod.UID, string(pod.UID)},
				{"serviceaccount name", cl.K8s.ServiceAccount.Name, "api"},
				{"serviceaccount uid", cl.K8s.ServiceAccount.UID, string(ksa.UID)},
				{"node name", cl.K8s.Node.Name, c.NodeName},
				{"node uid", cl.K8s.Node.UID, string(node.UID)},
				{"exp", cl.Expiry.Time().Unix(), expiry.Unix()},
				{"lifetime", cl.Expiry.Time().Sub(cl.IssuedAt.Time()), want},
			}
			for _, ch := range checks {
				if ch.got != ch.want {
					t.Errorf("%s: %v, want %v", ch.what, ch.got, ch.want)
				}
			}
		}
	})

	t.Run("TokenRequestAudienceNotGranted", func(t *testing.T) {
		pod := c.CreatePod("team", "not-granted", "api", c.NodeName)
		_, _, err := kc.TokenRequest(ctx, pod, notGrantedAudience, 0)
		wantForbidden(t, err, `system:node:node-1 is not authorized to request tokens for audience "`+notGrantedAudience+`"`)
	})

	t.Run("TokenRequestPodOnAnotherNode", func(t *testing.T) {
		pod := c.CreatePod("team", "other-node", "batch", "node-2")
		_, _, err := kc.TokenRequest(ctx, pod, grantedAudience, 0)
		wantForbidden(t, err, "")
		t.Logf("API's reason: %v", err)
	})

	t.Run("TokenRequestForReplacedPodIsNotFound", func(t *testing.T) {
		old := c.CreatePod("team", "replaced", "api", c.NodeName)
		c.DeletePod("team", "replaced")
		c.CreatePod("team", "replaced", "api", c.NodeName)
		_, _, err := kc.TokenRequest(ctx, old, grantedAudience, 0)
		if !errors.Is(err, ErrPodNotFound) {
			t.Fatalf("err %v, want ErrPodNotFound", err)
		}
	})

	t.Run("TokenRequestLifetimeBounds", func(t *testing.T) {
		pod := c.CreatePod("team", "lifetimes", "api", c.NodeName)
		for _, d := range []time.Duration{time.Minute, 25 * time.Hour} {
			if _, _, err := kc.TokenRequest(ctx, pod, grantedAudience, d); err == nil {
				t.Errorf("lifetime %v accepted", d)
			}
		}
		if _, _, err := kc.TokenRequest(ctx, pod, "", 0); err == nil {
			t.Error("empty audience accepted")
		}
	})

	// Last: the API goes away and comes back.
	t.Run("APIStoppedIsUnavailable", func(t *testing.T) {
		pod := c.CreatePod("team", "outage", "api", c.NodeName)
		waitFor(t, "informer has the pod", 10*time.Second, func() bool { return kc.cachedPod(string(pod.UID)) != nil })
		sac := nodeClient(t, c)
		sac.saTTL = time.Millisecond // every call a GET
		if _, err := sac.ServiceAccount(ctx, "team", "api"); err != nil {
			t.Fatal(err)
		}
		c.StopAPIServer()

		bound := kc.timeout + time.Second
		calls := map[string]func() error{
			"Pod (not in the informer)": func() error {
				_, err := kc.Pod(ctx, "team", "never-created", "00000000-0000-0000-0000-000000000002")
				return err
			},
			"ServiceAccount (never fetched)": func() error {
				_, err := sac.ServiceAccount(ctx, "team", "never-fetched")
				return err
			},
			"TokenRequest": func() error {
				_, _, err := kc.TokenRequest(ctx, pod, grantedAudience, 0)
				return err
			},
		}
		for name, call := range calls {
			began := time.Now()
			err := call()
			took := time.Since(began)
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: err %v, want ErrUnavailable", name, err)
			}
			if took > bound {
				t.Errorf("%s: ErrUnavailable after %v, want within %v", name, took, bound)
			}
			t.Logf("%s with the API stopped: %v after %v", name, err, took.Round(time.Millisecond))
		}
		// A ServiceAccount fetched before, its cache expired, is served as
		// last seen while the API is out of reach: the pod keeps its
		// identity (and its cached tokens their key).
		if sa, err := sac.ServiceAccount(ctx, "team", "api"); err != nil || sa.Name != "api" {
			t.Errorf("ServiceAccount (cache expired) during the outage: %v, %v; want the last copy", sa, err)
		}
		// What the informer saw is still served.
		if _, err := kc.Pod(ctx, "team", "outage", string(pod.UID)); err != nil {
			t.Errorf("pod from the informer during the outage: %v", err)
		}

		c.StartAPIServer()
		took := waitFor(t, "TokenRequest after the API returned", 30*time.Second, func() bool {
			_, _, err := kc.TokenRequest(ctx, pod, grantedAudience, 0)
			return err == nil
		})
		t.Logf("TokenRequest served again %v after the API was ready", took.Round(time.Millisecond))
		after := c.CreatePod("team", "after-outage", "api", c.NodeName)
		waitFor(t, "informer resumed", 30*time.Second, func() bool { return kc.cachedPod(string(after.UID)) != nil })
	})
}

// TestUnavailableWhenAPIHangs: an API that accepts connections and never
// answers is ErrUnavailable after the request timeout, not a hang.
func TestUnavailableWhenAPIHangs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	t.Cleanup(func() { ln.Close(); held.Wait() })
	held.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, conn) // never read, never answered
		}
	})
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: hang, cluster: {server: "https://%s", insecure-skip-tls-verify: true}}]
users: [{name: node, user: {token: unused}}]
contexts: [{name: hang, context: {cluster: hang, user: node}}]
current-context: hang
`, ln.Addr())
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	kc, err := New(Config{Kubeconfig: kubeconfig, NodeName: "node-1"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if kc.timeout != 5*time.Second {
		t.Fatalf("request timeout %v, want 5s", kc.timeout)
	}
	kc.timeout = 500 * time.Millisecond
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "p", UID: "u"}}
	calls := map[string]func() error{
		"Pod": func() error {
			_, err := kc.Pod(ctx, "team", "p", "u")
			return err
		},
		"ServiceAccount": func() error {
			_, err := kc.ServiceAccount(ctx, "team", "api")
			return err
		},
		"TokenRequest": func() error {
			_, _, err := kc.TokenRequest(ctx, pod, grantedAudience, 0)
			return err
		},
	}
	for name, call := range calls {
		began := time.Now()
		err := call()
		took := time.Since(began)
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: err %v, want ErrUnavailable", name, err)
		}
		if took > kc.timeout+time.Second {
			t.Errorf("%s: after %v, want within %v", name, took, kc.timeout+time.Second)
		}
	}
	// The caller's own deadline bounds a call too.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	kc.timeout = time.Minute
	began := time.Now()
	if _, err := kc.ServiceAccount(short, "team", "other"); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("caller's deadline: err %v", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("caller's 100ms deadline honoured after %v", took)
	}
}

func TestNewValidates(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Kubeconfig: kubeconfig}, "node name is required"},
		{Config{Kubeconfig: kubeconfig, NodeName: "n", TokenLifetime: 5 * time.Minute}, "tokenLifetime"},
		{Config{Kubeconfig: kubeconfig, NodeName: "n", TokenLifetime: 48 * time.Hour}, "tokenLifetime"},
		{Config{Kubeconfig: filepath.Join(t.TempDir(), "missing"), NodeName: "n"}, "client config"},
	} {
		if _, err := New(tc.cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.cfg, err, tc.want)
		}
	}
	kc, err := New(Config{Kubeconfig: kubeconfig, NodeName: "n"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if kc.lifetime != time.Hour || kc.saTTL != 30*time.Second {
		t.Fatalf("defaults: lifetime %v, serviceaccount TTL %v", kc.lifetime, kc.saTTL)
	}
}

func setAnnotation(t *testing.T, c *kubeapi.Cluster, namespace, name, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, gsaAnnotation, value)
	_, err := c.AdminClient.CoreV1().ServiceAccounts(namespace).Patch(context.Background(), name,
		"application/merge-patch+json", []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// jwks is the apiserver's key set, found as a verifier finds it: the
// issuer's discovery document names the JWKS URL.
func jwks(t *testing.T, c *kubeapi.Cluster) *jose.JSONWebKeySet {
	t.Helper()
	b, err := c.AdminClient.CoreV1().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var disco struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(b, &disco); err != nil {
		t.Fatal(err)
	}
	if disco.Issuer != c.Issuer || disco.JWKSURI != c.JWKSURL {
		t.Fatalf("discovery: issuer %q jwks_uri %q, want %q %q", disco.Issuer, disco.JWKSURI, c.Issuer, c.JWKSURL)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(c.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) == 0 {
		t.Fatal("empty JWKS")
	}
	return &set
}

type podClaims struct {
	jwt.Claims
	K8s struct {
		Namespace      string `json:"namespace"`
		Pod            ref    `json:"pod"`
		ServiceAccount ref    `json:"serviceaccount"`
		Node           ref    `json:"node"`
	} `json:"kubernetes.io"`
}

type ref struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

func verify(t *testing.T, token string, keys *jose.JSONWebKeySet) podClaims {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var cl podClaims
	if err := tok.Claims(keys, &cl); err != nil {
		t.Fatalf("token does not verify against the apiserver's JWKS: %v", err)
	}
	return cl
}
