package issuer

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
	iss, err := New(Config{URL: "https://metabind.local/node-1", Lifetime: 30 * time.Minute}, key)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// verify checks a token's ES256 signature with the key its kid names in a
// JWKS document (with go-jose, not the JWT library the issuer signs with),
// and its typ header, and returns the payload's registered claims after
// checking them against opts.
func verify(t *testing.T, jwksJSON []byte, tok, typ string, opts ...jwt.ParserOption) *jwt.RegisteredClaims {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksJSON, &set); err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(jws.Signatures) != 1 {
		t.Fatalf("not a signed token: %v", err)
	}
	h := jws.Signatures[0].Header
	keys := set.Key(h.KeyID)
	if len(keys) != 1 || keys[0].Algorithm != "ES256" || keys[0].Use != "sig" {
		t.Fatalf("kid %q names %d keys in the JWKS: %+v", h.KeyID, len(keys), keys)
	}
	if h.ExtraHeaders["typ"] != typ {
		t.Errorf("typ = %v, want %s", h.ExtraHeaders["typ"], typ)
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("verify token: %v", err)
	}
	var claims jwt.RegisteredClaims
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if err := jwt.NewValidator(opts...).Validate(claims); err != nil {
		t.Errorf("claims: %v", err)
	}
	return &claims
}

// TestIssuerSigns: a token verifies against the issuer's JWKS, and its
// header names the key and the type it was signed as.
func TestIssuerSigns(t *testing.T) {
	iss := testIssuer(t)
	now := time.Now().Truncate(time.Second)
	for _, typ := range []string{"JWT", "at+jwt"} {
		tok, kid, err := iss.Sign(&jwt.RegisteredClaims{Issuer: iss.URL(), Audience: jwt.ClaimStrings{"aud"}, ExpiresAt: jwt.NewNumericDate(now.Add(iss.Lifetime()))}, typ)
		if err != nil {
			t.Fatal(err)
		}
		if kid != iss.KeyID() {
			t.Errorf("signed with %s, the issuer's key is %s", kid, iss.KeyID())
		}
		verify(t, iss.JWKSJSON(), tok, typ, jwt.WithAudience("aud"), jwt.WithIssuer("https://metabind.local/node-1"), jwt.WithExpirationRequired())
		var header map[string]any
		hb, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
		json.Unmarshal(hb, &header)
		if header["alg"] != "ES256" || header["kid"] != iss.KeyID() {
			t.Errorf("header = %v", header)
		}
	}
}

func TestIssuerDocuments(t *testing.T) {
	iss := testIssuer(t)
	var doc map[string]any
	if err := json.Unmarshal(iss.DiscoveryJSON(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["issuer"] != "https://metabind.local/node-1" || doc["jwks_uri"] != "https://metabind.local/node-1/openid/v1/jwks" {
		t.Errorf("discovery = %v", doc)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(iss.JWKSJSON(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0].KeyID != iss.KeyID() || !set.Keys[0].IsPublic() {
		t.Errorf("JWKS = %+v", set)
	}
	if strings.Contains(string(iss.JWKSJSON()), `"d"`) {
		t.Error("JWKS holds a private key")
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
