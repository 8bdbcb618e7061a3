package fakegoogle_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/metabind/metabind/gcp"
	"github.com/metabind/metabind/integration/fakegoogle"
)

// TestHappyPath: a subject token of each algorithm is exchanged, the
// federated principal impersonates the service account it is allowed, and
// the access token it gets reads the bucket; the ID token verifies against
// the fake's Google keys.
func TestHappyPath(t *testing.T) {
	for _, kid := range []string{"rsa-1", "ec-1"} {
		t.Run(kid, func(t *testing.T) {
			e := newEnv(t)
			e.fake.Allow(principal, gsa)
			now := e.clock.Now()

			fed, err := e.client.ExchangeToken(t.Context(), e.iss.sign(t, kid, kid, e.claims()), []string{cloudPlatform})
			if err != nil {
				t.Fatal(err)
			}
			info, ok := e.fake.TokenInfo(fed.Value)
			if !ok || info.Kind != "federated" || info.Principal != principal || !slices.Equal(info.Scopes, []string{cloudPlatform}) {
				t.Fatalf("federated token: %+v %v", info, ok)
			}
			if !info.Expiry.Equal(now.Add(time.Hour)) {
				t.Fatalf("federated token expires %v, want %v", info.Expiry, now.Add(time.Hour))
			}

			access, err := e.client.GenerateAccessToken(t.Context(), fed.Value, gsa, []string{"https://www.googleapis.com/auth/devstorage.read_only"}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if !access.Expiry.Equal(now.Add(time.Hour)) {
				t.Fatalf("access token expires %v, want %v", access.Expiry, now.Add(time.Hour))
			}
			info, ok = e.fake.TokenInfo(access.Value)
			if !ok || info.Kind != "access" || info.ServiceAccount != gsa || info.Principal != principal {
				t.Fatalf("access token: %+v %v", info, ok)
			}
			if code, _ := e.get(t, bucketPath, access.Value); code != http.StatusOK {
				t.Fatalf("API with the access token: %d", code)
			}

			id, err := e.client.GenerateIDToken(t.Context(), fed.Value, gsa, "https://svc.example")
			if err != nil {
				t.Fatal(err)
			}
			verifyIDToken(t, e, id.Value, "https://svc.example", now)
			if !id.Expiry.Equal(now.Add(time.Hour)) {
				t.Fatalf("ID token expires %v (gcp read it), want %v", id.Expiry, now.Add(time.Hour))
			}

			want := fakegoogle.Calls{STS: 1, AccessTokens: 1, IDTokens: 1, API: 1}
			if got := e.fake.Calls(); got != want {
				t.Fatalf("calls %+v, want %+v", got, want)
			}
		})
	}
}

func verifyIDToken(t *testing.T, e *env, token, aud string, now time.Time) {
	t.Helper()
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal(e.fake.IDTokenKeys(), &keys); err != nil {
		t.Fatal(err)
	}
	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	found := keys.Key(tok.Headers[0].KeyID)
	if len(found) != 1 {
		t.Fatalf("kid %q: %d keys", tok.Headers[0].KeyID, len(found))
	}
	var c josejwt.Claims
	var extra struct {
		Email         string `json:"email"`
		EmailVerified bool   `json:"email_verified"`
		AZP           string `json:"azp"`
	}
	if err := tok.Claims(found[0].Key, &c, &extra); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateWithLeeway(josejwt.Expected{Issuer: "https://accounts.google.com", AnyAudience: josejwt.Audience{aud}, Time: now}, 0); err != nil {
		t.Fatal(err)
	}
	if extra.Email != gsa || !extra.EmailVerified || c.Subject == "" || extra.AZP != c.Subject || strings.Trim(c.Subject, "0123456789") != "" {
		t.Fatalf("ID token claims %+v %+v", c, extra)
	}
	// Served where Google serves its keys too.
	if code, _ := e.get(t, "/oauth2/v3/certs", ""); code != http.StatusOK {
		t.Fatalf("certs: %d", code)
	}
}

// TestDirectResourceAccess: without impersonation the federated token itself
// reads the bucket, as Google allows when the principal is granted on the
// resource.
func TestDirectResourceAccess(t *testing.T) {
	e := newEnv(t)
	fed := e.exchange(t, cloudPlatform)
	if code, _ := e.get(t, bucketPath, fed.Value); code != http.StatusOK {
		t.Fatalf("API with the federated token: %d", code)
	}
	// The https: form of the audience in aud is Google's default too.
	fed2, err := e.client.ExchangeToken(t.Context(), e.subject(t, func(c map[string]any) {
		c["aud"] = "https:" + audience
	}), []string{cloudPlatform})
	if err != nil {
		t.Fatal(err)
	}
	if fed2.Value == fed.Value {
		t.Fatal("the same federated token twice")
	}
}

// TestSTSRefusesSubjectTokens: every check of the subject token, each a 400
// invalid_grant with Google's kind of message.
func TestSTSRefusesSubjectTokens(t *testing.T) {
	e := newEnv(t)
	e.iss.addKey(t, "rsa-unpublished", jose.RS256)
	e.iss.addKey(t, "ec-unpublished", jose.ES256)
	now := e.clock.Now()
	for _, tc := range []struct {
		name  string
		token func() string
		want  string // in the message
	}{
		{"wrong audience", func() string {
			return e.subject(t, func(c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc"} })
		}, "does not match the expected audience"},
		{"another provider's audience", func() string {
			return e.subject(t, func(c map[string]any) { c["aud"] = strings.Replace(audience, provider, "other-provider", 1) })
		}, "does not match the expected audience"},
		{"wrong issuer", func() string {
			return e.subject(t, func(c map[string]any) { c["iss"] = "https://other-cluster.test" })
		}, "does not match the expected ISSUER"},
		{"expired", func() string {
			return e.subject(t, func(c map[string]any) {
				c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Unix()
			})
		}, "expired"},
		{"no exp", func() string { return e.subject(t, func(c map[string]any) { delete(c, "exp") }) }, "no exp"},
		{"no iat", func() string { return e.subject(t, func(c map[string]any) { delete(c, "iat") }) }, "no iat"},
		{"issued in the future", func() string {
			return e.subject(t, func(c map[string]any) { c["iat"] = now.Add(10 * time.Minute).Unix() })
		}, "issued in the future"},
		{"not valid yet", func() string {
			return e.subject(t, func(c map[string]any) { c["nbf"] = now.Add(10 * time.Minute).Unix() })
		}, "not valid yet"},
		{"lives over 24 hours", func() string {
			return e.subject(t, func(c map[string]any) { c["exp"] = now.Add(25 * time.Hour).Unix() })
		}, "at most 24h0m0s"},
		{"no sub", func() string { return e.subject(t, func(c map[string]any) { delete(c, "sub") }) }, "no sub"},
		{"sub over 127 bytes", func() string {
			return e.subject(t, func(c map[string]any) {
				c["sub"] = "system:serviceaccount:" + strings.Repeat("n", 63) + ":" + strings.Repeat("k", 60)
			})
		}, "exceeds the 127 bytes limit"},
		{"bad RSA signature", func() string { return e.iss.sign(t, "rsa-unpublished", "rsa-1", e.claims()) }, "Invalid JWT signature"},
		{"bad EC signature", func() string { return e.iss.sign(t, "ec-unpublished", "ec-1", e.claims()) }, "Invalid JWT signature"},
		{"EC key named as the RSA kid", func() string { return e.iss.sign(t, "ec-1", "rsa-1", e.claims()) }, "Invalid JWT signature"},
		{"no kid, no published key", func() string { return e.iss.sign(t, "rsa-unpublished", "", e.claims()) }, "Invalid JWT signature"},
		{"unknown kid", func() string { return e.iss.sign(t, "rsa-unpublished", "rsa-unpublished", e.claims()) }, "not in the issuer's JWKS"},
		{"tampered claims", func() string {
			good := strings.Split(e.subject(t, nil), ".")
			other := strings.Split(e.subject(t, func(c map[string]any) { c["sub"] = "system:serviceaccount:team:admin" }), ".")
			return good[0] + "." + other[1] + "." + good[2]
		}, "Invalid JWT signature"},
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
		}, "not a JWT signed with RS256 or ES256"},
		{"alg none", func() string {
			parts := strings.Split(e.subject(t, nil), ".")
			return "eyJhbGciOiJub25lIiwia2lkIjoicnNhLTEifQ." + parts[1] + "."
		}, "not a JWT signed with RS256 or ES256"},
		{"not a JWT", func() string { return "opaque-token" }, "not a JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.fake.Calls()
			_, err := e.client.ExchangeToken(t.Context(), tc.token(), []string{cloudPlatform})
			var d *gcp.Denied
			if !errors.As(err, &d) || d.Status != 400 || d.Code != "invalid_grant" || !strings.Contains(d.Message, tc.want) {
				t.Fatalf("%v: want 400 invalid_grant with %q", err, tc.want)
			}
			after := e.fake.Calls()
			if after.STS != before.STS+1 || after.Denied != before.Denied+1 {
				t.Fatalf("calls %+v after %+v", after, before)
			}
		})
	}
	// The JWKS cannot be had: refused too, never taken on trust.
	e.iss.mu.Lock()
	e.iss.jwksErr = errors.New("issuer unreachable")
	e.iss.mu.Unlock()
	_, err := e.client.ExchangeToken(t.Context(), e.subject(t, nil), []string{cloudPlatform})
	var d *gcp.Denied
	if !errors.As(err, &d) || !strings.Contains(d.Message, "issuer unreachable") {
		t.Fatalf("%v: want a refusal naming the JWKS error", err)
	}
}

