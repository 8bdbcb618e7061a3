package fakeaws

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/metabind/metabind/integration/jwksverify"
)

// The STS Query API values the fake takes.
const (
	actionAssumeRoleWithWebIdentity = "AssumeRoleWithWebIdentity"
	stsVersion                      = "2011-06-15"
	stsNamespace                    = "https://sts.amazonaws.com/doc/2011-06-15/"
	// stsAudience is the client ID list of the account's OIDC provider,
	// and the aud IRSA tokens carry.
	stsAudience = "sts.amazonaws.com"
)

// STS's bounds on the parameters.
const (
	minDuration = 900
	maxDuration = 43200
	// defaultDuration is DurationSeconds when the form has none.
	defaultDuration = 3600
	minRoleARN      = 20
	maxRoleARN      = 2048
	minToken        = 4
	maxToken        = 20000
	// clockSkew is how far in the future a token's nbf may be.
	clockSkew = time.Minute
)

// stsFields are the form fields taken; Action, Version, RoleArn,
// RoleSessionName and WebIdentityToken are required.
var stsFields = []string{"Action", "Version", "RoleArn", "RoleSessionName", "WebIdentityToken", "DurationSeconds"}

var (
	// roleARNPattern is an IAM role ARN: partition, no region, a 12-digit
	// account, role/[path/]name.
	roleARNPattern = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):iam::([0-9]{12}):role/(?:[\x21-\x2E\x30-\x7E]+/)*([\w+=,.@-]{1,64})$`)
	// sessionNamePattern is RoleSessionName's, with its length.
	sessionNamePattern = regexp.MustCompile(`^[\w+=,.@-]*$`)
)

// stsRefusal is an STS error: status, Type, Code and Message.
type stsRefusal struct {
	status        int
	typ           string
	code, message string
}

func (r *stsRefusal) Error() string { return fmt.Sprintf("%d %s: %s", r.status, r.code, r.message) }

func validation(format string, args ...any) *stsRefusal {
	return &stsRefusal{http.StatusBadRequest, "Sender", "ValidationError", fmt.Sprintf(format, args...)}
}

func invalidToken(format string, args ...any) *stsRefusal {
	return &stsRefusal{http.StatusBadRequest, "Sender", "InvalidIdentityToken", fmt.Sprintf(format, args...)}
}

// constraint is STS's message for a field that fails a constraint.
func constraint(value, field, rule string) *stsRefusal {
	return validation("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: %s", value, field, rule)
}

// stsErrorResponse is STS's error answer.
type stsErrorResponse struct {
	XMLName xml.Name `xml:"ErrorResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Error   struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

func writeSTSError(w http.ResponseWriter, r *stsRefusal) {
	id := requestID()
	var e stsErrorResponse
	e.Xmlns = stsNamespace
	e.Error.Type, e.Error.Code, e.Error.Message = r.typ, r.code, r.message
	e.RequestID = id
	writeXML(w, r.status, id, e)
}

