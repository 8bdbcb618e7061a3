package aws

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
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

const (
	testRole    = "arn:aws:iam::123456789012:role/team/app"
	testSession = "team.app-0"
	testToken   = "header.payload.signature"
)

// request is what the test server saw.
type request struct {
	method, path, query, contentType, auth string
	body                                   []byte
}

// stsServer is an httptest TLS server answering with handle and recording
// each request.
type stsServer struct {
	*httptest.Server
	caFile string

	mu   sync.Mutex
	seen []request
}

func newSTSServer(t *testing.T, handle http.HandlerFunc) *stsServer {
	t.Helper()
	s := &stsServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.seen = append(s.seen, request{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), body})
		s.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		handle(w, r)
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshakes the tests make fail
	s.StartTLS()
	t.Cleanup(s.Close)
	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(s.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stsServer) config() Config {
	return Config{Region: "eu-west-3", STSURL: s.URL, CAFile: s.caFile}
}

func (s *stsServer) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.seen...)
}

func (s *stsServer) client(t *testing.T) *Client {
	t.Helper()
	c, err := New(s.config())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// success is STS's answer, as AWS documents it, with creds and expiration.
func success(accessKey, secret, token, expiration, arn string) string {
	return `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:team:app</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>` + arn + `</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:team.app-0</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>` + token + `</SessionToken>
      <SecretAccessKey>` + secret + `</SecretAccessKey>
      <Expiration>` + expiration + `</Expiration>
      <AccessKeyId>` + accessKey + `</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/cluster.test</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`
}

var okAnswer = success("ASIAEXAMPLEKEY000001", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjEXAMPLE+/=",
	"2026-12-02T11:00:00Z", "arn:aws:sts::123456789012:assumed-role/app/team.app-0")

// stsErrorBody is STS's error answer.
func stsErrorBody(typ, code, message string) string {
	return `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>` + typ + `</Type>
    <Code>` + code + `</Code>
    <Message>` + message + `</Message>
  </Error>
  <RequestId>4fd2d1a1-1c9c-4b6d-9d5e-EXAMPLE</RequestId>
</ErrorResponse>`
}

func assume(c *Client) (Credentials, error) {
	return c.AssumeRoleWithWebIdentity(context.Background(), testRole, testSession, testToken)
}

func TestAssumeRoleWithWebIdentity(t *testing.T) {
	s := newSTSServer(t, answer(200, okAnswer))
	cfg := s.config()
	cfg.SessionDuration = 2 * time.Hour
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := assume(c)
	if err != nil {
		t.Fatal(err)
	}
	want := Credentials{
		AccessKeyID:     "ASIAEXAMPLEKEY000001",
		SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		SessionToken:    "IQoJb3JpZ2luX2VjEXAMPLE+/=",
		Expiration:      time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC),
		AccountID:       "123456789012",
	}
	if !reflect.DeepEqual(creds, want) {
		t.Fatalf("credentials %#v (%s %s), want %s", creds, creds.SecretAccessKey, creds.SessionToken, want)
	}
	seen := s.requests()
	if len(seen) != 1 {
		t.Fatalf("%d requests", len(seen))
	}
	r := seen[0]
	if r.method != "POST" || r.path != "/" || r.query != "" || r.contentType != "application/x-www-form-urlencoded; charset=utf-8" || r.auth != "" {
		t.Fatalf("request %s %s?%s, Content-Type %q, Authorization %q", r.method, r.path, r.query, r.contentType, r.auth)
	}
	form, err := url.ParseQuery(string(r.body))
	if err != nil {
		t.Fatal(err)
	}
	wantForm := url.Values{
		"Action":           {"AssumeRoleWithWebIdentity"},
		"Version":          {"2011-06-15"},
		"RoleArn":          {testRole},
		"RoleSessionName":  {testSession},
		"WebIdentityToken": {testToken},
		"DurationSeconds":  {"7200"},
	}
	if !reflect.DeepEqual(form, wantForm) {
		t.Fatalf("form %v, want %v", form, wantForm)
	}
}

func TestSTSURLWithPath(t *testing.T) {
	s := newSTSServer(t, answer(200, okAnswer))
	cfg := s.config()
	cfg.STSURL = s.URL + "/sts"
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := assume(c); err != nil {
		t.Fatal(err)
	}
	if r := s.requests()[0]; r.path != "/sts" {
		t.Fatalf("posted to %s", r.path)
	}
}

