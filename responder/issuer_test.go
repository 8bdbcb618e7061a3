package responder

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

func TestLoadSigningKeyCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := SigningKeyPath(dir)
	key, created, err := LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Error("created = false for a new key")
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %04o, want %04o", p, got, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d files, want only the key", len(entries))
	}

	again, created, err := LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if created || !again.Equal(key) {
		t.Errorf("second load: created=%v, same key=%v", created, again.Equal(key))
	}
}

func TestLoadSigningKeyRefusesOpenMode(t *testing.T) {
	path := SigningKeyPath(t.TempDir())
	if _, _, err := LoadSigningKey(path); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadSigningKey(path)
		if err == nil || !strings.Contains(err.Error(), "readable by other users") || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: error = %v", mode, err)
		}
	}
}

func writeKeyPEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	path := SigningKeyPath(t.TempDir())
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadSigningKeyFormats(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(p256)
	key, created, err := LoadSigningKey(writeKeyPEM(t, "EC PRIVATE KEY", sec1))
	if err != nil || created || !key.Equal(p256) {
		t.Errorf("SEC1: key equal=%v created=%v err=%v", key != nil && key.Equal(p256), created, err)
	}

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(p384)
	if _, _, err := LoadSigningKey(writeKeyPEM(t, "PRIVATE KEY", der)); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Errorf("P-384 key: error = %v", err)
	}
	if _, _, err := LoadSigningKey(writeKeyPEM(t, "CERTIFICATE", der)); err == nil {
		t.Error("CERTIFICATE block accepted")
	}
}

func TestKeyID(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	sum := sha256.Sum256(der)
	want := base64.RawURLEncoding.EncodeToString(sum[:])
	got, err := KeyID(&key.PublicKey)
	if err != nil || got != want {
		t.Errorf("KeyID = %q, %v; want %q", got, err, want)
	}
	if strings.ContainsAny(got, "=+/") {
		t.Errorf("KeyID %q is not base64url without padding", got)
	}
}

func testIssuer(t *testing.T) *Issuer {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := NewIssuer(IssuerConfig{URL: "https://metabind.local/node-1", Lifetime: 30 * time.Minute}, key)
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
	c := iss.NewClaims(Subject{
		Namespace: "payments", Pod: "api-1", PodUID: "uid-1", ServiceAccount: "api",
		Email: "api@p.iam.gserviceaccount.com", Node: "node-1",
	}, []string{"https://aud.example"}, now)
	tok, err := iss.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	got := verify(t, iss.jwksJSON(), tok,
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
	c2 := iss.NewClaims(Subject{Namespace: "payments", ServiceAccount: "api"}, []string{"a"}, now)
	if c2.ID == c.ID {
		t.Error("jti repeats")
	}
	if c2.Email != "" {
		t.Error("email claim without email")
	}
}

func TestIssuerDocuments(t *testing.T) {
	iss := testIssuer(t)
	var doc map[string]any
	if err := json.Unmarshal(iss.discovery, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["issuer"] != "https://metabind.local/node-1" || doc["jwks_uri"] != "https://metabind.local/node-1/openid/v1/jwks" {
		t.Errorf("discovery = %v", doc)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(iss.jwksJSON(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0].KeyID != iss.KeyID() || !set.Keys[0].IsPublic() {
		t.Errorf("JWKS = %+v", set)
	}
	if strings.Contains(string(iss.jwksJSON()), `"d"`) {
		t.Error("JWKS holds a private key")
	}
}

func TestIdentityRefusesTheIssuerAsAudience(t *testing.T) {
	h, iss := newTestHandler(t, nil)
	rec := do(t, h, "GET", "/computeMetadata/v1/instance/service-accounts/default/identity?audience="+iss.URL(), apiIP, flavor)
	if rec.Code != 400 {
		t.Fatalf("ID token with the access tokens' audience: %d %s", rec.Code, rec.Body)
	}
}

func TestLoadSigningKeyRefusesAnotherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to chown the key file")
		}
		t.Skip("needs root to chown the key file")
	}
	path := filepath.Join(t.TempDir(), SigningKeyFile)
	if _, _, err := LoadSigningKey(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadSigningKey(path); err == nil || !strings.Contains(err.Error(), "chown") {
		t.Fatalf("a key owned by another user was accepted: %v", err)
	}
}
