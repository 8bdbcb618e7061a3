package responder

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// headerOf decodes a JWT's header without verifying anything.
func headerOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	seg, _, ok := strings.Cut(tok, ".")
	if !ok {
		t.Fatalf("not a JWT: %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("JWT header: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("JWT header: %v", err)
	}
	return h
}

// typedVerifier is a relying party that accepts only tokens whose typ
// header is typ (RFC 9068 section 4 for access tokens; RFC 8725 section
// 3.11 for telling kinds apart), signed by a key of jwks.
func typedVerifier(jwks []byte, typ string) func(tok string) error {
	return func(tok string) error {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(jwks, &set); err != nil {
			return err
		}
		_, err := jwt.Parse(tok, func(tok *jwt.Token) (any, error) {
			if got, _ := tok.Header["typ"].(string); got != typ {
				return nil, fmt.Errorf("typ %q, want %q", got, typ)
			}
			kid, _ := tok.Header["kid"].(string)
			keys := set.Key(kid)
			if len(keys) != 1 {
				return nil, errors.New("unknown kid")
			}
			return keys[0].Key, nil
		}, jwt.WithValidMethods([]string{"ES256"}))
		return err
	}
}

// TestTokenTypes: access tokens say typ at+jwt and ID tokens typ JWT, so a
// verifier that checks typ never takes one for the other.
func TestTokenTypes(t *testing.T) {
	h, iss := newTestHandler(t, nil)
	access := accessTokenOf(t, h, cacheToken, apiIP).AccessToken
	ids := map[string]string{
		"standard": idTokenOf(t, h, cacheIdentity, apiIP),
		"full":     idTokenOf(t, h, cacheIdentity+"&format=full", apiIP),
	}

	if typ := headerOf(t, access)["typ"]; typ != "at+jwt" {
		t.Errorf("access token typ = %v, want at+jwt", typ)
	}
	for format, id := range ids {
		if typ := headerOf(t, id)["typ"]; typ != "JWT" {
			t.Errorf("ID token (%s) typ = %v, want JWT", format, typ)
		}
	}

	accessVerifier := typedVerifier(iss.JWKSJSON(), "at+jwt")
	idVerifier := typedVerifier(iss.JWKSJSON(), "JWT")
	if err := accessVerifier(access); err != nil {
		t.Errorf("access token verifier refuses an access token: %v", err)
	}
	if err := idVerifier(access); err == nil {
		t.Error("ID token verifier accepts an access token")
	}
	for format, id := range ids {
		if err := idVerifier(id); err != nil {
			t.Errorf("ID token verifier refuses an ID token (%s): %v", format, err)
		}
		if err := accessVerifier(id); err == nil {
			t.Errorf("access token verifier accepts an ID token (%s)", format)
		}
	}
}

// TestAccessTokenClaims: an access token carries every claim RFC 9068
// section 2.2 requires, client_id naming the same party as an ID token's
// azp.
func TestAccessTokenClaims(t *testing.T) {
	h, iss := newTestHandler(t, nil)
	for _, tc := range []struct {
		ip, client string
	}{
		{apiIP, apiEmail}, // with email: the account's email
		{workerIP, "system:serviceaccount:payments:worker"}, // without: the subject
	} {
		claims := claimsOfMap(t, accessTokenOf(t, h, cacheToken, tc.ip).AccessToken)
		for _, name := range []string{"iss", "exp", "aud", "sub", "client_id", "iat", "jti"} {
			if v, ok := claims[name]; !ok || v == "" {
				t.Errorf("%s: access token has no %s claim: %v", tc.ip, name, claims)
			}
		}
		if claims["client_id"] != tc.client || claims["aud"] != iss.URL() {
			t.Errorf("%s: client_id = %v, aud = %v; want %s, %s", tc.ip, claims["client_id"], claims["aud"], tc.client, iss.URL())
		}
		id := claimsOf(t, idTokenOf(t, h, cacheIdentity, tc.ip))
		if id.AuthorizedParty != tc.client {
			t.Errorf("%s: ID token azp = %q, want %q", tc.ip, id.AuthorizedParty, tc.client)
		}
		if _, ok := claimsOfMap(t, idTokenOf(t, h, cacheIdentity, tc.ip))["client_id"]; ok {
			t.Errorf("%s: ID token carries client_id", tc.ip)
		}
	}
}

// claimsOfMap is a JWT's payload as a map, unverified.
func claimsOfMap(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
