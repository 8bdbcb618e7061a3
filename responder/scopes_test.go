package responder

import (
	"strings"
	"testing"

	"github.com/metabind/metabind/responder/subject"
)

const (
	scopeStorage = "https://www.googleapis.com/auth/devstorage.read_only"
	scopeEmail   = "https://www.googleapis.com/auth/userinfo.email"
	scopePubSub  = "https://www.googleapis.com/auth/pubsub"
)

// scopesConfig gives payments/api-* three scopes, none of them
// cloud-platform, listed out of order.
const scopesConfig = `
project: {id: demo-project, numericId: "123456789012"}
node: {name: node-1, zone: us-central1-a}
issuer: {url: https://metabind.local/node-1}
identities:
  - namespace: payments
    pod: "api-*"
    serviceAccount: api
    scopes: [` + scopePubSub + `, ` + scopeEmail + `, ` + scopeStorage + `]
`

// TestTokenScopes: ?scopes= takes any subset of the identity's scopes,
// comma-separated in any order, and the token's scope claim is that set,
// sorted; equal sets share one token. A scope the identity lacks is 400
// naming it.
func TestTokenScopes(t *testing.T) {
	cfg, err := ParseConfig([]byte(scopesConfig))
	if err != nil {
		t.Fatal(err)
	}
	h := newHandlerFromConfig(t, cfg, nil)
	const all = scopeStorage + " " + scopePubSub + " " + scopeEmail // sorted

	tokens := map[string]string{} // scope claim -> the token first served for it
	for _, tc := range []struct {
		name, query, scope string
	}{
		{"no scopes", "", all},
		{"empty scopes", "?scopes=", all},
		{"only commas", "?scopes=,,", all},
		{"every scope, another order", "?scopes=" + scopeStorage + "," + scopeEmail + "," + scopePubSub, all},
		{"one", "?scopes=" + scopeEmail, scopeEmail},
		{"two", "?scopes=" + scopeStorage + "," + scopeEmail, scopeStorage + " " + scopeEmail},
		{"two, reversed", "?scopes=" + scopeEmail + "," + scopeStorage, scopeStorage + " " + scopeEmail},
		{"two, repeated, spaced", "?scopes=" + scopeEmail + ",%20" + scopeStorage + "," + scopeEmail, scopeStorage + " " + scopeEmail},
		{"space-separated", "?scopes=" + scopeEmail + "+" + scopeStorage, scopeStorage + " " + scopeEmail},
	} {
		resp := accessTokenOf(t, h, cacheToken+tc.query, apiIP)
		got := claimsOf(t, resp.AccessToken).Scope
		if got != tc.scope {
			t.Errorf("%s: scope claim %q, want %q", tc.name, got, tc.scope)
			continue
		}
		if prev, ok := tokens[got]; ok && prev != resp.AccessToken {
			t.Errorf("%s: a second token for the same scopes %q", tc.name, got)
		}
		tokens[got] = resp.AccessToken
	}

	for _, tc := range []struct {
		name, query, named string
	}{
		{"not held", "?scopes=" + subject.DefaultScope, subject.DefaultScope},
		{"one held, one not", "?scopes=" + scopeEmail + "," + subject.DefaultScope, subject.DefaultScope},
	} {
		rec := do(t, h, "GET", cacheToken+tc.query, apiIP, flavor)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), tc.named) {
			t.Errorf("%s: %d %q, want 400 naming %q", tc.name, rec.Code, rec.Body, tc.named)
		}
	}
}

// TestTokenScopesCloudPlatform: an identity holding cloud-platform may ask
// for any other Google API scope, as on GCE, where cloud-platform covers
// them: Python's google-auth sends a client library's default scopes
// (google-cloud-storage: devstorage.*) as ?scopes=. Anything else is 400.
func TestTokenScopesCloudPlatform(t *testing.T) {
	h, _ := newTestHandler(t, nil) // api: cloud-platform only
	resp := accessTokenOf(t, h, cacheToken+"?scopes="+scopeStorage+","+scopeEmail, apiIP)
	if got, want := claimsOf(t, resp.AccessToken).Scope, scopeStorage+" "+scopeEmail; got != want {
		t.Errorf("scope claim %q, want %q", got, want)
	}
	for _, tc := range []struct{ query, named string }{
		{"openid", "openid"},
		{"https://example.com/auth/x", "https://example.com/auth/x"},
		// The prefix must not carry what follows it into the
		// space-separated claim, nor characters RFC 6749 leaves out of a
		// scope.
		{scopeStorage + "%20openid", "openid"},
		{scopeStorage + "%09openid", "openid"},
		{scopeStorage + "%22", `devstorage.read_only\"`},
		{scopeStorage + "%5C", `devstorage.read_only\\`},
		{scopeStorage + "%C3%A9", "devstorage.read_onlyé"},
	} {
		rec := do(t, h, "GET", cacheToken+"?scopes="+tc.query, apiIP, flavor)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), tc.named) {
			t.Errorf("%s: %d %q, want 400 naming %s", tc.query, rec.Code, rec.Body, tc.named)
		}
	}
}
