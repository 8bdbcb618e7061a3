package gcp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// request is what the test server saw.
type request struct {
	method, path, contentType, auth string
	body                            []byte
}

// googleServer is an httptest TLS server answering with handle and
// recording each request.
type googleServer struct {
	*httptest.Server
	caFile string

	mu   sync.Mutex
	seen []request
}

func newGoogleServer(t *testing.T, handle http.HandlerFunc) *googleServer {
	t.Helper()
	g := &googleServer{}
	g.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		g.seen = append(g.seen, request{r.Method, r.URL.EscapedPath(), r.Header.Get("Content-Type"), r.Header.Get("Authorization"), body})
		g.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		handle(w, r)
	}))
	g.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshakes the tests make fail
	g.StartTLS()
	t.Cleanup(g.Close)
	g.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(g.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: g.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *googleServer) config() Config {
	return Config{
		WorkloadIdentityProvider: testProvider,
		STSURL:                   g.URL + "/v1/token",
		IAMCredentialsURL:        g.URL + "/v1",
		CAFile:                   g.caFile,
	}
}

func (g *googleServer) requests() []request {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]request(nil), g.seen...)
}

func (g *googleServer) client(t *testing.T) *Client {
	t.Helper()
	c, err := New(g.config())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// unsignedJWT is a JWT with claims and a dummy signature: the client reads
// exp without verifying.
func unsignedJWT(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + "." + enc([]byte("sig"))
}

var fixedNow = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func TestExchangeToken(t *testing.T) {
	g := newGoogleServer(t, answer(200, `{"access_token":"fed-token","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3599}`))
	c := g.client(t)
	c.now = func() time.Time { return fixedNow }
	tok, err := c.ExchangeToken(context.Background(), "subject.jwt.token", []string{"https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/userinfo.email"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Value != "fed-token" || !tok.Expiry.Equal(fixedNow.Add(3599*time.Second)) {
		t.Fatalf("token %q expiring %v", tok.Value, tok.Expiry)
	}
	seen := g.requests()
	if len(seen) != 1 {
		t.Fatalf("%d requests", len(seen))
	}
	r := seen[0]
	if r.method != "POST" || r.path != "/v1/token" || r.contentType != "application/x-www-form-urlencoded" || r.auth != "" {
		t.Fatalf("request %s %s, Content-Type %q, Authorization %q", r.method, r.path, r.contentType, r.auth)
	}
	form, err := url.ParseQuery(string(r.body))
	if err != nil {
		t.Fatal(err)
	}
	want := url.Values{
		"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"audience":             {"//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/test-pool/providers/test-provider"},
		"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"subject_token_type":   {"urn:ietf:params:oauth:token-type:jwt"},
		"subject_token":        {"subject.jwt.token"},
		"scope":                {"https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email"},
	}
	if !reflect.DeepEqual(form, want) {
		t.Fatalf("form\n%v\nwant\n%v", form, want)
	}
}

func TestGenerateAccessToken(t *testing.T) {
	g := newGoogleServer(t, answer(200, `{"accessToken":"sa-token","expireTime":"2026-12-02T11:00:00.123456Z"}`))
	c := g.client(t)
	tok, err := c.GenerateAccessToken(context.Background(), "fed-token", "app@proj.iam.gserviceaccount.com",
		[]string{"https://www.googleapis.com/auth/devstorage.read_only", "https://www.googleapis.com/auth/cloud-platform"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 12, 2, 11, 0, 0, 123456000, time.UTC); tok.Value != "sa-token" || !tok.Expiry.Equal(want) {
		t.Fatalf("token %q expiring %v", tok.Value, tok.Expiry)
	}
	r := g.requests()[0]
	if r.method != "POST" || r.path != "/v1/projects/-/serviceAccounts/app@proj.iam.gserviceaccount.com:generateAccessToken" ||
		r.contentType != "application/json" || r.auth != "Bearer fed-token" {
		t.Fatalf("request %s %s, Content-Type %q, Authorization %q", r.method, r.path, r.contentType, r.auth)
	}
	if want := `{"scope":["https://www.googleapis.com/auth/devstorage.read_only","https://www.googleapis.com/auth/cloud-platform"],"lifetime":"3600s"}`; string(r.body) != want {
		t.Fatalf("body %s, want %s", r.body, want)
	}

	// Lifetime 0: Google's default, the field left out.
	if _, err := c.GenerateAccessToken(context.Background(), "fed-token", "app@proj.iam.gserviceaccount.com", []string{"s"}, 0); err != nil {
		t.Fatal(err)
	}
	if r := g.requests()[1]; string(r.body) != `{"scope":["s"]}` {
		t.Fatalf("body %s", r.body)
	}
}

func TestGenerateIDToken(t *testing.T) {
	idToken := unsignedJWT(`{"iss":"https://accounts.google.com","aud":"https://svc.example","exp":1796209200,"email":"app@proj.iam.gserviceaccount.com"}`)
	g := newGoogleServer(t, answer(200, `{"token":"`+idToken+`"}`))
	c := g.client(t)
	tok, err := c.GenerateIDToken(context.Background(), "fed-token", "app@proj.iam.gserviceaccount.com", "https://svc.example")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Value != idToken || !tok.Expiry.Equal(time.Unix(1796209200, 0)) {
		t.Fatalf("token expiring %v", tok.Expiry)
	}
	r := g.requests()[0]
	if r.method != "POST" || r.path != "/v1/projects/-/serviceAccounts/app@proj.iam.gserviceaccount.com:generateIdToken" ||
		r.contentType != "application/json" || r.auth != "Bearer fed-token" {
		t.Fatalf("request %s %s, Content-Type %q, Authorization %q", r.method, r.path, r.contentType, r.auth)
	}
	if want := `{"audience":"https://svc.example","includeEmail":true}`; string(r.body) != want {
		t.Fatalf("body %s, want %s", r.body, want)
	}
}

// call runs one of the three calls against c.
type call func(c *Client) (Token, error)

var calls = map[string]call{
	"sts": func(c *Client) (Token, error) {
		return c.ExchangeToken(context.Background(), "subject", []string{"https://www.googleapis.com/auth/cloud-platform"})
	},
	"access": func(c *Client) (Token, error) {
		return c.GenerateAccessToken(context.Background(), "fed", "app@proj.iam.gserviceaccount.com", []string{"https://www.googleapis.com/auth/cloud-platform"}, time.Hour)
	},
	"id": func(c *Client) (Token, error) {
		return c.GenerateIDToken(context.Background(), "fed", "app@proj.iam.gserviceaccount.com", "https://svc.example")
	},
}

func TestDenied(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   Denied
	}{
		{"sts invalid_grant", 400, `{"error":"invalid_grant","error_description":"The audience in ID Token [x] does not match the expected audience."}`,
			Denied{400, "invalid_grant", "The audience in ID Token [x] does not match the expected audience."}},
		{"sts no description", 400, `{"error":"invalid_target"}`, Denied{400, "invalid_target", "invalid_target"}},
		{"iam permission", 403, `{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).","status":"PERMISSION_DENIED"}}`,
			Denied{403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."}},
		{"iam unauthenticated", 401, `{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`,
			Denied{401, "UNAUTHENTICATED", "Request had invalid authentication credentials."}},
		{"not google", 404, `<html>nope</html>`, Denied{404, "", "Not Found (no Google error in the answer)"}},
	} {
		for name, call := range calls {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				c := newGoogleServer(t, answer(tc.status, tc.body)).client(t)
				_, err := call(c)
				var d *Denied
				if !errors.As(err, &d) || errors.Is(err, ErrUnavailable) {
					t.Fatalf("%v: want *Denied only", err)
				}
				if *d != tc.want {
					t.Fatalf("%+v, want %+v", *d, tc.want)
				}
			})
		}
	}
}

func TestUnavailableAnswers(t *testing.T) {
	for _, status := range []int{500, 502, 503, 504, 429} {
		for name, call := range calls {
			t.Run(fmt.Sprintf("%d/%s", status, name), func(t *testing.T) {
				c := newGoogleServer(t, answer(status, `{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}`)).client(t)
				_, err := call(c)
				var d *Denied
				if !errors.Is(err, ErrUnavailable) || errors.As(err, &d) {
					t.Fatalf("%v: want ErrUnavailable only", err)
				}
				if !strings.Contains(err.Error(), "The service is currently unavailable.") {
					t.Fatalf("%v: Google's message left out", err)
				}
			})
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	g := newGoogleServer(t, answer(200, `{}`))
	cfg := g.config()
	g.Close()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range calls {
		if _, err := call(c); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s: %v, want ErrUnavailable (connection refused)", name, err)
		}
	}
}

func TestConnectionReset(t *testing.T) {
	g := newGoogleServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		// The TLS connection's TCP socket, closed with a reset.
		if tcp, ok := conn.(*tls.Conn).NetConn().(*net.TCPConn); ok {
			tcp.SetLinger(0)
		}
		conn.Close()
	})
	c := g.client(t)
	for name, call := range calls {
		if _, err := call(c); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", name, err)
		}
	}
}

func TestTimeout(t *testing.T) {
	// The server never answers; the call gives up after Timeout.
	g := newGoogleServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	cfg := g.config()
	cfg.Timeout = 200 * time.Millisecond
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range calls {
		began := time.Now()
		_, err := call(c)
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v, want ErrUnavailable (deadline exceeded)", name, err)
		}
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("%s: gave up after %v with a timeout of %v", name, took, cfg.Timeout)
		}
	}
	// The caller's own deadline counts too.
	cfg.Timeout = time.Minute
	if c, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.ExchangeToken(ctx, "subject", []string{"s"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("%v, want ErrUnavailable", err)
	}
}

