package fakeaws_test

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/metabind/metabind/aws"
	"github.com/metabind/metabind/integration/fakeaws"
)

// TestHappyPath: a web identity token of each algorithm assumes the role
// that trusts its sub, through the aws client; the credentials it gets
// sign (with aws-sdk-go-v2's signer) an S3 request the fake S3 accepts.
func TestHappyPath(t *testing.T) {
	for _, kid := range []string{"rsa-1", "ec-1"} {
		t.Run(kid, func(t *testing.T) {
			e := newEnv(t)
			e.fake.Trust(roleARN, ksaSub)
			now := e.clock.Now()

			creds, err := e.client.AssumeRoleWithWebIdentity(t.Context(), roleARN, session, e.iss.sign(t, kid, kid, e.claims()))
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(`^ASIA[A-Z2-7]{16}$`).MatchString(creds.AccessKeyID) || len(creds.SecretAccessKey) != 40 ||
				len(creds.SessionToken) < 100 || creds.AccountID != account {
				t.Fatalf("credentials %s: secret of %d, token of %d characters", creds, len(creds.SecretAccessKey), len(creds.SessionToken))
			}
			if !creds.Expiration.Equal(now.Add(time.Hour)) {
				t.Fatalf("credentials expire %v, want %v", creds.Expiration, now.Add(time.Hour))
			}
			if role, ok := e.fake.KeyInfo(creds.AccessKeyID); !ok || role != roleARN {
				t.Fatalf("KeyInfo: %q %v", role, ok)
			}

			req := sign(t, e.s3Request(t, http.MethodGet, "/"+bucket+"?list-type=2", nil), sdkCreds(creds), "s3", region, now)
			status, code, body := e.do(t, req)
			if status != http.StatusOK {
				t.Fatalf("S3: %d %s: %s", status, code, body)
			}
			var list struct {
				Name     string `xml:"Name"`
				KeyCount int    `xml:"KeyCount"`
				Contents []struct {
					Key string `xml:"Key"`
				} `xml:"Contents"`
			}
			if err := xml.Unmarshal(body, &list); err != nil || list.Name != bucket || list.KeyCount != 1 || len(list.Contents) != 1 {
				t.Fatalf("list %+v: %v\n%s", list, err, body)
			}

			if got, want := e.fake.Calls(), (fakeaws.Calls{STS: 1, S3: 1}); got != want {
				t.Fatalf("calls %+v, want %+v", got, want)
			}
		})
	}
}

