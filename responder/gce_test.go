package responder

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/metadata"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2/google"

	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/responder/flavour/gce"
	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/responder/subject"
	"github.com/metabind/metabind/store"
)

const testConfig = `
project: {id: demo-project, numericId: "123456789012"}
node: {name: node-1, zone: us-central1-a}
issuer: {url: https://metabind.local/node-1, tokenLifetime: 1h}
identities:
  - namespace: payments
    pod: "api-*"
    serviceAccount: api
    email: api@demo-project.iam.gserviceaccount.com
  - namespace: payments
    serviceAccount: worker
    scopes: [https://www.googleapis.com/auth/devstorage.read_only]
`

const (
	apiEmail = "api@demo-project.iam.gserviceaccount.com"
	wiEmail  = "demo-project.svc.id.goog"

	apiIP     = "10.0.0.1" // payments/api-1: rule 0, with email
	workerIP  = "10.0.0.2" // payments/worker-1: rule 1, without email
	otherIP   = "10.0.0.3" // other/web: bound, no identity
	noUIDIP   = "10.0.0.4" // payments/api-nouid: rule 0, but no pod UID
	unboundIP = "10.0.0.9"
	brokenIP  = "10.0.0.66" // the store fails
)

// fakeLookup binds IPs to pods; brokenIP fails.
type fakeLookup map[netip.Addr]store.Binding

func (f fakeLookup) Lookup(ip netip.Addr) (store.Binding, bool, error) {
	if ip == netip.MustParseAddr(brokenIP) {
		return store.Binding{}, false, errors.New("store on fire")
	}
	b, ok := f[ip]
	return b, ok, nil
}

func testLookup() fakeLookup {
	bind := func(ip, ns, pod string) store.Binding {
		return store.Binding{IP: netip.MustParseAddr(ip), Namespace: ns, Pod: pod, PodUID: "uid-" + pod, ContainerID: "c-" + pod}
	}
	f := fakeLookup{}
	noUID := bind(noUIDIP, "payments", "api-nouid")
	noUID.PodUID = ""
	for _, b := range []store.Binding{
		noUID,
		bind(apiIP, "payments", "api-1"),
		bind(workerIP, "payments", "worker-1"),
		bind(otherIP, "other", "web"),
		bind("127.0.0.1", "payments", "api-local"),
	} {
		f[b.IP] = b
	}
	return f
}

// testCfg is testConfig, parsed.
func testCfg(t testing.TB) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newTestHandler is the responder for testConfig over testLookup, with a
// fresh key.
func newTestHandler(t testing.TB, log *slog.Logger) (*Responder, *issuer.Issuer) {
	t.Helper()
	return newResponder(t, testCfg(t), testLookup(), log)
}

// newHandlerFromConfig is the responder for cfg over testLookup with a
// fresh key.
func newHandlerFromConfig(t testing.TB, cfg *Config, log *slog.Logger) *Responder {
	t.Helper()
	h, _ := newResponder(t, cfg, testLookup(), log)
	return h
}

// newResponder is the responder for cfg over lookup, signing with a fresh
// key; its long polls last 50 ms.
func newResponder(t testing.TB, cfg *Config, lookup server.BindingLookup, log *slog.Logger, opts ...Option) (*Responder, *issuer.Issuer) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := issuer.New(cfg.Issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(cfg, lookup, iss, log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	h.gce.MaxLongPoll = 50 * time.Millisecond
	return h, iss
}

// setClock sets the clock of every part but the issuer.
func (r *Responder) setClock(now func() time.Time) {
	r.server.Now, r.tokens.Now, r.gce.Now = now, now, now
	if own, ok := r.source.(*credentials.OwnIssuer); ok {
		own.Now = now
	}
}

// unlimited lifts cfg's rate limit beyond any test's reach.
func unlimited(cfg *Config) *Config {
	perSecond := math.Inf(1)
	cfg.Limits.RequestsPerSecond = &perSecond
	return cfg
}

// What the GCE flavour answers with.
const (
	textType = "application/text"
	jsonType = "application/json"
)

// tokenResponse is the body of .../token.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	TokenType   string `json:"token_type"`
}

