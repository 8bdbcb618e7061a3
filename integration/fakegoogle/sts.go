package fakegoogle

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/metabind/metabind/integration/jwksverify"
)

const stsPath = "/sts/v1/token"

// The token exchange's values, as Google's STS takes them and gcp sends.
const (
	grantTokenExchange   = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
)

// Subject token limits, Google's: a token may be issued at most this far in
// the future of the clock, live at most maxSubjectLifetime, and its sub
// (mapped to google.subject) is at most maxSubject bytes.
const (
	clockSkew          = time.Minute
	maxSubjectLifetime = 24 * time.Hour
	maxSubject         = 127
)

// stsFields are the form fields of an exchange, each required exactly once;
// no other field is taken.
var stsFields = []string{"grant_type", "audience", "requested_token_type", "subject_token_type", "subject_token", "scope"}

// refusal is an STS error: the OAuth code and Google's description.
type refusal struct {
	code, description string
}

func (r *refusal) Error() string { return r.code + ": " + r.description }

func invalidRequest(format string, args ...any) *refusal {
	return &refusal{"invalid_request", fmt.Sprintf(format, args...)}
}

func invalidGrant(format string, args ...any) *refusal {
	return &refusal{"invalid_grant", fmt.Sprintf(format, args...)}
}

// sts is the token exchange: a subject token of the provider's issuer for a
// federated access token.
func (f *Fake) sts(w http.ResponseWriter, r *http.Request) {
	if f.count(func(c *Calls) *int { return &c.STS }, true) {
		unavailable(w)
		return
	}
	principal, scopes, err := f.exchange(r)
	if err != nil {
		var ref *refusal
		if !errors.As(err, &ref) {
			ref = invalidRequest("%v", err)
		}
		f.denied()
		f.logf("sts refused: %s", ref)
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": ref.code, "error_description": ref.description})
		return
	}
	lifetime := f.o.TokenLifetime
	token := f.issue("ya29.d.", TokenInfo{Kind: "federated", Principal: principal, Scopes: scopes, Expiry: f.o.Now().Add(lifetime)})
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":      token,
		"issued_token_type": tokenTypeAccessToken,
		"token_type":        "Bearer",
		"expires_in":        int64(lifetime / time.Second),
	})
}

