package responder

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/store"
)

func (f fakeLookup) Bindings() (map[netip.Addr]store.Binding, error) { return f, nil }

// newTestLive is the live responder for the configuration text over
// testLookup, signing with a fresh key.
func newTestLive(t *testing.T, text string) (*Live, *issuer.Issuer) {
	t.Helper()
	cfg := parse(t, text)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := issuer.New(cfg.Issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLive(cfg, testLookup(), iss, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l, iss
}

func parse(t *testing.T, text string) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func reload(t *testing.T, l *Live, text string) Reload {
	t.Helper()
	done, err := l.Reload(context.Background(), parse(t, text))
	if err != nil {
		t.Fatal(err)
	}
	return done
}

// idToken asks the token of the pod at ip for one audience.
func idToken(t *testing.T, h http.Handler, ip string) string {
	t.Helper()
	rec := do(t, h, "GET", "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://aud.example", ip, flavor)
	if rec.Code != 200 {
		t.Fatalf("identity from %s: %d %s", ip, rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func emailClaim(t *testing.T, token string) string {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		t.Fatal(err)
	}
	email, _ := claims["email"].(string)
	return email
}

const newAPIEmail = "api-v2@demo-project.iam.gserviceaccount.com"

// A reload that changes only the rate limit keeps every cached token; one
// that changes a rule's identity gives that rule's pods the new identity's
// tokens at once and leaves the other pods' tokens alone.
func TestReloadKeepsTokensOfUnchangedIdentities(t *testing.T) {
	l, _ := newTestLive(t, testConfig)
	api, worker := idToken(t, l, apiIP), idToken(t, l, workerIP)

	done := reload(t, l, testConfig+"limits: {requestsPerSecond: 7, burst: 9}\n")
	if !done.TokensKept || done.Forgotten != 0 || strings.Join(done.Changed, ",") != "limits" {
		t.Fatalf("rate limit reload: %+v", done)
	}
	if got := idToken(t, l, apiIP); got != api {
		t.Fatal("a rate limit reload dropped a cached token")
	}

	done = reload(t, l, strings.Replace(testConfig, apiEmail, newAPIEmail, 1))
	// payments/api-1 and payments/api-local (127.0.0.1) match the rule.
	if !done.TokensKept || done.Forgotten != 2 || strings.Join(done.Changed, ",") != "limits,identities" {
		t.Fatalf("identity reload: %+v", done)
	}
	got := idToken(t, l, apiIP)
	if got == api || emailClaim(t, got) != newAPIEmail {
		t.Fatalf("after its rule changed, the pod got the email %q, want a new token for %s", emailClaim(t, got), newAPIEmail)
	}
	if l.Current().tokens.Len() != 2 {
		t.Fatalf("%d tokens cached: the old identity's token was not forgotten", l.Current().tokens.Len())
	}
	if idToken(t, l, workerIP) != worker {
		t.Fatal("a pod whose rule did not change lost its cached token")
	}

	// Another project signs other claims: the cache starts afresh.
	done = reload(t, l, strings.ReplaceAll(testConfig, "demo-project", "other-project"))
	if done.TokensKept {
		t.Fatalf("project change kept the token cache: %+v", done)
	}
	if idToken(t, l, workerIP) == worker {
		t.Fatal("a project change served a token of the old project")
	}
}

// What the process cannot change while running is refused, and the
// configuration in force stays.
func TestReloadRefusesRestartOnlyChanges(t *testing.T) {
	l, _ := newTestLive(t, testConfig)
	before := l.Current()
	for _, tc := range []struct{ name, text, key string }{
		{"issuer", strings.Replace(testConfig, "https://metabind.local/node-1", "https://other.example/node-1", 1), "issuer"},
		{"node name", strings.Replace(testConfig, "name: node-1", "name: node-2", 1), "node.name"},
		{"kubernetes", testConfig + "kubernetes: {audiences: [https://aud.example]}\n", "kubernetes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Reload(context.Background(), parse(t, tc.text+"limits: {burst: 3}\n"))
			var restart *RestartError
			if !errors.As(err, &restart) || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), "restart") {
				t.Fatalf("Reload = %v, want a restart error naming %s", err, tc.key)
			}
			if l.Current() != before {
				t.Fatal("the responder was replaced")
			}
		})
	}
}

// A pod's keep-alive connection outlives a reload and gets the new
// configuration's answers: nothing is dropped or redialled.
func TestReloadKeepsConnections(t *testing.T) {
	l, _ := newTestLive(t, testConfig)
	srv := httptest.NewServer(l)
	defer srv.Close()
	var dials atomic.Int32
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	email := func() string {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/computeMetadata/v1/instance/service-accounts/default/email", nil)
		req.Header.Set("Metadata-Flavor", "Google")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		return string(body)
	}
	// 127.0.0.1 is payments/api-local.
	if got := email(); got != apiEmail {
		t.Fatalf("email %q", got)
	}
	reload(t, l, strings.Replace(testConfig, apiEmail, newAPIEmail, 1))
	if got := email(); got != newAPIEmail {
		t.Fatalf("after the reload the connection answers %q, want %q", got, newAPIEmail)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections: the reload dropped the keep-alive one", n)
	}
}