// do sends one request from ip (port 4321). target is written raw on the
// request line, so odd paths reach the handler as a client would send them.
func do(t testing.TB, h http.Handler, method, target, ip string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	return doWithBody(t, h, method, target, ip, header, "")
}

// doWithBody is do with body written after the headers, as is: the
// headers say how it is framed.
func doWithBody(t testing.TB, h http.Handler, method, target, ip string, header map[string]string, body string) *httptest.ResponseRecorder {
	t.Helper()
	var raw strings.Builder
	fmt.Fprintf(&raw, "%s %s HTTP/1.1\r\nHost: 169.254.169.254\r\n", method, target)
	for k, v := range header {
		fmt.Fprintf(&raw, "%s: %s\r\n", k, v)
	}
	raw.WriteString("\r\n")
	raw.WriteString(body)
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw.String())))
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	req.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(ip), 4321).String()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

var flavor = map[string]string{"Metadata-Flavor": "Google"}

func TestHandler(t *testing.T) {
	h, _ := newTestHandler(t, nil)
	const v1 = "/computeMetadata/v1"
	const sa = v1 + "/instance/service-accounts"
	instanceID := strconv.FormatUint(gce.InstanceID("node-1"), 10)
	for _, tc := range []struct {
		name     string
		method   string // default GET
		target   string
		ip       string            // default apiIP
		header   map[string]string // default flavor
		status   int
		ctype    string // checked when set
		body     string // exact, when set
		contains string
	}{
		// Detection probes and public paths.
		{name: "root without header", target: "/", header: map[string]string{}, ip: unboundIP, status: 200, ctype: textType, body: "computeMetadata/\n"},
		{name: "root with header", target: "/", ip: unboundIP, status: 200, body: "computeMetadata/\n"},
		{name: "root with query", target: "/?x=1", ip: unboundIP, status: 200},
		{name: "discovery", target: "/.well-known/openid-configuration", ip: unboundIP, header: map[string]string{}, status: 200, ctype: "application/json", contains: `"jwks_uri":"https://metabind.local/node-1/openid/v1/jwks"`},
		{name: "discovery under issuer path", target: "/node-1/.well-known/openid-configuration", ip: unboundIP, header: map[string]string{}, status: 200, ctype: "application/json"},
		{name: "jwks", target: "/openid/v1/jwks", ip: unboundIP, header: map[string]string{}, status: 200, ctype: "application/jwk-set+json", contains: `"alg":"ES256"`},
		{name: "jwks store broken", target: "/openid/v1/jwks", ip: brokenIP, status: 200},
		{name: "node probe", target: v1 + "/instance", status: 200, ctype: textType, body: "attributes/\nhostname\nid\nname\nservice-accounts/\nzone\n"},

		// Refusals.
		{name: "no flavor", target: v1 + "/project/project-id", header: map[string]string{}, status: 403},
		{name: "wrong flavor", target: v1 + "/project/project-id", header: map[string]string{"Metadata-Flavor": "google"}, status: 403},
		{name: "xff", target: v1 + "/project/project-id", header: map[string]string{"Metadata-Flavor": "Google", "X-Forwarded-For": "1.2.3.4"}, status: 403},
		{name: "xff on root", target: "/", header: map[string]string{"X-Forwarded-For": ""}, status: 403},
		{name: "forwarded on jwks", target: "/openid/v1/jwks", header: map[string]string{"Forwarded": "for=1.2.3.4"}, status: 403},
		{name: "post", method: "POST", target: v1 + "/project/project-id", status: 405},
		{name: "put root", method: "PUT", target: "/", status: 405},
		{name: "head", method: "HEAD", target: v1 + "/project/project-id", status: 200},
		{name: "bad query", target: v1 + "/project/project-id?a=%zz", status: 400},
		{name: "bad alt", target: v1 + "/project/project-id?alt=xml", status: 400},

		// Odd paths.
		{name: "unknown", target: v1 + "/instance/guest-attributes/", status: 404},
		{name: "unknown top", target: "/latest/meta-data/", status: 404},
		{name: "v1 suffix", target: "/computeMetadata/v1project/project-id", status: 404},
		{name: "dotdot", target: v1 + "/instance/../project/project-id", status: 404},
		{name: "encoded dotdot", target: v1 + "/instance/%2e%2e/project/project-id", status: 404},
		{name: "encoded slash", target: v1 + "/project%2fproject-id", status: 404},
		{name: "double slash", target: v1 + "//project/project-id", status: 404},
		{name: "dot", target: v1 + "/./project/project-id", status: 404},
		{name: "backslash", target: v1 + "/project\\project-id", status: 404},
		{name: "encoded backslash", target: v1 + "/project%5cproject-id", status: 404},
		{name: "scalar with slash", target: v1 + "/project/project-id/", status: 404},
		{name: "token with slash", target: sa + "/default/token/", status: 404},
		{name: "absolute form", target: "http://169.254.169.254" + v1 + "/project/project-id", status: 200, body: "demo-project"},

		// Listings.
		{name: "computeMetadata", target: "/computeMetadata/", status: 200, body: "v1/\n"},
		{name: "v1", target: v1 + "/", status: 200, ctype: textType, body: "instance/\nproject/\nuniverse/\n"},
		{name: "v1 no slash", target: v1, status: 200, body: "instance/\nproject/\nuniverse/\n"},
		{name: "project", target: v1 + "/project/", status: 200, body: "numeric-project-id\nproject-id\n"},
		{name: "instance", target: v1 + "/instance/", status: 200, body: "attributes/\nhostname\nid\nname\nservice-accounts/\nzone\n"},
		// Without a cluster: no attributes, as on a VM without custom metadata.
		{name: "attributes", target: v1 + "/instance/attributes/", status: 200, ctype: textType},
		{name: "attributes alt=json", target: v1 + "/instance/attributes/?alt=json", status: 200, ctype: jsonType, body: "[]"},
		{name: "attributes recursive", target: v1 + "/instance/attributes/?recursive=true", status: 200, ctype: jsonType, body: "{}"},
		{name: "no cluster-name", target: v1 + "/instance/attributes/cluster-name", status: 404},
		{name: "no cluster-location", target: v1 + "/instance/attributes/cluster-location", status: 404},
		{name: "no cluster-uid", target: v1 + "/instance/attributes/cluster-uid", status: 404},
		{name: "universe", target: v1 + "/universe/", status: 200, ctype: textType, body: "universe-domain\n"},
		{name: "universe recursive", target: v1 + "/universe/?recursive=true", status: 200, ctype: jsonType, body: `{"universeDomain":"googleapis.com"}`},
		{name: "accounts", target: sa + "/", status: 200, body: "default/\n" + apiEmail + "/\n"},
		{name: "accounts no slash", target: sa, status: 200, body: "default/\n" + apiEmail + "/\n"},
		{name: "account", target: sa + "/default/", status: 200, body: "aliases\nemail\nidentity\nscopes\ntoken\n"},
		{name: "account by email", target: sa + "/" + apiEmail, status: 200, body: "aliases\nemail\nidentity\nscopes\ntoken\n"},
		{name: "listing alt=json", target: v1 + "/project/?alt=json", status: 200, ctype: jsonType, body: `["numeric-project-id","project-id"]`},

		// Scalars.
		{name: "project-id", target: v1 + "/project/project-id", status: 200, ctype: textType, body: "demo-project"},
		{name: "numeric-project-id", target: v1 + "/project/numeric-project-id", status: 200, body: "123456789012"},
		{name: "numeric-project-id json", target: v1 + "/project/numeric-project-id?alt=json", status: 200, ctype: jsonType, body: "123456789012"},
		{name: "instance id", target: v1 + "/instance/id", status: 200, body: instanceID},
		{name: "hostname", target: v1 + "/instance/hostname", status: 200, body: "node-1.us-central1-a.c.demo-project.internal"},
		{name: "name", target: v1 + "/instance/name", status: 200, body: "node-1"},
		{name: "zone", target: v1 + "/instance/zone", status: 200, body: "projects/123456789012/zones/us-central1-a"},
		{name: "zone json", target: v1 + "/instance/zone?alt=json", status: 200, body: `"projects/123456789012/zones/us-central1-a"`},
		{name: "email", target: sa + "/default/email", status: 200, ctype: textType, body: apiEmail},
		{name: "email by email", target: sa + "/" + apiEmail + "/email", status: 200, body: apiEmail},
		{name: "aliases", target: sa + "/default/aliases", status: 200, body: "default"},
		{name: "scopes", target: sa + "/default/scopes", status: 200, body: subject.DefaultScope},
		{name: "universe-domain", target: v1 + "/universe/universe-domain", status: 200, ctype: textType, body: "googleapis.com"},
		{name: "universe-domain json", target: v1 + "/universe/universe-domain?alt=json", status: 200, ctype: jsonType, body: `"googleapis.com"`},
		{name: "no identity universe-domain", target: v1 + "/universe/universe-domain", ip: otherIP, status: 404},
		{name: "unknown params", target: v1 + "/project/project-id?transport=mtls&binding-enforcement=on&x=y", status: 200, body: "demo-project"},

		// Recursive.
		{name: "account recursive", target: sa + "/default/?recursive=true", status: 200, ctype: jsonType,
			body: `{"aliases":["default"],"email":"` + apiEmail + `","scopes":["` + subject.DefaultScope + `"]}`},
		{name: "account recursive alt=text", target: sa + "/default/?recursive=true&alt=text", status: 200, ctype: jsonType},
		{name: "project recursive", target: v1 + "/project/?recursive=true&alt=json", status: 200, ctype: jsonType,
			body: `{"numericProjectId":123456789012,"projectId":"demo-project"}`},

		// Identity without email: the workload identity pool's name.
		{name: "wi email", target: sa + "/default/email", ip: workerIP, status: 200, body: wiEmail},
		{name: "wi accounts", target: sa + "/", ip: workerIP, status: 200, body: "default/\n" + wiEmail + "/\n"},
		{name: "wi scopes", target: sa + "/" + wiEmail + "/scopes", ip: workerIP, status: 200, body: "https://www.googleapis.com/auth/devstorage.read_only"},

		// Email mismatch, no identity, unbound, store failure.
		{name: "other email", target: sa + "/someone@else.example/email", status: 404},
		{name: "other email token", target: sa + "/someone@else.example/token", status: 404},
		{name: "worker asks api email", target: sa + "/" + apiEmail + "/token", ip: workerIP, status: 404},
		{name: "no identity token", target: sa + "/default/token", ip: otherIP, status: 404},
		{name: "no identity identity", target: sa + "/default/identity?audience=a", ip: otherIP, status: 404},
		{name: "no identity email", target: sa + "/default/email", ip: otherIP, status: 404},
		{name: "no identity accounts", target: sa + "/", ip: otherIP, status: 404},
		{name: "no identity project", target: v1 + "/project/project-id", ip: otherIP, status: 404},
		{name: "no identity instance", target: v1 + "/instance", ip: otherIP, status: 404},
		{name: "unbound project", target: v1 + "/project/project-id", ip: unboundIP, status: 404},
		{name: "unbound instance", target: v1 + "/instance", ip: unboundIP, status: 404},
		{name: "unbound token", target: sa + "/default/token", ip: unboundIP, status: 404},
		{name: "unbound computeMetadata", target: "/computeMetadata/", ip: unboundIP, status: 404},
		{name: "store broken", target: v1 + "/project/project-id", ip: brokenIP, status: 503},
		{name: "mapped v6 caller", target: sa + "/default/email", ip: "::ffff:" + apiIP, status: 200, body: apiEmail},

		// Tokens.
		{name: "token", target: sa + "/default/token", status: 200, ctype: jsonType, contains: `"token_type":"Bearer"`},
		{name: "token scopes", target: sa + "/default/token?scopes=https://www.googleapis.com/auth/userinfo.email,https://www.googleapis.com/auth/cloud-platform", status: 200},
		{name: "token scope not held", target: sa + "/default/token?scopes=https://www.googleapis.com/auth/cloud-platform", ip: workerIP, status: 400},
		{name: "identity", target: sa + "/default/identity?audience=https://aud.example", status: 200, ctype: textType},
		{name: "identity no audience", target: sa + "/default/identity", status: 400},
		{name: "identity empty audience", target: sa + "/default/identity?audience=", status: 400},
		{name: "identity bad format", target: sa + "/default/identity?audience=a&format=tiny", status: 400},
		{name: "identity full licenses", target: sa + "/" + apiEmail + "/identity?audience=a&format=full&licenses=TRUE", status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, ip, header := tc.method, tc.ip, tc.header
			if method == "" {
				method = "GET"
			}
			if ip == "" {
				ip = apiIP
			}
			if header == nil {
				header = flavor
			}
			rec := do(t, h, method, tc.target, ip, header)
			if rec.Code != tc.status {
				t.Errorf("status = %d, want %d (body %q)", rec.Code, tc.status, rec.Body)
			}
			if got := rec.Header().Values("Metadata-Flavor"); len(got) != 1 || got[0] != "Google" {
				t.Errorf("Metadata-Flavor = %q", got)
			}
			if got := rec.Header().Values("Server"); len(got) != 1 || got[0] != "Metadata Server for VM" {
				t.Errorf("Server = %q", got)
			}
			if tc.ctype != "" && rec.Header().Get("Content-Type") != tc.ctype {
				t.Errorf("Content-Type = %q, want %q", rec.Header().Get("Content-Type"), tc.ctype)
			}
			if tc.body != "" && rec.Body.String() != tc.body {
				t.Errorf("body = %q, want %q", rec.Body, tc.body)
			}
			if !strings.Contains(rec.Body.String(), tc.contains) {
				t.Errorf("body %q does not contain %q", rec.Body, tc.contains)
			}
		})
	}
}