func TestCAFileTrust(t *testing.T) {
	g := newGoogleServer(t, answer(200, `{"access_token":"fed-token","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`))
	other := otherCA(t)

	// Trusted through CAFile.
	if _, err := calls["sts"](g.client(t)); err != nil {
		t.Fatal(err)
	}
	// The system roots alone, or another CA: refused, and counted as
	// unavailable (the pod gets 503, never a token from an unverified server).
	for name, caFile := range map[string]string{"system roots": "", "another CA": other} {
		cfg := g.config()
		cfg.CAFile = caFile
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = calls["sts"](c)
		var verr *tls.CertificateVerificationError
		if !errors.Is(err, ErrUnavailable) || !errors.As(err, &verr) {
			t.Errorf("%s: %v, want ErrUnavailable from a certificate verification error", name, err)
		}
	}
	if n := len(g.requests()); n != 1 {
		t.Fatalf("%d requests reached the server, want 1", n)
	}
}

// otherCA writes a self-signed CA certificate that signed nothing the
// servers use (httptest servers all share one certificate).
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "another CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUnreadableAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, call, body string
	}{
		{"sts not JSON", "sts", `<html>`},
		{"sts no token", "sts", `{"token_type":"Bearer","expires_in":3600}`},
		{"sts token type", "sts", `{"access_token":"x","token_type":"MAC","expires_in":3600}`},
		{"sts issued type", "sts", `{"access_token":"x","issued_token_type":"urn:ietf:params:oauth:token-type:id_token","token_type":"Bearer","expires_in":3600}`},
		{"sts no expiry", "sts", `{"access_token":"x","token_type":"Bearer"}`},
		{"access no token", "access", `{"expireTime":"2026-12-02T11:00:00Z"}`},
		{"access bad time", "access", `{"accessToken":"x","expireTime":"tomorrow"}`},
		{"id not JWT", "id", `{"token":"opaque"}`},
		{"id no exp", "id", `{"token":"` + unsignedJWT(`{"aud":"a"}`) + `"}`},
		{"id bad payload", "id", `{"token":"a.!!!.c"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := calls[tc.call](newGoogleServer(t, answer(200, tc.body)).client(t))
			var d *Denied
			if err == nil || errors.Is(err, ErrUnavailable) || errors.As(err, &d) {
				t.Fatalf("%v: want a plain error", err)
			}
		})
	}
}

func TestNoRedirect(t *testing.T) {
	var followed bool
	var g *googleServer
	g = newGoogleServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed = true
			return
		}
		http.Redirect(w, r, g.URL+"/elsewhere", http.StatusTemporaryRedirect)
	})
	for name, call := range calls {
		if _, err := call(g.client(t)); err == nil || errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: %v, want a plain error", name, err)
		}
	}
	if followed {
		t.Fatal("a redirect was followed")
	}
}

func TestArgumentsCheckedBeforeCalling(t *testing.T) {
	g := newGoogleServer(t, answer(200, `{}`))
	c := g.client(t)
	ctx := context.Background()
	for name, err := range map[string]error{
		"no subject": func() error { _, err := c.ExchangeToken(ctx, "", []string{"s"}); return err }(),
		"no scopes":  func() error { _, err := c.ExchangeToken(ctx, "subject", nil); return err }(),
		"space in scope": func() error {
			_, err := c.ExchangeToken(ctx, "subject", []string{"a b"})
			return err
		}(),
		"no federated": func() error {
			_, err := c.GenerateAccessToken(ctx, "", "app@proj.iam.gserviceaccount.com", []string{"s"}, time.Hour)
			return err
		}(),
		"email with slash": func() error {
			_, err := c.GenerateAccessToken(ctx, "fed", "../x@proj.iam.gserviceaccount.com/y", []string{"s"}, time.Hour)
			return err
		}(),
		"email with colon": func() error {
			_, err := c.GenerateIDToken(ctx, "fed", "app@proj:generateAccessToken", "aud")
			return err
		}(),
		"sub-second lifetime": func() error {
			_, err := c.GenerateAccessToken(ctx, "fed", "app@proj.iam.gserviceaccount.com", []string{"s"}, time.Millisecond)
			return err
		}(),
		"no audience": func() error {
			_, err := c.GenerateIDToken(ctx, "fed", "app@proj.iam.gserviceaccount.com", "")
			return err
		}(),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if n := len(g.requests()); n != 0 {
		t.Fatalf("%d requests made", n)
	}
}

func TestTokenNotPrinted(t *testing.T) {
	tok := Token{Value: "secret-token-value", Expiry: fixedNow}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("issued", "token", tok)
	out := fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok) + buf.String()
	if strings.Contains(out, "secret-token-value") {
		t.Fatalf("token printed: %s", out)
	}
	if !strings.Contains(buf.String(), "2026-12-02T10:00:00Z") {
		t.Fatalf("expiry not logged: %s", buf.String())
	}
}
