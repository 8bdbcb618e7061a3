package integration

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

const issuerURL = "https://metabind.test/node-test"

// k8sClaims are the Kubernetes service-account claims metabind signs, and
// the cluster's issuer too (without email).
type k8sClaims struct {
	jwt.RegisteredClaims
	Email      string `json:"email"`
	Kubernetes struct {
		Namespace string `json:"namespace"`
		Pod       struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
		ServiceAccount struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
		Node struct {
			Name string `json:"name"`
		} `json:"node"`
	} `json:"kubernetes.io"`
}

// jwks fetches the responder's key set the way a pod (or any relying party
// the node exposes it to) would: through the metadata address.
func (p *pod) jwks(t *testing.T) jose.JSONWebKeySet {
	t.Helper()
	code, body, err := p.metadataGet("/openid/v1/jwks")
	if err != nil || code != 200 {
		t.Fatalf("JWKS from %s: %d %v %s", p.name, code, err, body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		t.Fatalf("JWKS: %v\n%s", err, body)
	}
	return set
}

// verify checks the signature against keys, the issuer, the audience and
// the time claims, and returns the claims.
func verify(token string, keys jose.JSONWebKeySet, audience string) (*k8sClaims, error) {
	return verifyFrom(token, keys, issuerURL, audience)
}

// verifyFrom is verify for tokens of another issuer: the cluster's, whose
// keys may be RSA.
func verifyFrom(token string, keys jose.JSONWebKeySet, issuer, audience string) (*k8sClaims, error) {
	claims := &k8sClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		found := keys.Key(kid)
		if len(found) != 1 {
			return nil, fmt.Errorf("kid %q: %d keys in the JWKS", kid, len(found))
		}
		return found[0].Key, nil
	}, jwt.WithValidMethods([]string{"ES256", "RS256"}), jwt.WithIssuer(issuer), jwt.WithAudience(audience),
		jwt.WithIssuedAt(), jwt.WithExpirationRequired())
	return claims, err
}
