package fakegoogle

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

const iamPrefix = "/iamcredentials/v1"

// Scopes that let a token call IAM Credentials.
var iamScopes = []string{"https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/iam"}

// maxAccessLifetime is the longest access token generateAccessToken gives
// without the organization policy that extends it.
const maxAccessLifetime = time.Hour

// idTokenLifetime is how long Google's ID tokens live.
const idTokenLifetime = time.Hour

// iamMethod is the path of a call: projects/-/serviceAccounts/<email>:<method>.
var iamMethod = regexp.MustCompile(`^` + iamPrefix + `/projects/([^/]+)/serviceAccounts/([^/:]+):(generateAccessToken|generateIdToken)$`)

// durationField is a protobuf Duration in JSON: seconds with an "s".
var durationField = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)

// iamError is a refusal in the Google API format.
type iamError struct {
	code            int
	status, message string
}

func (e *iamError) Error() string { return fmt.Sprintf("%d %s: %s", e.code, e.status, e.message) }

func invalidArgument(format string, args ...any) *iamError {
	return &iamError{http.StatusBadRequest, "INVALID_ARGUMENT", fmt.Sprintf(format, args...)}
}

// iam serves generateAccessToken and generateIdToken.
func (f *Fake) iam(w http.ResponseWriter, r *http.Request) {
	m := iamMethod.FindStringSubmatch(r.URL.Path)
	if m == nil {
		f.count(func(c *Calls) *int { return &c.Denied }, false)
		f.logf("iam: no method at %s", r.URL.Path)
		apiError(w, http.StatusNotFound, "NOT_FOUND", "Method not found.")
		return
	}
	project, email, method := m[1], m[2], m[3]
	counter := func(c *Calls) *int { return &c.AccessTokens }
	if method == "generateIdToken" {
		counter = func(c *Calls) *int { return &c.IDTokens }
	}
	if f.count(counter, true) {
		unavailable(w)
		return
	}
	answer, err := f.generate(r, project, email, method)
	if err != nil {
		var e *iamError
		if !errors.As(err, &e) {
			e = invalidArgument("%v", err)
		}
		f.denied()
		f.logf("iam %s for %s refused: %s", method, email, e)
		apiError(w, e.code, e.status, e.message)
		return
	}
	writeJSON(w, http.StatusOK, answer)
}

