package responder

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/store"
)

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// audits counts the "token issued" lines.
func (s *syncBuffer) audits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), `"msg":"token issued"`)
}

// cacheTestHandler is the test handler on a fake clock, logging to buf,
// with a rate limit no test reaches.
func cacheTestHandler(t *testing.T) (*Responder, fakeLookup, *clock, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	lookup := testLookup()
	h, iss := newResponder(t, unlimited(testCfg(t)), lookup, slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	clk := &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 600_000_000, time.UTC)}
	h.setClock(clk.now)
	iss.Now = clk.now
	return h, lookup, clk, buf
}

func accessTokenOf(t *testing.T, h http.Handler, target, ip string) tokenResponse {
	t.Helper()
	rec := do(t, h, "GET", target, ip, flavor)
	if rec.Code != 200 {
		t.Fatalf("%s from %s: status %d %s", target, ip, rec.Code, rec.Body)
	}
	var resp tokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("%s: %v: %q", target, err, rec.Body)
	}
	return resp
}

func idTokenOf(t *testing.T, h http.Handler, target, ip string) string {
	t.Helper()
	rec := do(t, h, "GET", target, ip, flavor)
	if rec.Code != 200 {
		t.Fatalf("%s from %s: status %d %s", target, ip, rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func claimsOf(t *testing.T, tok string) *credentials.Claims {
	t.Helper()
	var c credentials.Claims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
		t.Fatalf("not a JWT: %v", err)
	}
	return &c
}

const (
	cacheSA       = "/computeMetadata/v1/instance/service-accounts/default"
	cacheToken    = cacheSA + "/token"
	cacheIdentity = cacheSA + "/identity?audience=https://aud.example"
)

// TestTokenCacheReuse: an access token is served again while more than
// half its life remains, with expires_in counting down, then a new one is
// minted; an ID token is served again within credentials.IDTokenReuse. One audit line
// per mint, none per cache hit.
func TestTokenCacheReuse(t *testing.T) {
	h, _, clk, buf := cacheTestHandler(t)
	const life = time.Hour // testConfig's tokenLifetime

	first := accessTokenOf(t, h, cacheToken, apiIP)
	if first.ExpiresIn != int64(life/time.Second)-1 {
		t.Errorf("fresh token: expires_in %d, want %d", first.ExpiresIn, int64(life/time.Second)-1)
	}
	clk.add(10 * time.Minute)
	again := accessTokenOf(t, h, cacheToken, apiIP)
	if again.AccessToken != first.AccessToken {
		t.Error("a token with 50 min left was minted again")
	}
	exp := claimsOf(t, again.AccessToken).ExpiresAt.Time
	if want := int64(exp.Sub(clk.now()) / time.Second); again.ExpiresIn != want {
		t.Errorf("cached token: expires_in %d, want its remaining life %d", again.ExpiresIn, want)
	}
	if n := buf.audits(); n != 1 {
		t.Errorf("%d audit lines after one mint and one cache hit, want 1", n)
	}
	if !strings.Contains(buf.b.String(), `"msg":"token served from cache"`) {
		t.Error("no debug line for the cache hit")
	}

	// Half the lifetime has passed since iat (whole seconds).
	clk.add(life/2 - 10*time.Minute)
	fresh := accessTokenOf(t, h, cacheToken, apiIP)
	if fresh.AccessToken == first.AccessToken {
		t.Error("a token at half its life was served again")
	}
	if fresh.ExpiresIn != int64(life/time.Second)-1 {
		t.Errorf("refreshed token: expires_in %d", fresh.ExpiresIn)
	}
	if n := buf.audits(); n != 2 {
		t.Errorf("%d audit lines after two mints, want 2", n)
	}

	id := idTokenOf(t, h, cacheIdentity, apiIP)
	clk.add(credentials.IDTokenReuse - 2*time.Second)
	if idTokenOf(t, h, cacheIdentity, apiIP) != id {
		t.Error("an ID token was minted again within credentials.IDTokenReuse")
	}
	clk.add(2 * time.Second)
	if idTokenOf(t, h, cacheIdentity, apiIP) == id {
		t.Error("an ID token was served again after credentials.IDTokenReuse")
	}
	if n := buf.audits(); n != 4 {
		t.Errorf("%d audit lines after four mints, want 4", n)
	}
}

// TestTokenCacheNewPodOnReusedIP: when an IP passes to a new pod, even one
// of the same namespace and name (a StatefulSet's), or the same pod gets a
// new sandbox, the next request from that IP gets a token minted for the
// new binding, never the cached token of the old.
func TestTokenCacheNewPodOnReusedIP(t *testing.T) {
	h, lookup, _, _ := cacheTestHandler(t)
	ip := netip.MustParseAddr(apiIP)
	old := lookup[ip]

	oldAccess := accessTokenOf(t, h, cacheToken, apiIP).AccessToken
	oldID := idTokenOf(t, h, cacheIdentity, apiIP)
	if claimsOf(t, oldAccess).Kubernetes.Pod.UID != old.PodUID || claimsOf(t, oldID).Kubernetes.Pod.UID != old.PodUID {
		t.Fatal("tokens of the first pod do not name it")
	}

	for _, next := range []store.Binding{
		{IP: ip, Namespace: old.Namespace, Pod: old.Pod, PodUID: "uid-successor", ContainerID: "c-successor"}, // same name, new pod
		{IP: ip, Namespace: old.Namespace, Pod: old.Pod, PodUID: "uid-successor", ContainerID: "c-sandbox-2"}, // same pod, new sandbox
		{IP: ip, Namespace: old.Namespace, Pod: "api-2", PodUID: "uid-api-2", ContainerID: old.ContainerID},   // container ID reused
	} {
		lookup[ip] = next
		access := accessTokenOf(t, h, cacheToken, apiIP).AccessToken
		id := idTokenOf(t, h, cacheIdentity, apiIP)
		for kind, tok := range map[string]string{"access": access, "ID": id} {
			c := claimsOf(t, tok)
			if tok == oldAccess || tok == oldID || c.Kubernetes.Pod.UID != next.PodUID || c.Kubernetes.Pod.Name != next.Pod {
				t.Errorf("%s token after the IP passed to %s/%s (container %s) names pod %+v", kind, next.Pod, next.PodUID, next.ContainerID, c.Kubernetes.Pod)
			}
		}
		oldAccess, oldID = access, id
	}
}

// TestTokenCacheKeys: what a token says is part of its key: scopes,
// audience and format each get their own token.
func TestTokenCacheKeys(t *testing.T) {
	h, _, _, buf := cacheTestHandler(t)
	seen := map[string]string{}
	for _, target := range []string{
		cacheToken,
		cacheToken + "?scopes=https://www.googleapis.com/auth/userinfo.email",
		cacheToken + "?scopes=https://www.googleapis.com/auth/cloud-platform,https://www.googleapis.com/auth/userinfo.email",
		cacheSA + "/identity?audience=a",
		cacheSA + "/identity?audience=b",
		cacheSA + "/identity?audience=a&format=full",
	} {
		var tok string
		if strings.Contains(target, "/token") {
			tok = accessTokenOf(t, h, target, apiIP).AccessToken
		} else {
			tok = idTokenOf(t, h, target, apiIP)
		}
		if prev, ok := seen[tok]; ok {
			t.Errorf("%s got the token of %s", target, prev)
		}
		seen[tok] = target
	}
	// Equivalent requests share: format=standard is the default format,
	// and the email names the default account.
	if a, b := idTokenOf(t, h, cacheSA+"/identity?audience=a&format=standard", apiIP), idTokenOf(t, h, cacheSA+"/identity?audience=a", apiIP); a != b {
		t.Error("format=standard and no format got different tokens")
	}
	if a, b := accessTokenOf(t, h, cacheToken, apiIP), accessTokenOf(t, h, "/computeMetadata/v1/instance/service-accounts/"+apiEmail+"/token", apiIP); a.AccessToken != b.AccessToken {
		t.Error("default and the account's email got different tokens")
	}
	// Another pod of the same identity rule gets its own.
	if accessTokenOf(t, h, cacheToken, "127.0.0.1").AccessToken == accessTokenOf(t, h, cacheToken, apiIP).AccessToken {
		t.Error("two pods of one rule share a token")
	}
	if n := buf.audits(); n != 7 {
		t.Errorf("%d audit lines, want 7", n)
	}
}

// TestTokenCacheKeyRotation: once the issuer signs with a new key, cached
// tokens of the old key are not served again.
func TestTokenCacheKeyRotation(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: time.Now()}
	buf := &syncBuffer{}
	iss := openTestIssuer(t, dir, clk, nil)
	h, err := New(testCfg(t), testLookup(), iss, slog.New(slog.NewJSONHandler(buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h.setClock(clk.now)

	before := accessTokenOf(t, h, cacheToken, apiIP).AccessToken
	if _, err := issuer.RotateSigningKey(dir, clk.now()); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Second) // the issuer looks at the key files once a second
	after := accessTokenOf(t, h, cacheToken, apiIP).AccessToken
	if after == before {
		t.Fatal("the token signed with the retired key was served after the rotation")
	}
	if kidOf(t, after) != iss.KeyID() || kidOf(t, before) == iss.KeyID() {
		t.Errorf("kid before %s, after %s, issuer signs with %s", kidOf(t, before), kidOf(t, after), iss.KeyID())
	}
	if n := buf.audits(); n != 2 {
		t.Errorf("%d audit lines, want 2", n)
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, &credentials.Claims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := parsed.Header["kid"].(string)
	return kid
}
