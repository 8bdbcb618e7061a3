package issuer

import (
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// JWKSPath and DiscoveryPath are where, under the issuer URL, relying
// parties find the public keys and the OIDC discovery document, and the
// content types they are served as.
const (
	JWKSPath             = "/openid/v1/jwks"
	DiscoveryPath        = "/.well-known/openid-configuration"
	JWKSContentType      = "application/jwk-set+json"
	DiscoveryContentType = "application/json"
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

// JWKS returns the public keys tokens may be signed with: the current key
// first, then the retired keys still published.
func (i *Issuer) JWKS() jose.JSONWebKeySet {
	i.mu.Lock()
	defer i.mu.Unlock()
	set, _ := i.jwksLocked(i.Now())
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

// JWKSJSON is the JWKS document, encoded once per change of the key set or
// of the keys published. Callers must not modify it.
func (i *Issuer) JWKSJSON() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	now := i.Now()
	i.keySetLocked(now) // a reload clears i.jwks
	if i.jwks != nil && !now.Before(i.jwksAt) && (i.jwksUntil.IsZero() || now.Before(i.jwksUntil)) {
		return i.jwks
	}
	set, until := i.jwksLocked(now)
	data, err := json.Marshal(set)
	if err != nil { // public ECDSA keys always encode
		panic(fmt.Sprintf("encode JWKS: %v", err))
	}
	i.jwks, i.jwksAt, i.jwksUntil = data, now, until
	return data
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

// DiscoveryJSON is the discovery document, encoded once. Callers must not
// modify it.
func (i *Issuer) DiscoveryJSON() []byte { return i.discovery }

// PathPrefix is the issuer URL's path, so the documents can be served
// under it as well as at the root.
func (i *Issuer) PathPrefix() string {
	u, err := url.Parse(i.url)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(u.Path, "/")
}