func (f *Fake) generate(r *http.Request, project, email, method string) (any, error) {
	if r.Method != http.MethodPost {
		return nil, &iamError{http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("Method %s %s not found.", r.Method, method)}
	}
	// Authentication first, as Google's front end does.
	token := bearer(r)
	if token == "" {
		return nil, &iamError{http.StatusUnauthorized, "UNAUTHENTICATED", "Request is missing required authentication credential. " +
			"Expected OAuth 2 access token, login cookie or other valid authentication credential."}
	}
	caller, ok := f.live(token)
	if !ok {
		return nil, &iamError{http.StatusUnauthorized, "UNAUTHENTICATED", "Request had invalid authentication credentials. " +
			"Expected OAuth 2 access token, login cookie or other valid authentication credential."}
	}
	if !scopesCover(caller.Scopes, iamScopes...) {
		return nil, &iamError{http.StatusForbidden, "PERMISSION_DENIED", "Request had insufficient authentication scopes."}
	}
	if project != "-" {
		return nil, invalidArgument("The project must be \"-\" in projects/-/serviceAccounts/%s, not %q.", email, project)
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, invalidArgument("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 64<<10))
	if err != nil {
		return nil, invalidArgument("unreadable body: %v", err)
	}
	principal := caller.Principal
	if caller.Kind == "access" {
		principal = "serviceAccount:" + caller.ServiceAccount
	}
	permission := "iam.serviceAccounts.getAccessToken"
	if method == "generateIdToken" {
		permission = "iam.serviceAccounts.getOpenIdToken"
	}
	if !f.allows(principal, email) {
		return nil, &iamError{http.StatusForbidden, "PERMISSION_DENIED",
			fmt.Sprintf("Permission '%s' denied on resource (or it may not exist).", permission)}
	}
	if method == "generateIdToken" {
		return f.idToken(body, email)
	}
	return f.accessToken(body, principal, email)
}

// allows reports whether principal may impersonate email: allowed itself,
// or through the principalSet of its pool.
func (f *Fake) allows(principal, email string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	set := f.allowed[email]
	poolSet := "principalSet://iam.googleapis.com/" + f.pool + "/*"
	return set[principal] || (set[poolSet] && strings.HasPrefix(principal, "principal://iam.googleapis.com/"+f.pool+"/"))
}

// decodeStrict decodes a JSON body, refusing fields Google does not know.
func decodeStrict(body []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return invalidArgument("Invalid JSON payload received. %v", err)
	}
	if d.More() {
		return invalidArgument("Invalid JSON payload received. Unexpected data after the object.")
	}
	return nil
}

func (f *Fake) accessToken(body []byte, principal, email string) (any, error) {
	var req struct {
		Delegates []string `json:"delegates"`
		Scope     []string `json:"scope"`
		Lifetime  *string  `json:"lifetime"`
	}
	if err := decodeStrict(body, &req); err != nil {
		return nil, err
	}
	if len(req.Delegates) > 0 {
		return nil, invalidArgument("delegates are not supported by this fake")
	}
	if len(req.Scope) == 0 {
		return nil, invalidArgument("Scope required.")
	}
	for _, s := range req.Scope {
		if s == "" {
			return nil, invalidArgument("An empty scope is not valid.")
		}
	}
	lifetime := maxAccessLifetime
	if req.Lifetime != nil {
		if !durationField.MatchString(*req.Lifetime) {
			return nil, invalidArgument("Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), %q", *req.Lifetime)
		}
		d, err := time.ParseDuration(*req.Lifetime)
		if err != nil || d <= 0 || d > maxAccessLifetime {
			return nil, invalidArgument("The lifetime %s is not valid: it must be more than 0s and at most %ds.", *req.Lifetime, int(maxAccessLifetime/time.Second))
		}
		lifetime = d
	}
	lifetime = min(lifetime, f.o.TokenLifetime)
	expiry := f.o.Now().Add(lifetime)
	token := f.issue("ya29.c.", TokenInfo{Kind: "access", Principal: principal, ServiceAccount: email, Scopes: req.Scope, Expiry: expiry})
	return map[string]string{"accessToken": token, "expireTime": expiry.UTC().Format(time.RFC3339)}, nil
}

// idClaims are the claims of Google's service-account ID tokens.
type idClaims struct {
	josejwt.Claims
	AuthorizedParty string `json:"azp"`
	Email           string `json:"email,omitempty"`
	EmailVerified   *bool  `json:"email_verified,omitempty"`
}

func (f *Fake) idToken(body []byte, email string) (any, error) {
	var req struct {
		Delegates    []string `json:"delegates"`
		Audience     string   `json:"audience"`
		IncludeEmail bool     `json:"includeEmail"`
	}
	if err := decodeStrict(body, &req); err != nil {
		return nil, err
	}
	if len(req.Delegates) > 0 {
		return nil, invalidArgument("delegates are not supported by this fake")
	}
	if req.Audience == "" {
		return nil, invalidArgument("Audience required.")
	}
	now := f.o.Now()
	id := uniqueID(email)
	claims := idClaims{
		Claims: josejwt.Claims{
			Issuer:   "https://accounts.google.com",
			Subject:  id,
			Audience: josejwt.Audience{req.Audience},
			IssuedAt: josejwt.NewNumericDate(now),
			Expiry:   josejwt.NewNumericDate(now.Add(min(idTokenLifetime, f.o.TokenLifetime))),
		},
		AuthorizedParty: id,
	}
	if req.IncludeEmail {
		verified := true
		claims.Email, claims.EmailVerified = email, &verified
	}
	token, err := josejwt.Signed(f.idSigner).Claims(claims).Serialize()
	if err != nil {
		return nil, &iamError{http.StatusInternalServerError, "INTERNAL", err.Error()}
	}
	return map[string]string{"token": token}, nil
}

// uniqueID is a service account's numeric unique ID (the sub of its ID
// tokens): 21 digits, stable per email.
func uniqueID(email string) string {
	h := fnv.New64a()
	h.Write([]byte(email))
	return fmt.Sprintf("1%020d", h.Sum64())
}

func (f *Fake) newIDSigner() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	f.idKey, f.idKid = key, strings.ToLower(rand.Text())
	f.idSigner, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: f.idKid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	return err
}