// TestSTSKeyRotation: the JWKS is asked on every exchange; a key no longer
// published is refused, a new one accepted at once.
func TestSTSKeyRotation(t *testing.T) {
	e := newEnv(t)
	old := e.iss.sign(t, "rsa-1", "rsa-1", e.claims())
	e.iss.addKey(t, "rsa-2", jose.RS256)
	e.iss.publish("rsa-2")
	_, err := e.client.ExchangeToken(t.Context(), old, []string{cloudPlatform})
	var d *gcp.Denied
	if !errors.As(err, &d) || d.Code != "invalid_grant" {
		t.Fatalf("a retired key's token: %v", err)
	}
	if _, err := e.client.ExchangeToken(t.Context(), e.iss.sign(t, "rsa-2", "rsa-2", e.claims()), []string{cloudPlatform}); err != nil {
		t.Fatalf("the new key's token: %v", err)
	}
}

// TestSTSChecksTheRequest: the form as gcp sends it, field by field; any
// other is refused.
func TestSTSChecksTheRequest(t *testing.T) {
	e := newEnv(t)
	valid := url.Values{
		"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"audience":             {audience},
		"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"subject_token_type":   {"urn:ietf:params:oauth:token-type:jwt"},
		"subject_token":        {e.subject(t, nil)},
		"scope":                {cloudPlatform + " https://www.googleapis.com/auth/userinfo.email"},
	}
	const form = "application/x-www-form-urlencoded"
	if code, _ := e.post(t, e.fake.STSURL, form, valid.Encode(), ""); code != http.StatusOK {
		t.Fatalf("the valid form: %d", code)
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
	}{
		{"audience of another provider", form, changed("audience", strings.Replace(audience, provider, "other-provider", 1)), "invalid_target"},
		{"audience with https", form, changed("audience", "https:"+audience), "invalid_target"},
		{"audience without prefix", form, changed("audience", providerName), "invalid_target"},
		{"grant type", form, changed("grant_type", "client_credentials"), "unsupported_grant_type"},
		{"requested token type", form, changed("requested_token_type", "urn:ietf:params:oauth:token-type:id_token"), "invalid_request"},
		{"subject token type", form, changed("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"), "invalid_request"},
		{"no scope", form, changed("scope"), "invalid_request"},
		{"scope with double space", form, changed("scope", cloudPlatform+"  x"), "invalid_scope"},
		{"no subject token", form, changed("subject_token"), "invalid_request"},
		{"subject token twice", form, changed("subject_token", e.subject(t, nil), e.subject(t, nil)), "invalid_request"},
		{"unknown field", form, changed("subject_token_typ", "urn:ietf:params:oauth:token-type:jwt"), "invalid_request"},
		{"JSON body", "application/json", `{"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange"}`, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, errCode := e.post(t, e.fake.STSURL, tc.contentType, tc.body, "")
			if code != http.StatusBadRequest || errCode != tc.wantCode {
				t.Fatalf("%d %q, want 400 %q", code, errCode, tc.wantCode)
			}
		})
	}
	t.Run("query", func(t *testing.T) {
		if code, errCode := e.post(t, e.fake.STSURL+"?"+valid.Encode(), form, "", ""); code != 400 || errCode != "invalid_request" {
			t.Fatalf("%d %q", code, errCode)
		}
	})
	t.Run("GET", func(t *testing.T) {
		if code, errCode := e.get(t, "/sts/v1/token", ""); code != 400 || errCode != "invalid_request" {
			t.Fatalf("%d %q", code, errCode)
		}
	})
	// Through the gcp client: a client configured for another provider.
	_, err := e.clientFor(t, strings.Replace(providerName, provider, "other-provider", 1)).ExchangeToken(t.Context(), e.subject(t, nil), []string{cloudPlatform})
	var d *gcp.Denied
	if !errors.As(err, &d) || d.Status != 400 || d.Code != "invalid_target" {
		t.Fatalf("another provider: %v", err)
	}
}