// assumeResponse is STS's answer to AssumeRoleWithWebIdentity.
type assumeResponse struct {
	XMLName xml.Name `xml:"AssumeRoleWithWebIdentityResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		SubjectFromWebIdentityToken string `xml:"SubjectFromWebIdentityToken"`
		Audience                    string `xml:"Audience"`
		AssumedRoleUser             struct {
			Arn           string `xml:"Arn"`
			AssumedRoleID string `xml:"AssumedRoleId"`
		} `xml:"AssumedRoleUser"`
		Credentials struct {
			SessionToken    string `xml:"SessionToken"`
			SecretAccessKey string `xml:"SecretAccessKey"`
			Expiration      string `xml:"Expiration"`
			AccessKeyID     string `xml:"AccessKeyId"`
		} `xml:"Credentials"`
		Provider string `xml:"Provider"`
	} `xml:"AssumeRoleWithWebIdentityResult"`
	ResponseMetadata struct {
		RequestID string `xml:"RequestId"`
	} `xml:"ResponseMetadata"`
}

// assumeRequest is a checked request.
type assumeRequest struct {
	roleARN, partition, account, roleName string
	session                               string
	duration                              time.Duration
	token                                 string
}

// sts is AssumeRoleWithWebIdentity.
func (f *Fake) sts(w http.ResponseWriter, r *http.Request) {
	if f.count(func(c *Calls) *int { return &c.STS }, true) {
		writeSTSError(w, &stsRefusal{http.StatusServiceUnavailable, "Receiver", "ServiceUnavailable", "Service is unable to handle request."})
		return
	}
	sub, req, err := f.assume(r)
	if err != nil {
		var ref *stsRefusal
		if !errors.As(err, &ref) {
			ref = validation("%v", err)
		}
		if ref.code == "IDPCommunicationError" {
			f.add(func(c *Calls) *int { return &c.Unavailable })
		} else {
			f.add(func(c *Calls) *int { return &c.Denied })
		}
		f.logf("sts refused: %s", ref)
		writeSTSError(w, ref)
		return
	}
	now := f.o.Now()
	lifetime := req.duration
	if f.o.SessionDuration > 0 {
		lifetime = f.o.SessionDuration
	}
	key := issued{
		secret:     base64.StdEncoding.EncodeToString(random(30)),
		token:      "IQoJb3JpZ2luX2Vj" + base64.StdEncoding.EncodeToString(random(360)),
		role:       req.roleARN,
		sub:        sub,
		session:    req.session,
		expiration: now.Add(lifetime).Truncate(time.Second),
	}
	accessKey := "ASIA" + rand.Text()[:16]
	f.mu.Lock()
	f.keys[accessKey] = key
	f.mu.Unlock()

	id := requestID()
	var resp assumeResponse
	resp.Xmlns = stsNamespace
	res := &resp.Result
	res.SubjectFromWebIdentityToken = sub
	res.Audience = stsAudience
	res.AssumedRoleUser.Arn = "arn:" + req.partition + ":sts::" + req.account + ":assumed-role/" + req.roleName + "/" + req.session
	res.AssumedRoleUser.AssumedRoleID = roleID(req.roleARN) + ":" + req.session
	res.Credentials.AccessKeyID = accessKey
	res.Credentials.SecretAccessKey = key.secret
	res.Credentials.SessionToken = key.token
	res.Credentials.Expiration = key.expiration.UTC().Format(time.RFC3339)
	res.Provider = "arn:" + req.partition + ":iam::" + req.account + ":oidc-provider/" + strings.TrimPrefix(f.o.Issuer, "https://")
	resp.ResponseMetadata.RequestID = id
	writeXML(w, http.StatusOK, id, resp)
}

// assume checks the request, its web identity token and the role's trust
// policy, and returns the token's sub and the request.
func (f *Fake) assume(r *http.Request) (string, assumeRequest, error) {
	req, err := parseAssume(r)
	if err != nil {
		return "", req, err
	}
	sub, err := f.verifyToken(req.token)
	if err != nil {
		return "", req, err
	}
	f.mu.Lock()
	trusted := f.trusted[req.roleARN][sub]
	f.mu.Unlock()
	if !trusted {
		return "", req, &stsRefusal{http.StatusForbidden, "Sender", "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"}
	}
	if req.duration > f.o.MaxSessionDuration {
		return "", req, validation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	return sub, req, nil
}

// parseAssume checks the form as STS does (and refuses what the fake does
// not model).
func parseAssume(r *http.Request) (assumeRequest, error) {
	var req assumeRequest
	if r.Method != http.MethodPost {
		return req, validation("the fake takes the Query API as a POST form, not %s", r.Method)
	}
	if r.URL.RawQuery != "" {
		return req, validation("parameters go in the form body, not the query")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return req, validation("Content-Type %q, want application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return req, validation("unreadable form: %v", err)
	}
	form := r.PostForm
	for name, values := range form {
		known := false
		for _, f := range stsFields {
			known = known || f == name
		}
		if !known {
			return req, validation("parameter %q is not one the fake takes (%s)", name, strings.Join(stsFields, ", "))
		}
		if len(values) != 1 {
			return req, validation("parameter %q given %d times", name, len(values))
		}
	}
	switch action := form.Get("Action"); {
	case action == "":
		return req, &stsRefusal{http.StatusBadRequest, "Sender", "MissingAction", "Missing Action"}
	case action != actionAssumeRoleWithWebIdentity || form.Get("Version") != stsVersion:
		return req, &stsRefusal{http.StatusBadRequest, "Sender", "InvalidAction",
			fmt.Sprintf("Could not find operation %s for version %s", action, form.Get("Version"))}
	}
	for _, f := range []struct{ name, field string }{{"RoleArn", "roleArn"}, {"RoleSessionName", "roleSessionName"}, {"WebIdentityToken", "webIdentityToken"}} {
		if _, ok := form[f.name]; !ok {
			return req, validation("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", f.field)
		}
	}

	req.roleARN = form.Get("RoleArn")
	switch n := len(req.roleARN); {
	case n < minRoleARN:
		return req, constraint(req.roleARN, "roleArn", "Member must have length greater than or equal to 20")
	case n > maxRoleARN:
		return req, constraint("...", "roleArn", "Member must have length less than or equal to 2048")
	}
	m := roleARNPattern.FindStringSubmatch(req.roleARN)
	if m == nil {
		return req, validation("Request ARN is invalid")
	}
	req.partition, req.account, req.roleName = m[1], m[2], m[3]

	req.session = form.Get("RoleSessionName")
	switch n := len(req.session); {
	case n < 2:
		return req, constraint(req.session, "roleSessionName", "Member must have length greater than or equal to 2")
	case n > 64:
		return req, constraint(req.session, "roleSessionName", "Member must have length less than or equal to 64")
	case !sessionNamePattern.MatchString(req.session):
		return req, constraint(req.session, "roleSessionName", `Member must satisfy regular expression pattern: [\w+=,.@-]*`)
	}

	req.token = form.Get("WebIdentityToken")
	switch n := len(req.token); {
	case n < minToken:
		return req, constraint("***", "webIdentityToken", "Member must have length greater than or equal to 4")
	case n > maxToken:
		return req, constraint("***", "webIdentityToken", "Member must have length less than or equal to 20000")
	}

	seconds := defaultDuration
	if raw, ok := form["DurationSeconds"]; ok {
		n, err := strconv.Atoi(raw[0])
		if err != nil {
			return req, validation("Value '%s' for parameter DurationSeconds is invalid. Must be an integer", raw[0])
		}
		switch {
		case n < minDuration:
			return req, constraint(raw[0], "durationSeconds", "Member must have value greater than or equal to 900")
		case n > maxDuration:
			return req, constraint(raw[0], "durationSeconds", "Member must have value less than or equal to 43200")
		}
		seconds = n
	}
	req.duration = time.Duration(seconds) * time.Second
	return req, nil
}

// verifyToken checks the web identity token as STS does for an IAM OIDC
// provider of Options.Issuer with client ID sts.amazonaws.com, and returns
// its sub.
func (f *Fake) verifyToken(raw string) (string, error) {
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return "", invalidToken("The ID Token provided is not a valid JWT signed with RS256 or ES256: %v", err)
	}
	if len(tok.Headers) != 1 {
		return "", invalidToken("The ID Token has %d signatures", len(tok.Headers))
	}
	// The provider is found by the token's iss, read before verifying.
	var unverified josejwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return "", invalidToken("The ID Token's claims are unreadable: %v", err)
	}
	if unverified.Issuer != f.o.Issuer {
		return "", invalidToken("No OpenIDConnect provider found in your account for %s", unverified.Issuer)
	}
	keysJSON, err := f.o.JWKS()
	if err != nil {
		return "", &stsRefusal{http.StatusBadRequest, "Sender", "IDPCommunicationError",
			fmt.Sprintf("The request could not be fulfilled because the identity provider (IDP) that was asked to verify the incoming identity token could not be reached: %v", err)}
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(keysJSON, &set); err != nil {
		return "", invalidToken("Couldn't retrieve verification key from your identity provider: the JWKS is invalid: %v", err)
	}
	var c josejwt.Claims
	kid, alg, err := jwksverify.Verify(tok, set, &c)
	switch {
	case errors.Is(err, jwksverify.ErrNoKey):
		return "", invalidToken("Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements (kid %q)", kid)
	case err != nil:
		return "", invalidToken("The ID Token's signature does not verify with the provider's keys (kid %q, alg %s)", kid, alg)
	}

	now := f.o.Now()
	switch {
	case c.Expiry == nil:
		return "", invalidToken("The ID Token has no exp claim")
	case !now.Before(c.Expiry.Time()):
		return "", &stsRefusal{http.StatusBadRequest, "Sender", "ExpiredTokenException",
			fmt.Sprintf("Token expired: current date/time %d must be before the expiration date/time %d", now.Unix(), c.Expiry.Time().Unix())}
	case c.NotBefore != nil && c.NotBefore.Time().After(now.Add(clockSkew)):
		return "", invalidToken("The ID Token is not valid yet (nbf %s)", c.NotBefore.Time().UTC().Format(time.RFC3339))
	case !c.Audience.Contains(stsAudience):
		return "", invalidToken("Incorrect token audience")
	case c.Subject == "":
		return "", invalidToken("The ID Token has no sub claim")
	}
	return c.Subject, nil
}

// roleID is a role's stable unique ID, AROA and 17 characters.
func roleID(roleARN string) string {
	sum := sha256.Sum256([]byte(roleARN))
	return "AROA" + base32.StdEncoding.EncodeToString(sum[:])[:17]
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
