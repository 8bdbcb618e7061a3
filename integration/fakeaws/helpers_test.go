package fakeaws_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/metabind/metabind/aws"
	"github.com/metabind/metabind/integration/fakeaws"
)

const (
	issuerURL = "https://cluster.test"
	region    = "eu-west-3"
	account   = "123456789012"
	ksaSub    = "system:serviceaccount:team:app"
	roleARN   = "arn:aws:iam::" + account + ":role/team/app"
	otherSub  = "system:serviceaccount:team:other"
	otherRole = "arn:aws:iam::" + account + ":role/other"
	session   = "team.app-0"
	bucket    = "test-bucket"
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

// issuer is the trusted OIDC issuer: signing keys by kid, and which of them
// its JWKS publishes.
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

// env is a fake with an aws client configured for it, the issuer it trusts
// and its clock.
type env struct {
	fake   *fakeaws.Fake
	client *aws.Client
	iss    *issuer
	clock  *clock
	http   *http.Client // trusts the fake's CA
}

func newEnv(t *testing.T, mods ...func(*fakeaws.Options)) *env {
	t.Helper()
	e := &env{iss: newIssuer(t), clock: &clock{t: time.Now().Truncate(time.Second)}}
	o := fakeaws.Options{
		Issuer: issuerURL,
		JWKS:   e.iss.JWKS,
		Region: region,
		Now:    e.clock.Now,
	}
	for _, mod := range mods {
		mod(&o)
	}
	e.fake = fakeaws.Start(t, t.TempDir(), o)
	e.client = e.clientFor(t, 0)
	e.http = httpsClient(t, e.fake.CAFile)
	return e
}

// clientFor is an aws client of the fake asking for sessions of d (0: the
// default, one hour).
func (e *env) clientFor(t *testing.T, d time.Duration) *aws.Client {
	t.Helper()
	c, err := aws.New(aws.Config{Region: region, STSURL: e.fake.STSURL, CAFile: e.fake.CAFile, SessionDuration: d})
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

// claims are a valid web identity token's, as a cluster's TokenRequest for
// audience sts.amazonaws.com has them.
func (e *env) claims() map[string]any {
	now := e.clock.Now()
	return map[string]any{
		"iss": issuerURL,
		"aud": []string{"sts.amazonaws.com"},
		"sub": ksaSub,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

// token is a web identity token signed with rsa-1, its claims changed by
// change.
func (e *env) token(t *testing.T, change func(map[string]any)) string {
	t.Helper()
	c := e.claims()
	if change != nil {
		change(c)
	}
	return e.iss.sign(t, "rsa-1", "rsa-1", c)
}

// assume assumes role with a valid token of sub.
func (e *env) assume(t *testing.T, role, sub string) aws.Credentials {
	t.Helper()
	creds, err := e.client.AssumeRoleWithWebIdentity(t.Context(), role, session, e.token(t, func(c map[string]any) { c["sub"] = sub }))
	if err != nil {
		t.Fatalf("assume %s as %s: %v", role, sub, err)
	}
	return creds
}

// sdkCreds are creds as aws-sdk-go-v2 holds them.
func sdkCreds(c aws.Credentials) sdkaws.Credentials {
	return sdkaws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken, Source: "test"}
}

// s3Request is an unsigned request to the fake's S3 with S3's payload hash
// header, as the SDK's S3 client makes it: target is the path and query.
func (e *env) s3Request(t *testing.T, method, target string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.fake.S3URL+target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
	return req
}

// sign signs req with aws-sdk-go-v2's SigV4 signer as its S3 client does
// (the path not escaped twice) for service and region at at.
func sign(t *testing.T, req *http.Request, creds sdkaws.Credentials, service, region string, at time.Time) *http.Request {
	t.Helper()
	payload := req.Header.Get("X-Amz-Content-Sha256")
	if err := v4.NewSigner().SignHTTP(t.Context(), creds, req, payload, service, region, at,
		func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }); err != nil {
		t.Fatal(err)
	}
	return req
}

// list GETs the bucket's object list signed with creds now, and returns
// the status and S3's error code.
func (e *env) list(t *testing.T, creds aws.Credentials) (int, string) {
	t.Helper()
	req := sign(t, e.s3Request(t, http.MethodGet, "/"+bucket+"?list-type=2", nil), sdkCreds(creds), "s3", region, e.clock.Now())
	status, code, _ := e.do(t, req)
	return status, code
}

// post sends body to the fake's STS raw, past the aws client's own checks.
func (e *env) post(t *testing.T, url, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	status, code, _ := e.do(t, req)
	return status, code
}

// do returns the status, the error code of AWS's answer (STS's
// ErrorResponse/Error/Code or S3's Error/Code) and the body.
func (e *env) do(t *testing.T, req *http.Request) (int, string, []byte) {
	t.Helper()
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var body struct {
		Code  string `xml:"Code"`
		Error struct {
			Code string `xml:"Code"`
		} `xml:"Error"`
	}
	xml.Unmarshal(data, &body)
	code := body.Code
	if code == "" {
		code = body.Error.Code
	}
	return resp.StatusCode, code, data
}
