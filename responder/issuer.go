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
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// OIDCMaxAge is how long a relying party may cache the discovery document
// and the JWKS (Cache-Control: max-age).
//
// The bound that matters is how soon a verifier sees a NEW key: after
// `metabindctl keys rotate` the responder signs with the new key within a
// second, so a verifier holding a JWKS fetched before the rotation lacks
// the new kid until its copy is OIDCMaxAge old. Many verifiers refetch on
// an unknown kid; one that does not refuses the new tokens for up to
// OIDCMaxAge. Five minutes is the clock skew RetiredKeyPublication already
// allows for, so a verifier with a stale JWKS is never later than one
// whose clock is off by the tolerated amount, and one fetch per five
// minutes per relying party costs the responder nothing (the body is
// precomputed).
//
// The retired key needs no cache bound to keep verifying: it stays
// published until every token it signed has expired
// (RetiredKeyPublication, 1 h 5 min), so any copy fetched while such a
// token is valid holds it. The bound matters once the key is dropped: a
// verifier trusts it until its copy is OIDCMaxAge old, so a key retired
// because it leaked is trusted at most RetiredKeyPublication + OIDCMaxAge
// after the rotation. TestOIDCDocumentsCacheControl keeps OIDCMaxAge
// below both the publication window and its skew allowance.
const OIDCMaxAge = 5 * time.Minute

// oidcCacheHeader is the Cache-Control value of the OIDC documents,
// shared like the values in gce.go: never written to.
var oidcCacheHeader = []string{"max-age=" + strconv.Itoa(int(OIDCMaxAge/time.Second))}

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
	data, err := readKeyFile(path)
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

// writeSigningKey writes key to path unless a key is there already
// (fs.ErrExist then); see writeKeyFile.
func writeSigningKey(path string, key *ecdsa.PrivateKey) error {
	data, err := encodePrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeKeyFile(path, data, false); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("write signing key: %w", err)
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
// relying parties should accept: the current key and every retired key
// still within its publication window (RetiredKeyPublication after its
// retirement), so tokens signed before a rotation keep verifying.
//
// An issuer opened on a state directory (OpenIssuer) follows rotations
// without a signal: at most once per second, on the request path, it stats
// signing-key.pem and retired-keys/ and rereads them when either changed.
// If the new files cannot be read it keeps its keys and logs why.
type Issuer struct {
	url       string
	lifetime  time.Duration
	discovery []byte // precomputed OIDC discovery document

	stateDir string // "" for a fixed key (NewIssuer)
	log      *slog.Logger
	now      func() time.Time

	// checkedKeys is keys and checked as of the last check, read without
	// the lock: the request path takes i.mu at most once per
	// keyCheckInterval.
	checkedKeys atomic.Pointer[checkedKeySet]

	mu        sync.Mutex
	keys      *keySet
	stamp     keyStamp
	checked   time.Time // last stat of the key files
	jwks      *body     // cached JWKS; nil after a change
	jwksAt    time.Time // when the cached JWKS was made
	jwksUntil time.Time // when the cached JWKS loses a retired key
}

type signingKey struct {
	kid string
	key *ecdsa.PrivateKey
}

// checkedKeySet is a key set and when the key files were last checked.
type checkedKeySet struct {
	keys    *keySet
	checked time.Time
}

// NewIssuer returns an issuer for cfg (completed by ParseConfig) signing
// with key, and publishing only that key.
func NewIssuer(cfg IssuerConfig, key *ecdsa.PrivateKey) (*Issuer, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, errors.New("issuer key must be ECDSA P-256")
	}
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	return newIssuer(cfg, &keySet{current: signingKey{kid: kid, key: key}}, "", nil)
}

// OpenIssuer returns an issuer for cfg that signs with
// <stateDir>/signing-key.pem (created, mode 0600, when missing; created
// reports it), publishes the retired keys of <stateDir>/retired-keys and
// follows rotations (RotateSigningKey). Retired key files it cannot use
// are skipped and logged. A nil log discards.
func OpenIssuer(cfg IssuerConfig, stateDir string, log *slog.Logger) (iss *Issuer, created bool, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, created, err = LoadSigningKey(SigningKeyPath(stateDir)); err != nil {
		return nil, false, err
	}
	stamp := statKeys(stateDir)
	keys, err := readKeySet(stateDir)
	if err != nil {
		return nil, false, err
	}
	for _, p := range keys.problems {
		log.Warn("skipping a retired signing key; tokens it signed no longer verify", "error", p.Error())
	}
	iss, err = newIssuer(cfg, keys, stateDir, log)
	if err != nil {
		return nil, false, err
	}
	iss.stamp = stamp
	return iss, created, nil
}