// exchange checks the request and its subject token and returns the
// principal and the scopes asked for.
func (f *Fake) exchange(r *http.Request) (principal string, scopes []string, err error) {
	if r.Method != http.MethodPost {
		return "", nil, invalidRequest("the token endpoint takes POST, not %s", r.Method)
	}
	if r.URL.RawQuery != "" {
		return "", nil, invalidRequest("parameters go in the form body, not the query")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return "", nil, invalidRequest("Content-Type %q, want application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return "", nil, invalidRequest("unreadable form: %v", err)
	}
	form := r.PostForm
	for name, values := range form {
		if !slices.Contains(stsFields, name) {
			return "", nil, invalidRequest("unknown parameter %q", name)
		}
		if len(values) != 1 {
			return "", nil, invalidRequest("parameter %q given %d times", name, len(values))
		}
	}
	for _, name := range stsFields {
		if form.Get(name) == "" {
			return "", nil, invalidRequest("missing parameter %q", name)
		}
	}
	switch {
	case form.Get("grant_type") != grantTokenExchange:
		return "", nil, &refusal{"unsupported_grant_type", fmt.Sprintf("grant_type %q is not supported", form.Get("grant_type"))}
	case form.Get("requested_token_type") != tokenTypeAccessToken:
		return "", nil, invalidRequest("requested_token_type %q, want %s", form.Get("requested_token_type"), tokenTypeAccessToken)
	case form.Get("subject_token_type") != tokenTypeJWT:
		return "", nil, invalidRequest("subject_token_type %q, want %s", form.Get("subject_token_type"), tokenTypeJWT)
	case form.Get("audience") != f.audience:
		return "", nil, &refusal{"invalid_target", fmt.Sprintf("The target service indicated by the \"audience\" parameters is invalid. "+
			"This might either be because the pool or provider is disabled or deleted or because it doesn't exist. (audience %q)", form.Get("audience"))}
	}
	scopes = strings.Split(form.Get("scope"), " ")
	if slices.Contains(scopes, "") {
		return "", nil, &refusal{"invalid_scope", fmt.Sprintf("scope %q: scopes are separated by single spaces", form.Get("scope"))}
	}
	sub, err := f.verifySubject(form.Get("subject_token"))
	if err != nil {
		return "", nil, err
	}
	return f.Principal(sub), scopes, nil
}

// verifySubject checks the subject token as Google does for an OIDC
// provider and returns its sub.
func (f *Fake) verifySubject(raw string) (string, error) {
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return "", invalidGrant("The subject token is not a JWT signed with RS256 or ES256: %v", err)
	}
	if len(tok.Headers) != 1 {
		return "", invalidGrant("The subject token has %d signatures", len(tok.Headers))
	}
	keysJSON, err := f.o.JWKS()
	if err != nil {
		return "", invalidGrant("Failed to fetch the issuer's JWKS: %v", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(keysJSON, &set); err != nil {
		return "", invalidGrant("The issuer's JWKS is invalid: %v", err)
	}
	var c josejwt.Claims
	kid, alg, err := jwksverify.Verify(tok, set, &c)
	switch {
	case errors.Is(err, jwksverify.ErrNoKey):
		return "", invalidGrant("The kid %q of the subject token is not in the issuer's JWKS", kid)
	case err != nil:
		return "", invalidGrant("Invalid JWT signature (kid %q, alg %s)", kid, alg)
	}

	now := f.o.Now()
	https := "https:" + f.audience
	switch {
	case c.Issuer != f.o.Issuer:
		return "", invalidGrant("The issuer in ID Token %q does not match the expected ISSUER %q", c.Issuer, f.o.Issuer)
	case !c.Audience.Contains(f.audience) && !c.Audience.Contains(https):
		return "", invalidGrant("The audience in ID Token %q does not match the expected audience %s.", []string(c.Audience), f.audience)
	case c.Expiry == nil:
		return "", invalidGrant("The ID Token has no exp claim")
	case c.IssuedAt == nil:
		return "", invalidGrant("The ID Token has no iat claim")
	case !now.Before(c.Expiry.Time()):
		return "", invalidGrant("The ID Token expired at %s (now %s)", c.Expiry.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case c.IssuedAt.Time().After(now.Add(clockSkew)):
		return "", invalidGrant("The ID Token was issued in the future (iat %s)", c.IssuedAt.Time().UTC().Format(time.RFC3339))
	case c.NotBefore != nil && c.NotBefore.Time().After(now.Add(clockSkew)):
		return "", invalidGrant("The ID Token is not valid yet (nbf %s)", c.NotBefore.Time().UTC().Format(time.RFC3339))
	case c.Expiry.Time().Sub(c.IssuedAt.Time()) > maxSubjectLifetime:
		return "", invalidGrant("The ID Token lives %v: at most %v from iat to exp", c.Expiry.Time().Sub(c.IssuedAt.Time()), maxSubjectLifetime)
	case c.Subject == "":
		return "", invalidGrant("The ID Token has no sub: the attribute google.subject is empty")
	case len(c.Subject) > maxSubject:
		return "", invalidGrant("The size of mapped attribute google.subject exceeds the %d bytes limit.", maxSubject)
	}
	return c.Subject, nil
}

// scopesCover reports whether scopes hold one of want.
func scopesCover(scopes []string, want ...string) bool {
	for _, s := range want {
		if slices.Contains(scopes, s) {
			return true
		}
	}
	return false
}

// bearer is the token of an Authorization: Bearer header, "" without one.
func bearer(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
