package fakegoogle_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/metabind/metabind/gcp"
	"github.com/metabind/metabind/integration/fakegoogle"
)

const (
	projectNumber = "123456789012"
	pool          = "test-pool"
	provider      = "test-provider"
	providerName  = "projects/" + projectNumber + "/locations/global/workloadIdentityPools/" + pool + "/providers/" + provider
	audience      = "//iam.googleapis.com/" + providerName
	issuerURL     = "https://cluster.test"
	ksaSub        = "system:serviceaccount:team:app"
	principal     = "principal://iam.googleapis.com/projects/" + projectNumber + "/locations/global/workloadIdentityPools/" + pool + "/subject/" + ksaSub
	gsa           = "app@demo-project.iam.gserviceaccount.com"
	cloudPlatform = "https://www.googleapis.com/auth/cloud-platform"
	bucketPath    = "/storage/v1/b/test-bucket"
)

// clock is the fake's clock, moved by the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// issuer is the provider's trusted issuer: signing keys by kid, and which
// of them its JWKS publishes.
type issuer struct {
	mu        sync.Mutex
	keys      map[string]signingKey
	published []string
	jwksErr   error
}

type signingKey struct {
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

func newIssuer(t *testing.T) *issuer {
	i := &issuer{keys: map[string]signingKey{}}
	i.addKey(t, "rsa-1", jose.RS256)
	i.addKey(t, "ec-1", jose.ES256)
	i.publish("rsa-1", "ec-1")
	return i
}

func (i *issuer) addKey(t *testing.T, kid string, alg jose.SignatureAlgorithm) {
	t.Helper()
	var key crypto.Signer
	var err error
	if alg == jose.RS256 {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys[kid] = signingKey{alg, key}
}

func (i *issuer) publish(kids ...string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = kids
}

// JWKS is the issuer's current key set, as an API server serves it.
func (i *issuer) JWKS() ([]byte, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.jwksErr != nil {
		return nil, i.jwksErr
	}
	var set jose.JSONWebKeySet
	for _, kid := range i.published {
		k := i.keys[kid]
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.key.Public(), KeyID: kid, Algorithm: string(k.alg), Use: "sig"})
	}
	return json.Marshal(set)
}

// sign signs claims with the key kid, naming headerKid in the header.
func (i *issuer) sign(t *testing.T, kid, headerKid string, claims map[string]any) string {
	t.Helper()
	i.mu.Lock()
	k := i.keys[kid]
	i.mu.Unlock()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if headerKid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), headerKid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	token, err := josejwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// env is a fake with a gcp client configured for it, the issuer it trusts
// and its clock.
type env struct {
	fake   *fakegoogle.Fake
	client *gcp.Client
	iss    *issuer
	clock  *clock
	http   *http.Client // trusts the fake's CA
}

func newEnv(t *testing.T, mods ...func(*fakegoogle.Options)) *env {
	t.Helper()
	e := &env{iss: newIssuer(t), clock: &clock{t: time.Now().Truncate(time.Second)}}
	o := fakegoogle.Options{
		ProjectNumber: projectNumber,
		Pool:          pool,
		Provider:      provider,
		Issuer:        issuerURL,
		JWKS:          e.iss.JWKS,
		Now:           e.clock.Now,
	}
	for _, mod := range mods {
		mod(&o)
	}
	e.fake = fakegoogle.Start(t, t.TempDir(), o)
	e.client = e.clientFor(t, providerName)
	e.http = httpsClient(t, e.fake.CAFile)
	return e
}

func (e *env) clientFor(t *testing.T, provider string) *gcp.Client {
	t.Helper()
	c, err := gcp.New(gcp.Config{
		WorkloadIdentityProvider: provider,
		STSURL:                   e.fake.STSURL,
		IAMCredentialsURL:        e.fake.IAMURL,
		CAFile:                   e.fake.CAFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func httpsClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA in", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	return &http.Client{Transport: tr}
}

// claims are a valid subject token's, as a cluster's TokenRequest has them.
func (e *env) claims() map[string]any {
	now := e.clock.Now()
	return map[string]any{
		"iss": issuerURL,
		"aud": []string{audience},
		"sub": ksaSub,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

// subject is a subject token signed with rsa-1, its claims changed by
// change.
func (e *env) subject(t *testing.T, change func(map[string]any)) string {
	t.Helper()
	c := e.claims()
	if change != nil {
		change(c)
	}
	return e.iss.sign(t, "rsa-1", "rsa-1", c)
}

// exchange exchanges a valid subject token for a federated token with scopes.
func (e *env) exchange(t *testing.T, scopes ...string) gcp.Token {
	t.Helper()
	fed, err := e.client.ExchangeToken(t.Context(), e.subject(t, nil), scopes)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return fed
}

// get GETs path of the API with token as the bearer ("" for none) and
// returns the status and Google's error status, if any.
func (e *env) get(t *testing.T, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.fake.APIURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.do(t, req)
}

// post sends body to url raw, past the gcp client's own checks.
func (e *env) post(t *testing.T, url, contentType, body, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.do(t, req)
}

// do returns the status and the error code of Google's answer: STS's
// "error" string or the API's error.status.
func (e *env) do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var body struct {
		Error json.RawMessage `json:"error"`
	}
	json.Unmarshal(data, &body)
	var code string
	var api struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(body.Error, &code) != nil && json.Unmarshal(body.Error, &api) == nil {
		code = api.Status
	}
	return resp.StatusCode, code
}
