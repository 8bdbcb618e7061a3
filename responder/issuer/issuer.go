// Package issuer is the node's own token issuer: its signing keys on disk
// (keyfiles.go: the current key and the retired ones, their checks and
// encodings; rotate.go: rotation and listing, for metabindctl keys), the
// issuer that signs with them and follows rotations (this file), and the
// documents relying parties verify its tokens with (oidc.go). It knows
// nothing of HTTP or of what the tokens say.
package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Issuer signs tokens with its current key and publishes the public keys
// relying parties should accept: the current key and every retired key
// still within its publication window (RetiredKeyPublication after its
// retirement), so tokens signed before a rotation keep verifying.
//
// An issuer opened on a state directory (Open) follows rotations without a
// signal: at most once per second, on the request path, it stats
// signing-key.pem and retired-keys/ and rereads them when either changed.
// If the new files cannot be read it keeps its keys and logs why.
type Issuer struct {
	// Now is the issuer's clock; tests replace it before first use.
	Now func() time.Time

	url       string
	lifetime  time.Duration
	discovery []byte // precomputed OIDC discovery document

	stateDir string // "" for a fixed key (New)
	log      *slog.Logger

	// checkedKeys is keys and checked as of the last check, read without
	// the lock: the request path takes i.mu at most once per
	// keyCheckInterval.
	checkedKeys atomic.Pointer[checkedKeySet]

	mu        sync.Mutex
	keys      *keySet
	stamp     keyStamp
	checked   time.Time // last stat of the key files
	jwks      []byte    // cached JWKS document; nil after a change
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

// New returns an issuer for cfg (completed) signing with key, and
// publishing only that key.
func New(cfg Config, key *ecdsa.PrivateKey) (*Issuer, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, errors.New("issuer key must be ECDSA P-256")
	}
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	return newIssuer(cfg, &keySet{current: signingKey{kid: kid, key: key}}, "", nil)
}

// Open returns an issuer for cfg (completed) that signs with
// <stateDir>/signing-key.pem (created, mode 0600, when missing; created
// reports it), publishes the retired keys of <stateDir>/retired-keys and
// follows rotations (RotateSigningKey). Retired key files it cannot use
// are skipped and logged. A nil log discards.
func Open(cfg Config, stateDir string, log *slog.Logger) (iss *Issuer, created bool, err error) {
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
	keys.logProblems(log)
	iss, err = newIssuer(cfg, keys, stateDir, log)
	if err != nil {
		return nil, false, err
	}
	iss.stamp = stamp
	return iss, created, nil
}

func newIssuer(cfg Config, keys *keySet, stateDir string, log *slog.Logger) (*Issuer, error) {
	if cfg.URL == "" || cfg.Lifetime <= 0 {
		return nil, errors.New("issuer config is not complete")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	iss := &Issuer{
		Now:      time.Now,
		url:      cfg.URL,
		lifetime: cfg.Lifetime,
		stateDir: stateDir,
		log:      log,
		keys:     keys,
	}
	var err error
	if iss.discovery, err = json.Marshal(iss.Discovery()); err != nil {
		return nil, fmt.Errorf("encode discovery document: %w", err)
	}
	iss.checked = iss.Now()
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
	keys.logProblems(i.log)
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
	now := i.Now()
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

// Sign signs claims with the current key (ES256, header kid) as a token
// whose header says typ, and returns it with the key ID used.
func (i *Issuer) Sign(claims jwt.Claims, typ string) (token, kid string, err error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	k := i.current()
	t.Header["kid"] = k.kid
	t.Header["typ"] = typ
	s, err := t.SignedString(k.key)
	if err != nil {
		return "", "", fmt.Errorf("sign token: %w", err)
	}
	return s, k.kid, nil
}