// TestAssumedRoleUser: STS's whole answer, as the aws client does not
// keep it.
func TestAssumedRoleUser(t *testing.T) {
	e := newEnv(t)
	e.fake.Trust(roleARN, ksaSub)
	form := url.Values{
		"Action": {"AssumeRoleWithWebIdentity"}, "Version": {"2011-06-15"},
		"RoleArn": {roleARN}, "RoleSessionName": {session}, "WebIdentityToken": {e.token(t, nil)},
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.fake.STSURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	status, _, body := e.do(t, req)
	if status != 200 {
		t.Fatalf("%d: %s", status, body)
	}
	var resp struct {
		XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleWithWebIdentityResponse"`
		Result  struct {
			Subject string `xml:"SubjectFromWebIdentityToken"`
			Aud     string `xml:"Audience"`
			User    struct {
				Arn string `xml:"Arn"`
				ID  string `xml:"AssumedRoleId"`
			} `xml:"AssumedRoleUser"`
			Expiration string `xml:"Credentials>Expiration"`
		} `xml:"AssumeRoleWithWebIdentityResult"`
		RequestID string `xml:"ResponseMetadata>RequestId"`
	}
	if err := xml.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	r := resp.Result
	// The role's path is not in the assumed-role ARN, as at AWS.
	if r.Subject != ksaSub || r.Aud != "sts.amazonaws.com" || r.User.Arn != "arn:aws:sts::"+account+":assumed-role/app/"+session ||
		!regexp.MustCompile(`^AROA[A-Z2-7]{17}:`+regexp.QuoteMeta(session)+`$`).MatchString(r.User.ID) || resp.RequestID == "" {
		t.Fatalf("answer %+v", resp)
	}
	// Without DurationSeconds: one hour, STS's default.
	if r.Expiration != e.clock.Now().Add(time.Hour).UTC().Format(time.RFC3339) {
		t.Fatalf("expiration %s", r.Expiration)
	}
}

// TestTwoRoles: two subs, each trusted by its own role, get distinct keys,
// each known as its role's, each accepted by S3; neither assumes the
// other's role.
func TestTwoRoles(t *testing.T) {
	e := newEnv(t)
	e.fake.Trust(roleARN, ksaSub)
	e.fake.Trust(otherRole, otherSub)
	a := e.assume(t, roleARN, ksaSub)
	b := e.assume(t, otherRole, otherSub)
	if a.AccessKeyID == b.AccessKeyID || a.SecretAccessKey == b.SecretAccessKey || a.SessionToken == b.SessionToken {
		t.Fatal("the two roles share credentials")
	}
	for creds, want := range map[aws.Credentials]string{a: roleARN, b: otherRole} {
		if role, _ := e.fake.KeyInfo(creds.AccessKeyID); role != want {
			t.Errorf("%s: role %q, want %q", creds, role, want)
		}
		if status, code := e.list(t, creds); status != 200 {
			t.Errorf("%s: S3 %d %s", creds, status, code)
		}
	}
	// A second call for the same role: new keys, as at AWS.
	if again := e.assume(t, roleARN, ksaSub); again.AccessKeyID == a.AccessKeyID {
		t.Fatal("the same keys twice")
	}
	for _, tc := range [][2]string{{roleARN, otherSub}, {otherRole, ksaSub}} {
		_, err := e.client.AssumeRoleWithWebIdentity(t.Context(), tc[0], session, e.token(t, func(c map[string]any) { c["sub"] = tc[1] }))
		checkDenied(t, err, 403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
	}
}

func checkDenied(t *testing.T, err error, status int, code, msg string) {
	t.Helper()
	var d *aws.Denied
	if !errors.As(err, &d) || errors.Is(err, aws.ErrUnavailable) || d.Status != status || d.Code != code || !strings.Contains(d.Message, msg) {
		t.Fatalf("%v: want %d %s with %q", err, status, code, msg)
	}
}

// TestSTSAccessDenied: the trust table. A role that does not exist, one
// that trusts another sub, and a sub trusted by another role only are all
// AccessDenied, STS's message.
func TestSTSAccessDenied(t *testing.T) {
	e := newEnv(t)
	e.fake.Trust(roleARN, otherSub)
	e.fake.Trust(otherRole, ksaSub)
	for name, role := range map[string]string{
		"trusts another sub":     roleARN,
		"no such role":           "arn:aws:iam::" + account + ":role/nobody",
		"same role, other accnt": "arn:aws:iam::210987654321:role/team/app",
	} {
		t.Run(name, func(t *testing.T) {
			before := e.fake.Calls()
			_, err := e.client.AssumeRoleWithWebIdentity(t.Context(), role, session, e.token(t, nil))
			checkDenied(t, err, 403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
			if after := e.fake.Calls(); after.STS != before.STS+1 || after.Denied != before.Denied+1 {
				t.Fatalf("calls %+v after %+v", after, before)
			}
		})
	}
	if _, err := e.client.AssumeRoleWithWebIdentity(t.Context(), otherRole, session, e.token(t, nil)); err != nil {
		t.Fatalf("the role that trusts it: %v", err)
	}
}

// TestSTSRefusesTokens: every check of the web identity token, each with
// STS's code.
func TestSTSRefusesTokens(t *testing.T) {
	e := newEnv(t)
	e.fake.Trust(roleARN, ksaSub)
	e.iss.addKey(t, "rsa-unpublished", jose.RS256)
	e.iss.addKey(t, "ec-unpublished", jose.ES256)
	now := e.clock.Now()
	for _, tc := range []struct {
		name  string
		token func() string
		code  string
		want  string // in the message
	}{
		{"wrong audience", func() string {
			return e.token(t, func(c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc"} })
		}, "InvalidIdentityToken", "Incorrect token audience"},
		{"GCP's audience", func() string {
			return e.token(t, func(c map[string]any) {
				c["aud"] = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/p"
			})
		}, "InvalidIdentityToken", "Incorrect token audience"},
		{"wrong issuer", func() string {
			return e.token(t, func(c map[string]any) { c["iss"] = "https://other-cluster.test" })
		}, "InvalidIdentityToken", "No OpenIDConnect provider found in your account for https://other-cluster.test"},
		{"expired", func() string {
			return e.token(t, func(c map[string]any) {
				c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Unix()
			})
		}, "ExpiredTokenException", "Token expired: current date/time"},
		{"no exp", func() string { return e.token(t, func(c map[string]any) { delete(c, "exp") }) }, "InvalidIdentityToken", "no exp"},
		{"not valid yet", func() string {
			return e.token(t, func(c map[string]any) { c["nbf"] = now.Add(10 * time.Minute).Unix() })
		}, "InvalidIdentityToken", "not valid yet"},
		{"no sub", func() string { return e.token(t, func(c map[string]any) { delete(c, "sub") }) }, "InvalidIdentityToken", "no sub"},
		{"bad RSA signature", func() string { return e.iss.sign(t, "rsa-unpublished", "rsa-1", e.claims()) }, "InvalidIdentityToken", "signature does not verify"},
		{"bad EC signature", func() string { return e.iss.sign(t, "ec-unpublished", "ec-1", e.claims()) }, "InvalidIdentityToken", "signature does not verify"},
		{"EC key named as the RSA kid", func() string { return e.iss.sign(t, "ec-1", "rsa-1", e.claims()) }, "InvalidIdentityToken", "signature does not verify"},
		{"no kid, no published key", func() string { return e.iss.sign(t, "rsa-unpublished", "", e.claims()) }, "InvalidIdentityToken", "signature does not verify"},
		{"unknown kid", func() string { return e.iss.sign(t, "rsa-unpublished", "rsa-unpublished", e.claims()) }, "InvalidIdentityToken", "Couldn't retrieve verification key"},
		{"tampered claims", func() string {
			good := strings.Split(e.token(t, nil), ".")
			other := strings.Split(e.token(t, func(c map[string]any) { c["sub"] = "system:serviceaccount:team:admin" }), ".")
			return good[0] + "." + other[1] + "." + good[2]
		}, "InvalidIdentityToken", "signature does not verify"},
		{"HS256", func() string {
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")},
				(&jose.SignerOptions{}).WithHeader("kid", "rsa-1"))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := josejwt.Signed(signer).Claims(e.claims()).Serialize()
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, "InvalidIdentityToken", "not a valid JWT signed with RS256 or ES256"},
		{"alg none", func() string {
			parts := strings.Split(e.token(t, nil), ".")
			return "eyJhbGciOiJub25lIiwia2lkIjoicnNhLTEifQ." + parts[1] + "."
		}, "InvalidIdentityToken", "not a valid JWT"},
		{"not a JWT", func() string { return "opaque-token" }, "InvalidIdentityToken", "not a valid JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.fake.Calls()
			_, err := e.client.AssumeRoleWithWebIdentity(t.Context(), roleARN, session, tc.token())
			checkDenied(t, err, 400, tc.code, tc.want)
			after := e.fake.Calls()
			if after.STS != before.STS+1 || after.Denied != before.Denied+1 {
				t.Fatalf("calls %+v after %+v", after, before)
			}
		})
	}
	// The JWKS cannot be had: IDPCommunicationError, which the client
	// takes for unavailable (retry later), never taken on trust.
	e.iss.mu.Lock()
	e.iss.jwksErr = errors.New("issuer unreachable")
	e.iss.mu.Unlock()
	before := e.fake.Calls()
	_, err := e.client.AssumeRoleWithWebIdentity(t.Context(), roleARN, session, e.token(t, nil))
	if !errors.Is(err, aws.ErrUnavailable) || !strings.Contains(err.Error(), "IDPCommunicationError") || !strings.Contains(err.Error(), "issuer unreachable") {
		t.Fatalf("%v: want ErrUnavailable from IDPCommunicationError naming the JWKS error", err)
	}
	if after := e.fake.Calls(); after.Unavailable != before.Unavailable+1 || after.Denied != before.Denied {
		t.Fatalf("calls %+v after %+v", after, before)
	}
}

// TestSTSKeyRotation: the JWKS is asked on every call; a key no longer
// published is refused, a new one accepted at once.
func TestSTSKeyRotation(t *testing.T) {
	e := newEnv(t)
	e.fake.Trust(roleARN, ksaSub)
	old := e.iss.sign(t, "rsa-1", "rsa-1", e.claims())
	e.iss.addKey(t, "rsa-2", jose.RS256)
	e.iss.publish("rsa-2")
	_, err := e.client.AssumeRoleWithWebIdentity(t.Context(), roleARN, session, old)
	checkDenied(t, err, 400, "InvalidIdentityToken", "Couldn't retrieve verification key")
	if _, err := e.client.AssumeRoleWithWebIdentity(t.Context(), roleARN, session, e.iss.sign(t, "rsa-2", "rsa-2", e.claims())); err != nil {
		t.Fatalf("the new key's token: %v", err)
	}
}

// TestSTSChecksTheRequest: the form as the aws client sends it, field by
// field; any other is refused with STS's code.
func TestSTSChecksTheRequest(t *testing.T) {
	e := newEnv(t)
	e.fake.Trust(roleARN, ksaSub)
	valid := url.Values{
		"Action":           {"AssumeRoleWithWebIdentity"},
		"Version":          {"2011-06-15"},
		"RoleArn":          {roleARN},
		"RoleSessionName":  {session},
		"WebIdentityToken": {e.token(t, nil)},
		"DurationSeconds":  {"3600"},
	}
	const form = "application/x-www-form-urlencoded"
	for _, ct := range []string{form, form + "; charset=utf-8"} {
		if code, errCode := e.post(t, e.fake.STSURL, ct, valid.Encode()); code != http.StatusOK {
			t.Fatalf("the valid form as %s: %d %s", ct, code, errCode)
		}
	}
	changed := func(name string, values ...string) string {
		v := url.Values{}
		for k, vs := range valid {
			v[k] = vs
		}
		if values == nil {
			delete(v, name)
		} else {
			v[name] = values
		}
		return v.Encode()
	}
	for _, tc := range []struct {
		name, contentType, body, wantCode string
		wantStatus                        int
	}{
		{"no action", form, changed("Action"), "MissingAction", 400},
		{"another action", form, changed("Action", "AssumeRole"), "InvalidAction", 400},
		{"another version", form, changed("Version", "2012-01-01"), "InvalidAction", 400},
		{"no version", form, changed("Version"), "InvalidAction", 400},
		{"no role", form, changed("RoleArn"), "ValidationError", 400},
		{"short role", form, changed("RoleArn", "arn:aws:iam::1:r/a"), "ValidationError", 400},
		{"user ARN", form, changed("RoleArn", "arn:aws:iam::"+account+":user/app"), "ValidationError", 400},
		{"role with region", form, changed("RoleArn", "arn:aws:iam:eu-west-3:"+account+":role/app"), "ValidationError", 400},
		{"no session", form, changed("RoleSessionName"), "ValidationError", 400},
		{"short session", form, changed("RoleSessionName", "a"), "ValidationError", 400},
		{"long session", form, changed("RoleSessionName", strings.Repeat("s", 65)), "ValidationError", 400},
		{"slash in session", form, changed("RoleSessionName", "team/app"), "ValidationError", 400},
		{"no token", form, changed("WebIdentityToken"), "ValidationError", 400},
		{"short token", form, changed("WebIdentityToken", "abc"), "ValidationError", 400},
		{"duration under 900", form, changed("DurationSeconds", "899"), "ValidationError", 400},
		{"duration over 43200", form, changed("DurationSeconds", "43201"), "ValidationError", 400},
		{"duration over the role's max", form, changed("DurationSeconds", "3601"), "ValidationError", 400},
		{"duration not a number", form, changed("DurationSeconds", "1h"), "ValidationError", 400},
		{"session policy", form, changed("Policy", `{"Version":"2012-10-17"}`), "ValidationError", 400},
		{"token twice", form, changed("WebIdentityToken", e.token(t, nil), e.token(t, nil)), "ValidationError", 400},
		{"unknown field", form, changed("RoleARN", roleARN), "ValidationError", 400},
		{"JSON body", "application/json", `{"Action":"AssumeRoleWithWebIdentity"}`, "ValidationError", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, errCode := e.post(t, e.fake.STSURL, tc.contentType, tc.body)
			if code != tc.wantStatus || errCode != tc.wantCode {
				t.Fatalf("%d %q, want %d %q", code, errCode, tc.wantStatus, tc.wantCode)
			}
		})
	}
	t.Run("query", func(t *testing.T) {
		if code, errCode := e.post(t, e.fake.STSURL+"?"+valid.Encode(), form, ""); code != 400 || errCode != "ValidationError" {
			t.Fatalf("%d %q", code, errCode)
		}
	})
	t.Run("GET", func(t *testing.T) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.fake.STSURL+"?"+valid.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if code, errCode, _ := e.do(t, req); code != 400 || errCode != "ValidationError" {
			t.Fatalf("%d %q", code, errCode)
		}
	})
	// Through the aws client: a session longer than the role's
	// MaxSessionDuration (one hour by default).
	_, err := e.clientFor(t, 2*time.Hour).AssumeRoleWithWebIdentity(t.Context(), roleARN, session, e.token(t, nil))
	checkDenied(t, err, 400, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
}

// TestSessionDurations: the role's MaxSessionDuration allows longer
// sessions; SessionDuration shortens every credential's life (tests of
// refresh), after which S3 refuses them.
func TestSessionDurations(t *testing.T) {
	t.Run("max", func(t *testing.T) {
		e := newEnv(t, func(o *fakeaws.Options) { o.MaxSessionDuration = 12 * time.Hour })
		e.fake.Trust(roleARN, ksaSub)
		for _, d := range []time.Duration{15 * time.Minute, 12 * time.Hour} {
			creds, err := e.clientFor(t, d).AssumeRoleWithWebIdentity(t.Context(), roleARN, session, e.token(t, nil))
			if err != nil || !creds.Expiration.Equal(e.clock.Now().Add(d)) {
				t.Fatalf("%v: %v, expiring %v", d, err, creds.Expiration)
			}
		}
	})
	t.Run("short", func(t *testing.T) {
		e := newEnv(t, func(o *fakeaws.Options) { o.SessionDuration = 10 * time.Second })
		e.fake.Trust(roleARN, ksaSub)
		creds := e.assume(t, roleARN, ksaSub)
		if !creds.Expiration.Equal(e.clock.Now().Add(10 * time.Second)) {
			t.Fatalf("expiring %v", creds.Expiration)
		}
		e.clock.Advance(9 * time.Second)
		if status, code := e.list(t, creds); status != 200 {
			t.Fatalf("before expiry: %d %s", status, code)
		}
		e.clock.Advance(time.Second)
		if status, code := e.list(t, creds); status != 400 || code != "ExpiredToken" {
			t.Fatalf("at expiry: %d %s", status, code)
		}
	})
}

// TestDown: STS answers 503 while down, which the aws client takes for
// ErrUnavailable; S3 keeps serving; STS recovers.
func TestDown(t *testing.T) {
	e := newEnv(t)
	e.fake.Trust(roleARN, ksaSub)
	creds := e.assume(t, roleARN, ksaSub)

	e.fake.SetDown(true)
	_, err := e.client.AssumeRoleWithWebIdentity(t.Context(), roleARN, session, e.token(t, nil))
	var d *aws.Denied
	if !errors.Is(err, aws.ErrUnavailable) || errors.As(err, &d) || !strings.Contains(err.Error(), "503 ServiceUnavailable") {
		t.Fatalf("STS down: %v", err)
	}
	if status, code := e.list(t, creds); status != 200 {
		t.Fatalf("S3 while STS is down: %d %s", status, code)
	}
	if c, want := e.fake.Calls(), (fakeaws.Calls{STS: 2, S3: 1, Unavailable: 1}); c != want {
		t.Fatalf("calls %+v, want %+v", c, want)
	}

	e.fake.SetDown(false)
	if again := e.assume(t, roleARN, ksaSub); again.AccessKeyID == creds.AccessKeyID {
		t.Fatal("the same keys after recovery")
	}
}

func TestStartRefusesBadOptions(t *testing.T) {
	jwks := func() ([]byte, error) { return nil, nil }
	for name, o := range map[string]fakeaws.Options{
		"no issuer":         {JWKS: jwks},
		"no JWKS":           {Issuer: issuerURL},
		"bad region":        {Issuer: issuerURL, JWKS: jwks, Region: "Paris"},
		"max under an hour": {Issuer: issuerURL, JWKS: jwks, MaxSessionDuration: 30 * time.Minute},
		"max over 12h":      {Issuer: issuerURL, JWKS: jwks, MaxSessionDuration: 13 * time.Hour},
		"negative session":  {Issuer: issuerURL, JWKS: jwks, SessionDuration: -time.Second},
		"session fraction":  {Issuer: issuerURL, JWKS: jwks, SessionDuration: 1500 * time.Millisecond},
	} {
		ft := &fatalT{TB: t}
		func() {
			defer func() { recover() }()
			fakeaws.Start(ft, t.TempDir(), o)
		}()
		if !ft.failed {
			t.Errorf("%s: started", name)
		}
	}
}

// fatalT records Fatalf and stops the goroutine with a panic the caller
// recovers.
type fatalT struct {
	testing.TB
	failed bool
}

func (f *fatalT) Fatalf(format string, args ...any) {
	f.failed = true
	panic(fmt.Sprintf(format, args...))
}

func (f *fatalT) Helper() {}