func newIssuer(cfg IssuerConfig, keys *keySet, stateDir string, log *slog.Logger) (*Issuer, error) {
	if cfg.URL == "" || cfg.Lifetime <= 0 {
		return nil, errors.New("issuer config is not complete")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	iss := &Issuer{
		url:      cfg.URL,
		lifetime: cfg.Lifetime,
		stateDir: stateDir,
		log:      log,
		now:      time.Now,
		keys:     keys,
	}
	var err error
	if iss.discovery, err = json.Marshal(iss.Discovery()); err != nil {
		return nil, fmt.Errorf("encode discovery document: %w", err)
	}
	iss.checked = iss.now()
	return iss, nil
}

// keySetLocked returns the keys, first rereading them if the files changed
// (checked at most once per keyCheckInterval). Callers hold i.mu.
func (i *Issuer) keySetLocked(now time.Time) *keySet {
	if i.stateDir == "" || now.Sub(i.checked) < keyCheckInterval && !now.Before(i.checked) {
		return i.keys
	}
	i.checked = now
	stamp := statKeys(i.stateDir)
	if stamp == i.stamp {
		return i.keys
	}
	// Recorded even on failure: the files are reread when they change
	// again (a chmod changes ctime), not every second.
	i.stamp = stamp
	keys, err := readKeySet(i.stateDir)
	if err != nil {
		i.log.Error("cannot reload the signing keys; still signing with the previous key", "kid", i.keys.current.kid, "error", err.Error())
		return i.keys
	}
	for _, p := range keys.problems {
		i.log.Warn("skipping a retired signing key; tokens it signed no longer verify", "error", p.Error())
	}
	if keys.current.kid != i.keys.current.kid || len(keys.retired) != len(i.keys.retired) {
		i.log.Info("signing keys reloaded", "kid", keys.current.kid, "previousKid", i.keys.current.kid, "retiredKeys", len(keys.retired))
	}
	i.keys = keys
	i.jwks = nil
	return keys
}

// current is the key to sign with. Within keyCheckInterval of the last
// check it takes no lock.
func (i *Issuer) current() signingKey {
	now := i.now()
	if ck := i.checkedKeys.Load(); ck != nil && (i.stateDir == "" || now.Sub(ck.checked) < keyCheckInterval && !now.Before(ck.checked)) {
		return ck.keys.current
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	keys := i.keySetLocked(now)
	i.checkedKeys.Store(&checkedKeySet{keys: keys, checked: i.checked})
	return keys.current
}

// URL is the iss claim.
func (i *Issuer) URL() string { return i.url }

// KeyID names the key tokens are signed with now.
func (i *Issuer) KeyID() string { return i.current().kid }

// Lifetime is how long a token is valid.
func (i *Issuer) Lifetime() time.Duration { return i.lifetime }

// JWKS returns the public keys tokens may be signed with: the current key
// first, then the retired keys still published.
func (i *Issuer) JWKS() jose.JSONWebKeySet {
	i.mu.Lock()
	defer i.mu.Unlock()
	set, _ := i.jwksLocked(i.now())
	return set
}

func (i *Issuer) jwksLocked(now time.Time) (set jose.JSONWebKeySet, until time.Time) {
	keys := i.keySetLocked(now)
	jwk := func(kid string, pub *ecdsa.PublicKey) jose.JSONWebKey {
		return jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}
	}
	set.Keys = append(set.Keys, jwk(keys.current.kid, &keys.current.key.PublicKey))
	for _, r := range keys.retired {
		end := r.publishedUntil()
		if !end.After(now) {
			continue
		}
		set.Keys = append(set.Keys, jwk(r.kid, r.pub))
		if until.IsZero() || end.Before(until) {
			until = end
		}
	}
	return set, until
}

// jwksBody is the JWKS document, encoded once per change of the key set
// or of the keys published.
func (i *Issuer) jwksBody() body {
	i.mu.Lock()
	defer i.mu.Unlock()
	now := i.now()
	i.keySetLocked(now) // a reload clears i.jwks
	if i.jwks != nil && !now.Before(i.jwksAt) && (i.jwksUntil.IsZero() || now.Before(i.jwksUntil)) {
		return *i.jwks
	}
	set, until := i.jwksLocked(now)
	data, err := json.Marshal(set)
	if err != nil { // public ECDSA keys always encode
		panic(fmt.Sprintf("encode JWKS: %v", err))
	}
	b := newBody(data, "application/jwk-set+json")
	i.jwks, i.jwksAt, i.jwksUntil = &b, now, until
	return b
}

// jwksJSON is the JWKS document's bytes.
func (i *Issuer) jwksJSON() []byte { return i.jwksBody().data }

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

// Sign signs c with the current key (ES256, header kid) as a plain JWT
// (typ TypeIDToken).
func (i *Issuer) Sign(c *Claims) (string, error) {
	tok, _, err := i.sign(c, TypeIDToken)
	return tok, err
}

// sign signs c as a token of type typ (TypeIDToken or TypeAccessToken) and
// returns it with the key ID used.
func (i *Issuer) sign(c *Claims, typ string) (tok, kid string, err error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	k := i.current()
	t.Header["kid"] = k.kid
	t.Header["typ"] = typ
	s, err := t.SignedString(k.key)
	if err != nil {
		return "", "", fmt.Errorf("sign token: %w", err)
	}
	return s, k.kid, nil
}