// TestIAMRefuses: the bearer must be a live federated token the fake issued,
// with an IAM scope, of a principal allowed on that service account.
func TestIAMRefuses(t *testing.T) {
	e := newEnv(t)
	e.fake.Allow(principal, gsa)
	e.fake.Allow("principal://iam.googleapis.com/projects/"+projectNumber+"/locations/global/workloadIdentityPools/"+pool+"/subject/system:serviceaccount:team:other", "other@demo-project.iam.gserviceaccount.com")
	fed := e.exchange(t, cloudPlatform)
	narrow := e.exchange(t, "https://www.googleapis.com/auth/devstorage.read_only")

	type result struct {
		status int
		code   string
		msg    string // in the message
	}
	for _, tc := range []struct {
		name      string
		federated string
		email     string
		want      result
	}{
		{"unknown token", "ya29.d.madeup", gsa, result{401, "UNAUTHENTICATED", "invalid authentication credentials"}},
		{"principal not allowed", fed.Value, "admin@demo-project.iam.gserviceaccount.com",
			result{403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."}},
		{"allowed for another account only", fed.Value, "other@demo-project.iam.gserviceaccount.com",
			result{403, "PERMISSION_DENIED", "denied on resource"}},
		{"federated token without an IAM scope", narrow.Value, gsa, result{403, "PERMISSION_DENIED", "insufficient authentication scopes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.fake.Calls()
			_, err := e.client.GenerateAccessToken(t.Context(), tc.federated, tc.email, []string{cloudPlatform}, time.Hour)
			checkDenied(t, err, tc.want.status, tc.want.code, tc.want.msg)
			_, err = e.client.GenerateIDToken(t.Context(), tc.federated, tc.email, "https://svc.example")
			want := strings.Replace(tc.want.msg, "getAccessToken", "getOpenIdToken", 1)
			checkDenied(t, err, tc.want.status, tc.want.code, want)
			after := e.fake.Calls()
			if after.AccessTokens != before.AccessTokens+1 || after.IDTokens != before.IDTokens+1 || after.Denied != before.Denied+2 {
				t.Fatalf("calls %+v after %+v", after, before)
			}
		})
	}

	t.Run("expired federated token", func(t *testing.T) {
		e := newEnv(t)
		e.fake.Allow(principal, gsa)
		fed := e.exchange(t, cloudPlatform)
		if _, err := e.client.GenerateAccessToken(t.Context(), fed.Value, gsa, []string{cloudPlatform}, time.Hour); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Hour)
		_, err := e.client.GenerateAccessToken(t.Context(), fed.Value, gsa, []string{cloudPlatform}, time.Hour)
		checkDenied(t, err, 401, "UNAUTHENTICATED", "invalid authentication credentials")
	})

	t.Run("a pool's principalSet", func(t *testing.T) {
		e := newEnv(t)
		e.fake.Allow("principalSet://iam.googleapis.com/projects/"+projectNumber+"/locations/global/workloadIdentityPools/"+pool+"/*", gsa)
		fed := e.exchange(t, cloudPlatform)
		if _, err := e.client.GenerateAccessToken(t.Context(), fed.Value, gsa, []string{cloudPlatform}, time.Hour); err != nil {
			t.Fatal(err)
		}
	})

	// Raw requests: what the gcp client never sends.
	iamURL := e.fake.IAMURL + "/projects/-/serviceAccounts/" + gsa + ":generateAccessToken"
	for _, tc := range []struct {
		name, url, contentType, body, token string
		want                                result
	}{
		{"no bearer", iamURL, "application/json", `{"scope":["` + cloudPlatform + `"]}`, "", result{401, "UNAUTHENTICATED", ""}},
		{"unknown field", iamURL, "application/json", `{"scope":["` + cloudPlatform + `"],"lifetme":"3600s"}`, fed.Value, result{400, "INVALID_ARGUMENT", ""}},
		{"no scope", iamURL, "application/json", `{"lifetime":"3600s"}`, fed.Value, result{400, "INVALID_ARGUMENT", ""}},
		{"lifetime over an hour", iamURL, "application/json", `{"scope":["` + cloudPlatform + `"],"lifetime":"7200s"}`, fed.Value, result{400, "INVALID_ARGUMENT", ""}},
		{"lifetime not a duration", iamURL, "application/json", `{"scope":["` + cloudPlatform + `"],"lifetime":"1h"}`, fed.Value, result{400, "INVALID_ARGUMENT", ""}},
		{"delegates", iamURL, "application/json", `{"scope":["` + cloudPlatform + `"],"delegates":["x"]}`, fed.Value, result{400, "INVALID_ARGUMENT", ""}},
		{"form body", iamURL, "application/x-www-form-urlencoded", `scope=x`, fed.Value, result{400, "INVALID_ARGUMENT", ""}},
		{"a project", strings.Replace(iamURL, "/projects/-/", "/projects/demo-project/", 1), "application/json", `{"scope":["` + cloudPlatform + `"]}`, fed.Value, result{400, "INVALID_ARGUMENT", ""}},
		{"unknown method", strings.Replace(iamURL, "generateAccessToken", "signJwt", 1), "application/json", `{}`, fed.Value, result{404, "NOT_FOUND", ""}},
		{"STS's path", e.fake.STSURL + "/projects/-/serviceAccounts/" + gsa + ":generateAccessToken", "application/json", `{}`, fed.Value, result{404, "", ""}},
		{"no audience", strings.Replace(iamURL, "generateAccessToken", "generateIdToken", 1), "application/json", `{"includeEmail":true}`, fed.Value, result{400, "INVALID_ARGUMENT", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, errCode := e.post(t, tc.url, tc.contentType, tc.body, tc.token); code != tc.want.status || errCode != tc.want.code {
				t.Fatalf("%d %q, want %d %q", code, errCode, tc.want.status, tc.want.code)
			}
		})
	}
	// A lifetime shorter than an hour is honoured.
	code, _ := e.post(t, iamURL, "application/json", `{"scope":["`+cloudPlatform+`"],"lifetime":"600s"}`, fed.Value)
	if code != 200 {
		t.Fatalf("lifetime 600s: %d", code)
	}
	access, err := e.client.GenerateAccessToken(t.Context(), fed.Value, gsa, []string{cloudPlatform}, 10*time.Minute)
	if err != nil || !access.Expiry.Equal(e.clock.Now().Add(10*time.Minute)) {
		t.Fatalf("%v, expiry %v", err, access.Expiry)
	}
}

func checkDenied(t *testing.T, err error, status int, code, msg string) {
	t.Helper()
	var d *gcp.Denied
	if !errors.As(err, &d) || d.Status != status || d.Code != code || !strings.Contains(d.Message, msg) {
		t.Fatalf("%v: want %d %s with %q", err, status, code, msg)
	}
}

// TestAPIRefuses: only a live token the fake issued, with a storage scope.
func TestAPIRefuses(t *testing.T) {
	e := newEnv(t)
	e.fake.Allow(principal, gsa)
	fed := e.exchange(t, cloudPlatform)
	access, err := e.client.GenerateAccessToken(t.Context(), fed.Value, gsa, []string{"https://www.googleapis.com/auth/devstorage.read_only"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	noStorage, err := e.client.GenerateAccessToken(t.Context(), fed.Value, gsa, []string{"https://www.googleapis.com/auth/pubsub"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.client.GenerateIDToken(t.Context(), fed.Value, gsa, "https://svc.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", 401},
		{"a token it did not issue", "ya29.c.madeup", 401},
		{"an ID token", id.Value, 401},
		{"a subject token", e.subject(t, nil), 401},
		{"no storage scope", noStorage.Value, 403},
		{"access token", access.Value, 200},
		{"federated token", fed.Value, 200},
	} {
		if code, _ := e.get(t, bucketPath, tc.token); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}
	if code, _ := e.get(t, "/storage/v1/b/", access.Value); code != 404 {
		t.Errorf("no bucket: %d", code)
	}
	// Expired: the access token at its expiry, the federated token too.
	e.clock.Advance(time.Hour)
	for name, token := range map[string]string{"access": access.Value, "federated": fed.Value} {
		if code, _ := e.get(t, bucketPath, token); code != 401 {
			t.Errorf("expired %s token: %d, want 401", name, code)
		}
	}
	if c := e.fake.Calls(); c.API != 10 || c.Denied != 8 {
		t.Fatalf("calls %+v", c)
	}
}

// TestDown: STS and IAM answer 503 while down, which the gcp client takes
// for ErrUnavailable; the API keeps serving; all recover.
func TestDown(t *testing.T) {
	e := newEnv(t)
	e.fake.Allow(principal, gsa)
	fed := e.exchange(t, cloudPlatform)

	e.fake.SetDown(true)
	_, err := e.client.ExchangeToken(t.Context(), e.subject(t, nil), []string{cloudPlatform})
	if !errors.Is(err, gcp.ErrUnavailable) {
		t.Fatalf("STS down: %v", err)
	}
	if _, err := e.client.GenerateAccessToken(t.Context(), fed.Value, gsa, []string{cloudPlatform}, time.Hour); !errors.Is(err, gcp.ErrUnavailable) {
		t.Fatalf("IAM down: %v", err)
	}
	if _, err := e.client.GenerateIDToken(t.Context(), fed.Value, gsa, "https://svc.example"); !errors.Is(err, gcp.ErrUnavailable) {
		t.Fatalf("IAM down: %v", err)
	}
	if code, _ := e.get(t, bucketPath, fed.Value); code != 200 {
		t.Fatalf("API while STS and IAM are down: %d", code)
	}
	if c, want := e.fake.Calls(), (fakegoogle.Calls{STS: 2, AccessTokens: 1, IDTokens: 1, API: 1, Unavailable: 3}); c != want {
		t.Fatalf("calls %+v, want %+v", c, want)
	}

	e.fake.SetDown(false)
	fed2 := e.exchange(t, cloudPlatform)
	if _, err := e.client.GenerateAccessToken(t.Context(), fed2.Value, gsa, []string{cloudPlatform}, time.Hour); err != nil {
		t.Fatalf("IAM back: %v", err)
	}
}

// TestTokenLifetime: a short lifetime for what the fake issues, for tests
// of refresh.
func TestTokenLifetime(t *testing.T) {
	e := newEnv(t, func(o *fakegoogle.Options) { o.TokenLifetime = 30 * time.Second })
	e.fake.Allow(principal, gsa)
	now := e.clock.Now()
	fed := e.exchange(t, cloudPlatform)
	access, err := e.client.GenerateAccessToken(t.Context(), fed.Value, gsa, []string{cloudPlatform}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.client.GenerateIDToken(t.Context(), fed.Value, gsa, "https://svc.example")
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := e.fake.TokenInfo(fed.Value); !info.Expiry.Equal(now.Add(30 * time.Second)) {
		t.Fatalf("federated token expires %v", info.Expiry)
	}
	for name, tok := range map[string]gcp.Token{"access": access, "id": id} {
		if !tok.Expiry.Equal(now.Add(30 * time.Second)) {
			t.Errorf("%s token expires %v, want %v", name, tok.Expiry, now.Add(30*time.Second))
		}
	}
}

func TestStartRefusesBadOptions(t *testing.T) {
	for name, o := range map[string]fakegoogle.Options{
		"project ID": {ProjectNumber: "demo-project", Pool: pool, Provider: provider, Issuer: issuerURL, JWKS: func() ([]byte, error) { return nil, nil }},
		"no issuer":  {ProjectNumber: projectNumber, Pool: pool, Provider: provider, JWKS: func() ([]byte, error) { return nil, nil }},
		"no JWKS":    {ProjectNumber: projectNumber, Pool: pool, Provider: provider, Issuer: issuerURL},
	} {
		ft := &fatalT{TB: t}
		func() {
			defer func() { recover() }()
			fakegoogle.Start(ft, t.TempDir(), o)
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