func TestRecursiveRoot(t *testing.T) {
	h, _ := newTestHandler(t, nil)
	rec := do(t, h, "GET", "/computeMetadata/v1/?recursive=true&alt=json", apiIP, flavor)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != jsonType {
		t.Fatalf("status %d type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var tree struct {
		Instance struct {
			Attributes      map[string]string          `json:"attributes"`
			Hostname        string                     `json:"hostname"`
			ID              json.Number                `json:"id"`
			Name            string                     `json:"name"`
			Zone            string                     `json:"zone"`
			ServiceAccounts map[string]json.RawMessage `json:"serviceAccounts"`
		} `json:"instance"`
		Project struct {
			ProjectID        string      `json:"projectId"`
			NumericProjectID json.Number `json:"numericProjectId"`
		} `json:"project"`
		Universe struct {
			UniverseDomain string `json:"universeDomain"`
		} `json:"universe"`
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tree); err != nil {
		t.Fatal(err)
	}
	in, pr := tree.Instance, tree.Project
	if in.Name != "node-1" || in.ID.String() != strconv.FormatUint(gce.InstanceID("node-1"), 10) || in.Zone != "projects/123456789012/zones/us-central1-a" || in.Hostname == "" {
		t.Errorf("instance = %+v", in)
	}
	if pr.ProjectID != "demo-project" || pr.NumericProjectID != "123456789012" {
		t.Errorf("project = %+v", pr)
	}
	if in.Attributes == nil || len(in.Attributes) != 0 {
		t.Errorf("attributes without a cluster = %#v, want {}", in.Attributes)
	}
	if tree.Universe.UniverseDomain != "googleapis.com" {
		t.Errorf("universe = %+v", tree.Universe)
	}
	want := `{"aliases":["default"],"email":"` + apiEmail + `","scopes":["` + subject.DefaultScope + `"]}`
	if len(in.ServiceAccounts) != 2 || string(in.ServiceAccounts["default"]) != want || string(in.ServiceAccounts[apiEmail]) != want {
		t.Errorf("serviceAccounts = %s", in.ServiceAccounts)
	}

	// A caller without identity sees nothing, so SDKs fall back.
	rec = do(t, h, "GET", "/computeMetadata/v1/instance/?recursive=true", otherIP, flavor)
	if rec.Code != 404 {
		t.Errorf("no-identity instance tree = %d %s", rec.Code, rec.Body)
	}
}

func TestTokenEndpoints(t *testing.T) {
	h, iss := newTestHandler(t, nil)
	const sa = "/computeMetadata/v1/instance/service-accounts"

	rec := do(t, h, "GET", sa+"/default/token?scopes=https://www.googleapis.com/auth/userinfo.email", apiIP, flavor)
	var resp struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.ExpiresIn <= 3500 || resp.ExpiresIn > 3600 || resp.TokenType != "Bearer" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("token response = %+v", resp)
	}
	c := verifyAccess(t, iss.JWKSJSON(), resp.AccessToken, jwt.WithAudience(iss.URL()), jwt.WithIssuer(iss.URL()))
	if c.Scope != "https://www.googleapis.com/auth/userinfo.email" || c.Email != apiEmail || c.Subject != "system:serviceaccount:payments:api" {
		t.Errorf("access token claims = %+v", c)
	}
	if c.Kubernetes.Pod != (credentials.ObjectRef{Name: "api-1", UID: "uid-api-1"}) || c.Kubernetes.Node.Name != "node-1" {
		t.Errorf("kubernetes.io = %+v", c.Kubernetes)
	}

	// Node sends the audience unencoded.
	rec = do(t, h, "GET", sa+"/default/identity?audience=https://aud.example/x&format=full", apiIP, flavor)
	c = verify(t, iss.JWKSJSON(), rec.Body.String(), jwt.WithAudience("https://aud.example/x"))
	if c.AuthorizedParty != apiEmail || !c.EmailVerified || c.Scope != "" {
		t.Errorf("ID token claims = %+v", c)
	}
	want := credentials.ComputeEngineClaims{ProjectID: "demo-project", ProjectNumber: 123456789012, Zone: "us-central1-a", InstanceID: strconv.FormatUint(gce.InstanceID("node-1"), 10), InstanceName: "node-1"}
	if c.Google == nil || c.Google.ComputeEngine != want {
		t.Errorf("google claim = %+v", c.Google)
	}

	// Without email: no email claim, azp is the subject, standard format.
	rec = do(t, h, "GET", sa+"/default/identity?audience=aud", workerIP, flavor)
	c = verify(t, iss.JWKSJSON(), rec.Body.String(), jwt.WithAudience("aud"))
	if c.Email != "" || c.AuthorizedParty != "system:serviceaccount:payments:worker" || c.Google != nil {
		t.Errorf("ID token claims = %+v", c)
	}
}

