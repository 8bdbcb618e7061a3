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
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// SigningKeyFile is the issuer key's name under the state directory.
const SigningKeyFile = "signing-key.pem"

// JWKSPath and DiscoveryPath are where, under the issuer URL, relying
// parties find the public keys and the OIDC discovery document.
const (
	JWKSPath      = "/openid/v1/jwks"
	DiscoveryPath = "/.well-known/openid-configuration"
)

// SigningKeyPath is the issuer key's path under stateDir.
func SigningKeyPath(stateDir string) string { return filepath.Join(stateDir, SigningKeyFile) }

// LoadSigningKey reads the P-256 key at path (PKCS#8 or SEC1 PEM), or, when
// there is none, creates one with mode 0600 (and its directory with 0700).
// created reports the latter. A key file that group or others can access
// is refused.
func LoadSigningKey(path string) (key *ecdsa.PrivateKey, created bool, err error) {
	key, err = readSigningKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create state dir: %w", err)
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generate signing key: %w", err)
	}
	switch err := writeSigningKey(path, key); {
	case errors.Is(err, fs.ErrExist):
		// Another process created one first; use it.
		key, err = readSigningKey(path)
		return key, false, err
	case err != nil:
		return nil, false, err
	}
	return key, true, nil
}

func readSigningKey(path string) (*ecdsa.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("signing key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("signing key %s is readable by other users (mode %04o); fix it with: chmod 600 %s", path, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("signing key %s belongs to uid %d, not to this process (uid %d); fix it with: chown %d %s", path, st.Uid, os.Geteuid(), os.Geteuid(), path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	key, err := ParseSigningKey(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return key, nil
}

// ParseSigningKey decodes a P-256 private key from PEM, PKCS#8 ("PRIVATE
// KEY") or SEC1 ("EC PRIVATE KEY").
func ParseSigningKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want an ECDSA P-256 key", key)
	}
	if ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key is on %s, want P-256", ec.Curve.Params().Name)
	}
	return ec, nil
}

// writeSigningKey writes a temporary file and links it into place, so a
// crash never leaves half a key and an existing key is never replaced
// (fs.ErrExist then).
func writeSigningKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode signing key: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".signing-key-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("write signing key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// KeyID is the Kubernetes-style key ID: base64url (no padding) of the
// SHA-256 of the public key's PKIX DER.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// Issuer signs tokens with its current key and publishes the public keys
// relying parties should accept. Today that is the one current key; a
// rotation would add the next key to keys before signing with it.
type Issuer struct {
	url      string
	lifetime time.Duration
	signer   signingKey
	keys     []jose.JSONWebKey // public keys, current first

	discovery []byte // precomputed OIDC documents
	jwks      []byte
}

type signingKey struct {
	kid string
	key *ecdsa.PrivateKey
}

// NewIssuer returns an issuer for cfg (completed by ParseConfig) signing
// with key.
func NewIssuer(cfg IssuerConfig, key *ecdsa.PrivateKey) (*Issuer, error) {
	if cfg.URL == "" || cfg.Lifetime <= 0 {
		return nil, errors.New("issuer config is not complete")
	}
	if key == nil || key.Curve != elliptic.P256() {
		return nil, errors.New("issuer key must be ECDSA P-256")
	}
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	iss := &Issuer{
		url:      cfg.URL,
		lifetime: cfg.Lifetime,
		signer:   signingKey{kid: kid, key: key},
		keys: []jose.JSONWebKey{{
			Key:       &key.PublicKey,
			KeyID:     kid,
			Algorithm: string(jose.ES256),
			Use:       "sig",
		}},
	}
	if iss.jwks, err = json.Marshal(iss.JWKS()); err != nil {
		return nil, fmt.Errorf("encode JWKS: %w", err)
	}
	if iss.discovery, err = json.Marshal(iss.Discovery()); err != nil {
		return nil, fmt.Errorf("encode discovery document: %w", err)
	}
	return iss, nil
}

// URL is the iss claim.
func (i *Issuer) URL() string { return i.url }

// KeyID names the key tokens are signed with now.
func (i *Issuer) KeyID() string { return i.signer.kid }

// Lifetime is how long a token is valid.
func (i *Issuer) Lifetime() time.Duration { return i.lifetime }

// JWKS returns the public keys tokens may be signed with.
func (i *Issuer) JWKS() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: append([]jose.JSONWebKey(nil), i.keys...)}
}

// DiscoveryDocument is the OIDC discovery document.
type DiscoveryDocument struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
}

// Discovery returns the OIDC discovery document.
func (i *Issuer) Discovery() DiscoveryDocument {
	return DiscoveryDocument{
		Issuer:                           i.url,
		JWKSURI:                          strings.TrimSuffix(i.url, "/") + JWKSPath,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{string(jose.ES256)},
	}
}

// pathPrefix is the issuer URL's path, so the responder can serve the
// documents under it as well as at the root.
func (i *Issuer) pathPrefix() string {
	u, err := url.Parse(i.url)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(u.Path, "/")
}

// Sign signs c with the current key (ES256, header kid).
func (i *Issuer) Sign(c *Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	t.Header["kid"] = i.signer.kid
	s, err := t.SignedString(i.signer.key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}