func TestAnswerVariants(t *testing.T) {
	for _, tc := range []struct {
		name, expiration, arn string
		wantExpiry            time.Time
		wantAccount           string
	}{
		{"fractional seconds", "2026-12-02T11:00:00.123Z", "arn:aws:sts::123456789012:assumed-role/app/s",
			time.Date(2026, 12, 2, 11, 0, 0, 123000000, time.UTC), "123456789012"},
		{"offset", "2026-12-02T12:00:00+01:00", "arn:aws:sts::123456789012:assumed-role/app/s",
			time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC), "123456789012"},
		{"china", "2026-12-02T11:00:00Z", "arn:aws-cn:sts::210987654321:assumed-role/app/s",
			time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC), "210987654321"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSTSServer(t, answer(200, success("ASIAX", "secret", "token", tc.expiration, tc.arn)))
			creds, err := assume(s.client(t))
			if err != nil {
				t.Fatal(err)
			}
			if !creds.Expiration.Equal(tc.wantExpiry) || creds.AccountID != tc.wantAccount {
				t.Fatalf("expiration %v, account %q", creds.Expiration, creds.AccountID)
			}
		})
	}
}

func TestDenied(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   Denied
	}{
		{"access denied", 403, stsErrorBody("Sender", "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"),
			Denied{403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"}},
		{"invalid identity token", 400, stsErrorBody("Sender", "InvalidIdentityToken", "Incorrect token audience"),
			Denied{400, "InvalidIdentityToken", "Incorrect token audience"}},
		{"expired token", 400, stsErrorBody("Sender", "ExpiredTokenException", "Token expired: current date/time 1796209200 must be before the expiration date/time1796205600"),
			Denied{400, "ExpiredTokenException", "Token expired: current date/time 1796209200 must be before the expiration date/time1796205600"}},
		{"validation", 400, stsErrorBody("Sender", "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."),
			Denied{400, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."}},
		{"region disabled", 403, stsErrorBody("Sender", "RegionDisabledException", "STS is not activated in this region for account:123456789012."),
			Denied{403, "RegionDisabledException", "STS is not activated in this region for account:123456789012."}},
		{"no message", 400, stsErrorBody("Sender", "InvalidAction", ""), Denied{400, "InvalidAction", "InvalidAction"}},
		{"not STS", 404, `<html>nope</html>`, Denied{404, "", "Not Found (no STS error in the answer)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := assume(newSTSServer(t, answer(tc.status, tc.body)).client(t))
			var d *Denied
			if !errors.As(err, &d) || errors.Is(err, ErrUnavailable) {
				t.Fatalf("%v: want *Denied only", err)
			}
			if *d != tc.want {
				t.Fatalf("%+v, want %+v", *d, tc.want)
			}
			if !strings.Contains(err.Error(), testRole) || strings.Contains(err.Error(), testToken) {
				t.Fatalf("%v: the role left out, or the token in", err)
			}
		})
	}
}

func TestUnavailableAnswers(t *testing.T) {
	for _, tc := range []struct {
		status int
		code   string
	}{
		{500, "InternalFailure"}, {502, ""}, {503, "ServiceUnavailable"}, {504, ""}, {429, ""},
		{400, "Throttling"}, {400, "IDPCommunicationError"}, {400, "RequestLimitExceeded"},
	} {
		t.Run(fmt.Sprintf("%d %s", tc.status, tc.code), func(t *testing.T) {
			body := stsErrorBody("Receiver", tc.code, "Rate exceeded")
			if tc.code == "" {
				body = "<html>Bad gateway</html>"
			}
			_, err := assume(newSTSServer(t, answer(tc.status, body)).client(t))
			var d *Denied
			if !errors.Is(err, ErrUnavailable) || errors.As(err, &d) {
				t.Fatalf("%v: want ErrUnavailable only", err)
			}
			if tc.code != "" && !strings.Contains(err.Error(), tc.code+": Rate exceeded") {
				t.Fatalf("%v: STS's code and message left out", err)
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	s := newSTSServer(t, answer(200, okAnswer))
	cfg := s.config()
	s.Close()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := assume(c); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("%v, want ErrUnavailable (connection refused)", err)
	}
}

func TestConnectionReset(t *testing.T) {
	s := newSTSServer(t, func(w http.ResponseWriter, r *http.Request) {
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
	if _, err := assume(s.client(t)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("%v, want ErrUnavailable", err)
	}
}

func TestTimeout(t *testing.T) {
	// The server never answers; the call gives up after Timeout.
	s := newSTSServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	cfg := s.config()
	cfg.Timeout = 200 * time.Millisecond
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err = assume(c)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want ErrUnavailable (deadline exceeded)", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("gave up after %v with a timeout of %v", took, cfg.Timeout)
	}
	// The caller's own deadline counts too.
	cfg.Timeout = time.Minute
	if c, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.AssumeRoleWithWebIdentity(ctx, testRole, testSession, testToken); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("%v, want ErrUnavailable", err)
	}
}

func TestCAFileTrust(t *testing.T) {
	s := newSTSServer(t, answer(200, okAnswer))
	other := otherCA(t)

	// Trusted through CAFile.
	if _, err := assume(s.client(t)); err != nil {
		t.Fatal(err)
	}
	// The system roots alone, or another CA: refused, and counted as
	// unavailable (the pod gets 503, never credentials from an unverified
	// server), and the token never sent.
	for name, caFile := range map[string]string{"system roots": "", "another CA": other} {
		cfg := s.config()
		cfg.CAFile = caFile
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = assume(c)
		var verr *tls.CertificateVerificationError
		if !errors.Is(err, ErrUnavailable) || !errors.As(err, &verr) {
			t.Errorf("%s: %v, want ErrUnavailable from a certificate verification error", name, err)
		}
	}
	if n := len(s.requests()); n != 1 {
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
	const arn = "arn:aws:sts::123456789012:assumed-role/app/s"
	for _, tc := range []struct {
		name, body string
	}{
		{"not XML", `{"Credentials":{}}`},
		{"another response", `<AssumeRoleResponse><AssumeRoleResult></AssumeRoleResult></AssumeRoleResponse>`},
		{"no access key", success("", "secret", "token", "2026-12-02T11:00:00Z", arn)},
		{"no secret", success("ASIAX", "", "token", "2026-12-02T11:00:00Z", arn)},
		{"no session token", success("ASIAX", "secret", "", "2026-12-02T11:00:00Z", arn)},
		{"no expiration", success("ASIAX", "secret", "token", "", arn)},
		{"bad expiration", success("ASIAX", "secret", "token", "tomorrow", arn)},
		{"no ARN", success("ASIAX", "secret", "token", "2026-12-02T11:00:00Z", "")},
		{"ARN without account", success("ASIAX", "secret", "token", "2026-12-02T11:00:00Z", "arn:aws:sts:::assumed-role/app/s")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := assume(newSTSServer(t, answer(200, tc.body)).client(t))
			var d *Denied
			if err == nil || errors.Is(err, ErrUnavailable) || errors.As(err, &d) {
				t.Fatalf("%v: want a plain error", err)
			}
			if strings.Contains(err.Error(), "secret") && tc.name != "no secret" {
				t.Fatalf("%v: the secret in the error", err)
			}
		})
	}
}

func TestNoRedirect(t *testing.T) {
	var followed bool
	var s *stsServer
	s = newSTSServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed = true
			return
		}
		http.Redirect(w, r, s.URL+"/elsewhere", http.StatusTemporaryRedirect)
	})
	if _, err := assume(s.client(t)); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("%v, want a plain error", err)
	}
	if followed {
		t.Fatal("a redirect was followed")
	}
}

func TestArgumentsCheckedBeforeCalling(t *testing.T) {
	s := newSTSServer(t, answer(200, okAnswer))
	c := s.client(t)
	ctx := context.Background()
	for name, args := range map[string][3]string{
		"no role":          {"", testSession, testToken},
		"user ARN":         {"arn:aws:iam::123456789012:user/app", testSession, testToken},
		"short session":    {testRole, "a", testToken},
		"long session":     {testRole, strings.Repeat("s", 65), testToken},
		"slash in session": {testRole, "team/app", testToken},
		"no token":         {testRole, testSession, ""},
		"huge token":       {testRole, testSession, strings.Repeat("t", 20001)},
	} {
		if _, err := c.AssumeRoleWithWebIdentity(ctx, args[0], args[1], args[2]); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if n := len(s.requests()); n != 0 {
		t.Fatalf("%d requests made", n)
	}
}

func TestCredentialsNotPrinted(t *testing.T) {
	creds := Credentials{
		AccessKeyID:     "ASIAEXAMPLEKEY000001",
		SecretAccessKey: "secret-access-key-value",
		SessionToken:    "session-token-value",
		Expiration:      time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC),
		AccountID:       "123456789012",
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("assumed", "credentials", creds)
	out := fmt.Sprintf("%v %+v %#v %s", creds, creds, creds, creds) + fmt.Sprint([]Credentials{creds}, &creds) + buf.String()
	for _, secret := range []string{"secret-access-key-value", "session-token-value"} {
		if strings.Contains(out, secret) {
			t.Fatalf("%s printed: %s", secret, out)
		}
	}
	for _, want := range []string{"ASIAEXAMPLEKEY000001", "123456789012", "2026-12-02T10:00:00Z"} {
		if !strings.Contains(buf.String(), want) || !strings.Contains(creds.String(), want) {
			t.Fatalf("%s not printed: %s / %s", want, buf.String(), creds)
		}
	}
}