func TestLongPoll(t *testing.T) {
	h, _ := newTestHandler(t, nil)
	const p = "/computeMetadata/v1/project/project-id"
	etag := do(t, h, "GET", p, apiIP, flavor).Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	start := time.Now()
	rec := do(t, h, "GET", p+"?wait_for_change=true&last_etag="+etag, apiIP, flavor)
	if waited := time.Since(start); rec.Code != 200 || waited < h.gce.MaxLongPoll {
		t.Errorf("status %d after %v, want 200 after at least %v", rec.Code, waited, h.gce.MaxLongPoll)
	}
	start = time.Now()
	rec = do(t, h, "GET", p+"?wait_for_change=true&last_etag=other", apiIP, flavor)
	if rec.Code != 200 || time.Since(start) >= h.gce.MaxLongPoll {
		t.Errorf("stale etag: status %d after %v, want an immediate answer", rec.Code, time.Since(start))
	}
	if rec := do(t, h, "GET", p+"?wait_for_change=true&timeout_sec=x", apiIP, flavor); rec.Code != 400 {
		t.Errorf("bad timeout_sec: status %d", rec.Code)
	}
}

func TestRequestLog(t *testing.T) {
	var buf strings.Builder
	h, _ := newTestHandler(t, slog.New(slog.NewTextHandler(&buf, nil)))
	const sa = "/computeMetadata/v1/instance/service-accounts"
	rec := do(t, h, "GET", sa+"/default/token", apiIP, map[string]string{"Metadata-Flavor": "Google", "Authorization": "Bearer secret-header"})
	var resp struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal(rec.Body.Bytes(), &resp)
	do(t, h, "GET", "/computeMetadata/v1/project/project-id", brokenIP, flavor)

	var lines []string // the request lines; the audit line is tested in TestAuditLog
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(l, "msg=request ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("log has %d lines, want one per request:\n%s", len(lines), buf.String())
	}
	for _, want := range []string{"caller=" + apiIP, "namespace=payments", "pod=api-1", "path=" + sa + "/default/token", "status=200", "duration="} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("log line %q lacks %q", lines[0], want)
		}
	}
	if resp.AccessToken == "" || strings.Contains(buf.String(), resp.AccessToken) || strings.Contains(buf.String(), "secret-header") {
		t.Error("log holds a token or the Authorization header")
	}
	if !strings.Contains(lines[1], "status=503") || !strings.Contains(lines[1], "store on fire") || !strings.Contains(lines[1], "level=ERROR") {
		t.Errorf("store failure log line = %q", lines[1])
	}
}

