// Package jwksverify checks a JWT's signature against an issuer's JWKS the
// way a relying party does (the kid names the key; keys for encryption, or
// for another algorithm, do not count): the one check the token-exchange
// stand-ins (fakegoogle's STS, fakeaws's STS) share. Each stand-in words the
// refusal its service would send.
package jwksverify

import (
	"errors"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// Refusals Verify returns.
var (
	// ErrNoKey: the JWKS has no key for the token's kid.
	ErrNoKey = errors.New("no key for the token's kid")
	// ErrSignature: no candidate key verifies the signature.
	ErrSignature = errors.New("signature does not verify")
)

// Verify checks tok (one signature) against set and, when it verifies,
// fills claims. It returns the token's kid and algorithm for messages.
func Verify(tok *josejwt.JSONWebToken, set jose.JSONWebKeySet, claims any) (kid, alg string, err error) {
	kid, alg = tok.Headers[0].KeyID, tok.Headers[0].Algorithm
	candidates := set.Keys
	if kid != "" {
		candidates = set.Key(kid)
	}
	if len(candidates) == 0 {
		return kid, alg, ErrNoKey
	}
	for _, k := range candidates {
		if k.Use == "enc" || (k.Algorithm != "" && k.Algorithm != alg) {
			continue
		}
		pub := k.Public()
		if !pub.Valid() {
			continue
		}
		if tok.Claims(pub.Key, claims) == nil {
			return kid, alg, nil
		}
	}
	return kid, alg, ErrSignature
}
