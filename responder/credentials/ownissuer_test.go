package credentials

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/responder/subject"
)

func testOwnIssuer(t *testing.T) (*OwnIssuer, *issuer.Issuer) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := issuer.New(issuer.Config{URL: "https://metabind.local/node-1", Lifetime: 30 * time.Minute}, key)
	if err != nil {
		t.Fatal(err)
	}
	ce := ComputeEngineClaims{ProjectID: "p", ProjectNumber: 42, Zone: "z", InstanceID: "7", InstanceName: "node-1"}
	return NewOwnIssuer(iss, "node-1", ce), iss
}

// parse verifies tok with the issuer's one key and returns its claims and
// header.
func parse(t *testing.T, iss *issuer.Issuer, tok string, opts ...jwt.ParserOption) (*Claims, map[string]any) {
	t.Helper()
	var c Claims
	parsed, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return iss.JWKS().Keys[0].Key, nil },
		append([]jwt.ParserOption{jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(iss.URL()), jwt.WithExpirationRequired()}, opts...)...)
	if err != nil {
		t.Fatalf("verify token: %v", err)
	}
	return &c, parsed.Header
}

func TestOwnIssuerIDToken(t *testing.T) {
	o, iss := testOwnIssuer(t)
	s := subject.Subject{Namespace: "payments", Pod: "api-1", PodUID: "uid-1", ServiceAccount: "api",
		Email: "api@p.iam.gserviceaccount.com", EmailClaim: "api@p.iam.gserviceaccount.com"}
	tok, err := o.IDToken(context.Background(), s, "https://aud.example", FormatStandard, false)
	if err != nil {
		t.Fatal(err)
	}
	got, header := parse(t, iss, tok.Value, jwt.WithAudience("https://aud.example"), jwt.WithSubject("system:serviceaccount:payments:api"))
	if header["typ"] != TypeIDToken || header["kid"] != iss.KeyID() || tok.KeyID != iss.KeyID() {
		t.Errorf("header = %v, token says kid %s", header, tok.KeyID)
	}
	if got.ExpiresAt.Sub(got.IssuedAt.Time) != 30*time.Minute || !got.NotBefore.Equal(got.IssuedAt.Time) {
		t.Errorf("iat=%v nbf=%v exp=%v", got.IssuedAt, got.NotBefore, got.ExpiresAt)
	}
	if len(got.ID) < 22 || got.ID != tok.ID || !got.ExpiresAt.Equal(tok.Expiry) || !got.IssuedAt.Equal(tok.IssuedAt) {
		t.Errorf("jti=%q exp=%v; the token says %+v", got.ID, got.ExpiresAt, tok)
	}
	if got.Email != s.EmailClaim || !got.EmailVerified || got.AuthorizedParty != s.EmailClaim || got.Google != nil {
		t.Errorf("claims = %+v", got)
	}
	want := KubernetesClaims{Namespace: "payments", Pod: ObjectRef{"api-1", "uid-1"}, ServiceAccount: ObjectRef{Name: "api"}, Node: ObjectRef{Name: "node-1"}}
	if got.Kubernetes != want {
		t.Errorf("kubernetes.io = %+v, want %+v", got.Kubernetes, want)
	}
	var payload map[string]any
	pb, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok.Value, ".")[1])
	json.Unmarshal(pb, &payload)
	if payload["aud"] != "https://aud.example" {
		t.Errorf("aud = %#v, want one string", payload["aud"])
	}

	// format=full describes the instance; no email claim without an
	// account, and a new jti every time.
	s.EmailClaim = ""
	full, err := o.IDToken(context.Background(), s, "a", FormatFull, true)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := parse(t, iss, full.Value, jwt.WithAudience("a"))
	if c.Google == nil || c.Google.ComputeEngine != o.computeEngine || c.Email != "" || c.EmailVerified ||
		c.AuthorizedParty != "system:serviceaccount:payments:api" || c.ID == got.ID {
		t.Errorf("full token claims = %+v", c)
	}

	// The access tokens' audience is not an ID token's.
	var invalid *Invalid
	if _, err := o.IDToken(context.Background(), s, iss.URL(), FormatStandard, false); !errors.As(err, &invalid) {
		t.Errorf("ID token for the issuer URL: %v", err)
	}
}

func TestOwnIssuerAccessToken(t *testing.T) {
	o, iss := testOwnIssuer(t)
	s := subject.Subject{Namespace: "payments", Pod: "api-1", PodUID: "uid-1", ServiceAccount: "worker", Email: "p.svc.id.goog"}
	tok, err := o.AccessToken(context.Background(), s, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	c, header := parse(t, iss, tok.Value, jwt.WithAudience(iss.URL()))
	if header["typ"] != TypeAccessToken || c.Scope != "a b" || c.ClientID != "system:serviceaccount:payments:worker" || c.Email != "" || c.AuthorizedParty != "" {
		t.Errorf("header %v, claims %+v", header, c)
	}
}