// TestGoClient drives the real Go metadata client and oauth2's compute
// token source against the handler; the caller is 127.0.0.1.
func TestGoClient(t *testing.T) {
	h, iss := newTestHandler(t, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(srv.URL, "http://"))
	ctx := context.Background()
	c := metadata.NewClient(srv.Client())

	if !metadata.OnGCE() {
		t.Error("OnGCE = false")
	}
	for name, get := range map[string]func(context.Context) (string, error){
		"project-id":         c.ProjectIDWithContext,
		"numeric-project-id": c.NumericProjectIDWithContext,
		"instance-id":        c.InstanceIDWithContext,
		"instance-name":      c.InstanceNameWithContext,
		"zone":               c.ZoneWithContext,
		"hostname":           c.HostnameWithContext,
		"email":              func(ctx context.Context) (string, error) { return c.EmailWithContext(ctx, "default") },
	} {
		v, err := get(ctx)
		if err != nil || v == "" {
			t.Errorf("%s = %q, %v", name, v, err)
		}
	}
	if z, _ := c.ZoneWithContext(ctx); z != "us-central1-a" {
		t.Errorf("zone = %q", z)
	}
	if s, err := c.ScopesWithContext(ctx, "default"); err != nil || len(s) != 1 || s[0] != subject.DefaultScope {
		t.Errorf("scopes = %q, %v", s, err)
	}
	if _, err := c.EmailWithContext(ctx, "someone@else.example"); !errors.As(err, new(metadata.NotDefinedError)) {
		t.Errorf("other email: %v, want NotDefinedError", err)
	}
	idTok, err := c.GetWithContext(ctx, "instance/service-accounts/default/identity?audience=https://aud.example&format=full")
	if err != nil {
		t.Fatal(err)
	}
	verify(t, iss.JWKSJSON(), idTok, jwt.WithAudience("https://aud.example"))

	tok, err := google.ComputeTokenSource("", subject.DefaultScope).Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || time.Until(tok.Expiry) < 50*time.Minute {
		t.Errorf("token type %q expiry %v", tok.TokenType, tok.Expiry)
	}
	verifyAccess(t, iss.JWKSJSON(), tok.AccessToken, jwt.WithAudience(iss.URL()))
}
func TestIdentityRefusesTheIssuerAsAudience(t *testing.T) {
	h, iss := newTestHandler(t, nil)
	rec := do(t, h, "GET", "/computeMetadata/v1/instance/service-accounts/default/identity?audience="+iss.URL(), apiIP, flavor)
	if rec.Code != 400 {
		t.Fatalf("ID token with the access tokens' audience: %d %s", rec.Code, rec.Body)
	}
}
