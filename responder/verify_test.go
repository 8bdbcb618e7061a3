package responder

import (
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/metabind/metabind/responder/credentials"
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

// verify checks an ID token against the JWKS the issuer serves, as a
// relying party would, and returns its claims.
func verify(t *testing.T, jwksJSON []byte, tok string, opts ...jwt.ParserOption) *credentials.Claims {
	t.Helper()
	return verifyTyped(t, credentials.TypeIDToken, jwksJSON, tok, opts...)
}

// verifyAccess is verify for an access token.
func verifyAccess(t *testing.T, jwksJSON []byte, tok string, opts ...jwt.ParserOption) *credentials.Claims {
	t.Helper()
	return verifyTyped(t, credentials.TypeAccessToken, jwksJSON, tok, opts...)
}

// verifyTyped is verify for a token whose header says typ.
func verifyTyped(t *testing.T, typ string, jwksJSON []byte, tok string, opts ...jwt.ParserOption) *credentials.Claims {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksJSON, &set); err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	var claims credentials.Claims
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
