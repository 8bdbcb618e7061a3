package responder

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/metabind/metabind/responder/issuer"
)

// clock is an injectable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// openTestIssuer opens the issuer of dir on clock c.
func openTestIssuer(t *testing.T, dir string, c *clock, log *slog.Logger) *issuer.Issuer {
	t.Helper()
	iss, _, err := issuer.Open(issuer.Config{URL: "https://metabind.local/node-1", Lifetime: time.Hour}, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	iss.Now = c.now
	return iss
}

func testIssuer(t *testing.T) *issuer.Issuer {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := issuer.New(issuer.Config{URL: "https://metabind.local/node-1", Lifetime: 30 * time.Minute}, key)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// verify checks an ID token against the JWKS the issuer serves, as a
// relying party would, and returns its claims.
func verify(t *testing.T, jwksJSON []byte, tok string, opts ...jwt.ParserOption) *Claims {
	t.Helper()
	return verifyTyped(t, TypeIDToken, jwksJSON, tok, opts...)
}

// verifyAccess is verify for an access token.
func verifyAccess(t *testing.T, jwksJSON []byte, tok string, opts ...jwt.ParserOption) *Claims {
	t.Helper()
	return verifyTyped(t, TypeAccessToken, jwksJSON, tok, opts...)
}

// verifyTyped is verify for a token whose header says typ.
func verifyTyped(t *testing.T, typ string, jwksJSON []byte, tok string, opts ...jwt.ParserOption) *Claims {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksJSON, &set); err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	var claims Claims
	parsed, err := jwt.ParseWithClaims(tok, &claims, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		keys := set.Key(kid)
		if len(keys) != 1 {
			t.Fatalf("kid %q names %d keys in the JWKS", kid, len(keys))
		}
		if keys[0].Algorithm != "ES256" || keys[0].Use != "sig" {
			t.Errorf("JWK alg=%q use=%q", keys[0].Algorithm, keys[0].Use)
		}
		return keys[0].Key, nil
	}, append([]jwt.ParserOption{jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuedAt()}, opts...)...)
	if err != nil {
		t.Fatalf("verify token: %v", err)
	}
	if got := parsed.Header["typ"]; got != typ {
		t.Errorf("typ = %v, want %s", got, typ)
	}
	return &claims
}

func TestIssuerSignsVerifiableTokens(t *testing.T) {
	iss := testIssuer(t)
	now := time.Now()
	c := NewClaims(iss, Subject{
		Namespace: "payments", Pod: "api-1", PodUID: "uid-1", ServiceAccount: "api",
		Email: "api@p.iam.gserviceaccount.com", Node: "node-1",
	}, []string{"https://aud.example"}, now)
	tok, _, err := iss.Sign(c, TypeIDToken)
	if err != nil {
		t.Fatal(err)
	}
	got := verify(t, iss.JWKSJSON(), tok,
		jwt.WithIssuer("https://metabind.local/node-1"),
		jwt.WithAudience("https://aud.example"),
		jwt.WithSubject("system:serviceaccount:payments:api"),
		jwt.WithExpirationRequired())
	if got.ExpiresAt.Sub(got.IssuedAt.Time) != 30*time.Minute || !got.NotBefore.Equal(got.IssuedAt.Time) {
		t.Errorf("iat=%v nbf=%v exp=%v", got.IssuedAt, got.NotBefore, got.ExpiresAt)
	}
	if len(got.ID) < 22 || got.Email != "api@p.iam.gserviceaccount.com" {
		t.Errorf("jti=%q email=%q", got.ID, got.Email)
	}
	want := KubernetesClaims{Namespace: "payments", Pod: ObjectRef{"api-1", "uid-1"}, ServiceAccount: ObjectRef{Name: "api"}, Node: ObjectRef{Name: "node-1"}}
	if got.Kubernetes != want {
		t.Errorf("kubernetes.io = %+v, want %+v", got.Kubernetes, want)
	}

	// The raw header and payload.
	parts := strings.Split(tok, ".")
	var header map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	json.Unmarshal(hb, &header)
	if header["alg"] != "ES256" || header["kid"] != iss.KeyID() {
		t.Errorf("header = %v", header)
	}
	var payload map[string]any
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(pb, &payload)
	if payload["aud"] != "https://aud.example" {
		t.Errorf("aud = %#v, want one string", payload["aud"])
	}

	// A second token has a different jti.
	c2 := NewClaims(iss, Subject{Namespace: "payments", ServiceAccount: "api"}, []string{"a"}, now)
	if c2.ID == c.ID {
		t.Error("jti repeats")
	}
	if c2.Email != "" {
		t.Error("email claim without email")
	}
}
