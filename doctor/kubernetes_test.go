package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes/scheme"
)

const baseConfig = `
project: {id: test-project, numericId: "424242424242"}
node: {name: node-1, zone: test-zone-a}
issuer: {url: "https://issuer.example/node-1"}
identities:
  - namespace: payments
    serviceAccount: api
    email: api@test-project.iam.gserviceaccount.com
`

// fakeAPI answers what the Kubernetes checks ask: the pods list (no pod,
// or a 403), the access reviews (an audience granted or not) and /version,
// with a Date header off by skew.
type fakeAPI struct {
	skew     atomic.Int64 // time.Duration
	forbid   atomic.Bool
	granted  string
	selector atomic.Value // the pods list's fieldSelector
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Date", time.Now().Add(time.Duration(f.skew.Load())).UTC().Format(http.TimeFormat))
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/api/v1/pods" && f.forbid.Load():
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\""}`)
	case r.URL.Path == "/api/v1/pods":
		f.selector.Store(r.URL.Query().Get("fieldSelector") + " limit=" + r.URL.Query().Get("limit"))
		fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}`)
	case r.URL.Path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
		body, _ := io.ReadAll(r.Body)
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
		review, ok := obj.(*authorizationv1.SelfSubjectAccessReview)
		if err != nil || !ok || review.Spec.ResourceAttributes == nil {
			http.Error(w, fmt.Sprintf("want a review, got %T %v", obj, err), http.StatusBadRequest)
			return
		}
		a := review.Spec.ResourceAttributes
		review.Status.Allowed = a.Verb == "request-serviceaccounts-token-audience" && a.Resource == f.granted
		review.APIVersion, review.Kind = "authorization.k8s.io/v1", "SelfSubjectAccessReview"
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(review)
	case r.URL.Path == "/version":
		fmt.Fprint(w, `{"major":"1","minor":"37"}`)
	default:
		http.NotFound(w, r)
	}
}

// kubeNode is a node whose configuration's kubernetes: section names a
// kubeconfig for the fake API.
func kubeNode(t *testing.T, api *fakeAPI, audiences string) *node {
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	n := testNode(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	writeFile(t, kubeconfig, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: node-token}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, srv.URL), 0o600)
	writeFile(t, n.ConfigFile, baseConfig+fmt.Sprintf("kubernetes: {kubeconfig: %q, audiences: [%s]}\n", kubeconfig, audiences), 0o600)
	return n
}

func TestCheckConfig(t *testing.T) {
	n := testNode(t)
	wantStatus(t, checkConfig(context.Background(), n), Skipped, "no configuration file")
	writeFile(t, n.ConfigFile, baseConfig, 0o600)
	n = &node{Options: n.Options}
	wantStatus(t, checkConfig(context.Background(), n), OK, "own issuer https://issuer.example/node-1")
	n = testNode(t)
	writeFile(t, n.ConfigFile, "project: {id: x}\n", 0o600)
	wantStatus(t, checkConfig(context.Background(), n), Fail, "")
}

func TestKubernetesChecksSkippedWithoutTheSection(t *testing.T) {
	n := testNode(t)
	writeFile(t, n.ConfigFile, baseConfig, 0o600)
	for _, c := range []func(context.Context, *node) Result{checkKubePods, checkKubeTokens, checkClockSkew} {
		wantStatus(t, c(context.Background(), n), Skipped, "no kubernetes: section")
	}
}

func TestCheckKubePods(t *testing.T) {
	api := &fakeAPI{}
	n := kubeNode(t, api, "")
	wantStatus(t, checkKubePods(context.Background(), n), OK, "lists pods with spec.nodeName=node-1")
	if got := api.selector.Load(); got != "spec.nodeName=node-1 limit=1" {
		t.Errorf("listed with %v", got)
	}
	api.forbid.Store(true)
	r := checkKubePods(context.Background(), n)
	wantStatus(t, r, Fail, "forbidden")
	if !strings.Contains(r.Fix, "system:node:node-1") {
		t.Errorf("fix %q", r.Fix)
	}
}

// Without a pod on the node, the audiences are checked by access review.
func TestCheckKubeTokensByAccessReview(t *testing.T) {
	api := &fakeAPI{granted: "https://vault.example"}
	wantStatus(t, checkKubeTokens(context.Background(), kubeNode(t, api, `"https://vault.example"`)), OK, "SelfSubjectAccessReview")
	r := checkKubeTokens(context.Background(), kubeNode(t, api, `"https://vault.example", "sts.amazonaws.com"`))
	wantStatus(t, r, Fail, "sts.amazonaws.com: not granted")
	if !strings.Contains(r.Fix, "deploy/rbac.yaml") {
		t.Errorf("fix %q", r.Fix)
	}
	wantStatus(t, checkKubeTokens(context.Background(), kubeNode(t, api, "")), Skipped, "no kubernetes.audiences")
}

func TestCheckClockSkew(t *testing.T) {
	api := &fakeAPI{}
	n := kubeNode(t, api, "")
	for _, tc := range []struct {
		skew   time.Duration
		status Status
	}{{0, OK}, {-10 * time.Second, Warn}, {10 * time.Second, Warn}, {time.Minute, Fail}} {
		api.skew.Store(int64(tc.skew))
		if r := checkClockSkew(context.Background(), n); r.Status != tc.status {
			t.Errorf("API clock %v ahead: %s %q, want %s", tc.skew, r.Status, r.Detail, tc.status)
		}
	}
}
