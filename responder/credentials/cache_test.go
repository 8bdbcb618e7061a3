package credentials

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metabind/metabind/responder/subject"
	"github.com/metabind/metabind/store"
)

// fakeSource mints numbered tokens, valid for an hour from its clock,
// signed with kid.
type fakeSource struct {
	now   func() time.Time
	delay time.Duration // a slow signer widens races

	mu    sync.Mutex
	kid   string
	err   error
	mints int
	asked []string // what each mint was for
}

func (f *fakeSource) AccessToken(_ context.Context, s subject.Subject, scopes []string) (Token, error) {
	return f.mint("access " + s.PodUID + " " + strings.Join(scopes, " "))
}

func (f *fakeSource) IDToken(_ context.Context, s subject.Subject, audience, format string, licenses bool) (Token, error) {
	return f.mint(fmt.Sprintf("id %s %s %s %v", s.PodUID, audience, format, licenses))
}

func (f *fakeSource) mint(what string) (Token, error) {
	f.mu.Lock()
	f.mints++
	n, kid, err := f.mints, f.kid, f.err
	f.asked = append(f.asked, what)
	f.mu.Unlock()
	time.Sleep(f.delay)
	if err != nil {
		return Token{}, err
	}
	at := f.now().Truncate(time.Second)
	return Token{Value: fmt.Sprint("token-", n), IssuedAt: at, Expiry: at.Add(time.Hour), KeyID: kid, ID: fmt.Sprint("jti-", n), Audience: []string{what}}, nil
}

func (f *fakeSource) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.mints }

// keyedSource is a fakeSource that says which key it signs with now.
type keyedSource struct{ *fakeSource }

func (k keyedSource) CurrentKeyID() string { k.mu.Lock(); defer k.mu.Unlock(); return k.kid }

func testSubject(uid string) subject.Subject {
	return subject.Subject{
		Binding:   store.Binding{ContainerID: "c-" + uid, Namespace: "payments", Pod: "api-1", PodUID: uid},
		Namespace: "payments", Pod: "api-1", PodUID: uid, ServiceAccount: "api", Email: "api@p.example", EmailClaim: "api@p.example",
		Scopes: []string{"s1"},
	}
}

// TestCacheMintsOnce: requests racing for the same token share one mint; a
// failed mint is shared too, and not cached.
func TestCacheMintsOnce(t *testing.T) {
	src := &fakeSource{now: time.Now, delay: 50 * time.Millisecond}
	c := NewCache(src, nil)
	const n = 32
	var start, done sync.WaitGroup
	start.Add(1)
	got := make([]Token, n)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			tok, err := c.IDToken(context.Background(), testSubject("u"), "aud", FormatStandard, false)
			if err != nil {
				panic(err)
			}
			got[i] = tok
		}()
	}
	start.Done()
	done.Wait()
	if m := src.count(); m != 1 {
		t.Errorf("%d mints for %d racing requests, want 1", m, n)
	}
	for i := range got {
		if got[i].Value != got[0].Value {
			t.Fatal("racing requests got different tokens")
		}
	}

	src.mu.Lock()
	src.err = errors.New("signer down")
	src.mu.Unlock()
	if _, err := c.IDToken(context.Background(), testSubject("u"), "other", FormatStandard, false); err == nil {
		t.Error("a failed mint succeeded")
	}
	if c.Len() != 1 {
		t.Errorf("%d tokens cached, want the one that was minted", c.Len())
	}
}

// TestCacheKeys: whatever a token says is part of its key: the pod, the
// identity, the kind, the scopes or audience, the format, and licences
// with format=full (without, they change nothing).
func TestCacheKeys(t *testing.T) {
	src := &fakeSource{now: time.Now}
	c := NewCache(src, nil)
	ctx := context.Background()
	base := testSubject("u")
	seen := map[string]string{}
	check := func(name string, tok Token, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := seen[tok.Value]; ok {
			t.Errorf("%s got the token of %s", name, prev)
		}
		seen[tok.Value] = name
	}
	tok, err := c.AccessToken(ctx, base, []string{"s1"})
	check("access s1", tok, err)
	tok, err = c.AccessToken(ctx, base, []string{"s1", "s2"})
	check("access s1 s2", tok, err)
	tok, err = c.IDToken(ctx, base, "aud", FormatStandard, false)
	check("id", tok, err)
	tok, err = c.IDToken(ctx, base, "aud", FormatFull, false)
	check("id full", tok, err)
	tok, err = c.IDToken(ctx, base, "aud", FormatFull, true)
	check("id full licenses", tok, err)
	for name, change := range map[string]func(*subject.Subject){
		"another pod UID":         func(s *subject.Subject) { s.PodUID = "v" },
		"another container":       func(s *subject.Subject) { s.Binding.ContainerID = "c-2" },
		"another pod name":        func(s *subject.Subject) { s.Pod = "api-2" },
		"another service account": func(s *subject.Subject) { s.ServiceAccount = "web" },
		"another email":           func(s *subject.Subject) { s.Email = "web@p.example" },
		"no email claim":          func(s *subject.Subject) { s.EmailClaim = "" },
		"annotations": func(s *subject.Subject) {
			s.Annotations = map[string]string{"iam.gke.io/gcp-service-account": "a@p.example"}
		},
		"other annotations": func(s *subject.Subject) {
			s.Annotations = map[string]string{"iam.gke.io/gcp-service-account": "b@p.example"}
		},
	} {
		s := testSubject("u")
		change(&s)
		tok, err := c.IDToken(ctx, s, "aud", FormatStandard, false)
		check(name, tok, err)
	}
	// Licences only count with format=full; scopes held do not count.
	if a, _ := c.IDToken(ctx, base, "aud", FormatStandard, true); seen[a.Value] != "id" {
		t.Errorf("licenses on a standard token minted %s", a.Value)
	}
	s := base
	s.Scopes = []string{"s1", "s9"}
	if a, _ := c.AccessToken(ctx, s, []string{"s1"}); seen[a.Value] != "access s1" {
		t.Errorf("the scopes held changed the key: %s", a.Value)
	}
}

// TestCacheReuse: an access token is served while more than half its life
// remains, an ID token for IDTokenReuse; then a new one is minted.
func TestCacheReuse(t *testing.T) {
	clk := time.Date(2030, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	now := func() time.Time { return clk }
	src := &fakeSource{now: now}
	c := NewCache(src, nil)
	c.Now = now
	ctx := context.Background()
	access, _ := c.AccessToken(ctx, testSubject("u"), []string{"s1"})
	id, _ := c.IDToken(ctx, testSubject("u"), "aud", FormatStandard, false)
	for _, tc := range []struct {
		after        time.Duration
		sameAccess   bool
		sameID       bool
		expiresInNow int64
	}{
		{IDTokenReuse - time.Second, true, true, 3600 - 60},
		{29 * time.Minute, true, false, 3600 - 29*60 - 1},
		{30 * time.Minute, false, false, 3600 - 1},
	} {
		clk = access.IssuedAt.Add(tc.after).Add(600 * time.Millisecond)
		a, _ := c.AccessToken(ctx, testSubject("u"), []string{"s1"})
		i, _ := c.IDToken(ctx, testSubject("u"), "aud", FormatStandard, false)
		if (a.Value == access.Value) != tc.sameAccess || (i.Value == id.Value) != tc.sameID {
			t.Errorf("%v after minting: access reused %v, ID token reused %v; want %v, %v", tc.after, a.Value == access.Value, i.Value == id.Value, tc.sameAccess, tc.sameID)
		}
		if got := a.ExpiresIn(clk); got != tc.expiresInNow {
			t.Errorf("%v after minting: expires in %d s, want %d", tc.after, got, tc.expiresInNow)
		}
	}
}

// TestCacheKeyRotation: once a keyed source signs with a new key, its
// cached tokens of the old key are not served again; a source without keys
// has its tokens served whatever their KeyID says.
func TestCacheKeyRotation(t *testing.T) {
	src := &fakeSource{now: time.Now, kid: "k1"}
	keyed := NewCache(keyedSource{src}, nil)
	plain := NewCache(&fakeSource{now: time.Now, kid: "k1"}, nil)
	ctx := context.Background()
	before, _ := keyed.AccessToken(ctx, testSubject("u"), []string{"s1"})
	plainBefore, _ := plain.AccessToken(ctx, testSubject("u"), []string{"s1"})
	src.mu.Lock()
	src.kid = "k2"
	src.mu.Unlock()
	after, _ := keyed.AccessToken(ctx, testSubject("u"), []string{"s1"})
	if after.Value == before.Value || after.KeyID != "k2" {
		t.Errorf("after the rotation: %+v, before %+v", after, before)
	}
	if again, _ := plain.AccessToken(ctx, testSubject("u"), []string{"s1"}); again.Value != plainBefore.Value {
		t.Error("a source without keys had its token minted again")
	}
}

// TestCacheBounds: stale tokens are dropped as new ones are cached, and
// the caps on entries and bytes hold, dropping the oldest first.
func TestCacheBounds(t *testing.T) {
	now := time.Now()
	entryAt := func(i int, k kind, reuse time.Duration) *entry {
		key := key{podUID: fmt.Sprint("uid-", i), containerID: "c", kind: k, param: "p"}
		at := now.Add(time.Duration(i) * time.Millisecond)
		e := newEntry(key, Token{Value: strings.Repeat("t", 100), IssuedAt: at, Expiry: at.Add(time.Hour), KeyID: "kid", ID: "jti"})
		e.reuse = at.Add(reuse)
		return e
	}
	get := func(c *Cache, e *entry, at time.Time) bool { return c.get(&e.key, at, "kid") != nil }

	c := newCache(&fakeSource{}, nil, 3, MaxCachedTokenBytes)
	for i := range 5 {
		c.put(entryAt(i, accessToken, time.Hour), now)
	}
	if c.Len() != 3 {
		t.Fatalf("%d entries, cap 3", c.Len())
	}
	for i := range 5 {
		if cached := get(c, entryAt(i, accessToken, time.Hour), now.Add(time.Second)); cached != (i >= 2) {
			t.Errorf("entry %d cached: %v", i, cached)
		}
	}

	// Expired entries of either list go at the next put (entries only due
	// for a refresh stay: they are served while the source is unavailable).
	c = newCache(&fakeSource{}, nil, 100, MaxCachedTokenBytes)
	for i := range 10 {
		k := accessToken
		if i%2 == 1 {
			k = idToken
		}
		c.put(entryAt(i, k, time.Minute), now)
	}
	c.put(entryAt(100, idToken, time.Hour), now.Add(2*time.Minute))
	if c.Len() != 11 {
		t.Errorf("%d entries after the others were due for a refresh, want 11", c.Len())
	}
	late := entryAt(101, idToken, 3*time.Hour)
	late.tok.Expiry = now.Add(4 * time.Hour)
	c.put(late, now.Add(2*time.Hour))
	if c.Len() != 1 {
		t.Errorf("%d entries after the others expired, want 1", c.Len())
	}

	// The byte cap.
	one := entryAt(0, accessToken, time.Hour).size
	c = newCache(&fakeSource{}, nil, 100, 4*one)
	for i := range 10 {
		c.put(entryAt(i, idToken, time.Hour), now)
	}
	if c.Len() != 4 || c.bytes > 4*one {
		t.Errorf("%d entries, %d bytes; cap %d bytes", c.Len(), c.bytes, 4*one)
	}
}

// A source's RefreshAt sets the reuse window; past it, a source that is
// unavailable gets the unexpired token served, and a pod's tokens go with
// ForgetPod.
func TestCacheRefreshAtStaleOnUnavailableAndForgetPod(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clock := now
	src := &refreshingSource{fakeSource: fakeSource{now: func() time.Time { return clock }}}
	c := NewCache(src, nil)
	c.Now = func() time.Time { return clock }
	obs := &recordingObserver{}
	c.Observe = obs
	s := subject.Subject{PodUID: "uid-1", Namespace: "ns", Pod: "p"}
	first, err := c.AccessToken(context.Background(), s, []string{"scope"})
	if err != nil {
		t.Fatal(err)
	}
	clock = now.Add(47 * time.Minute) // before RefreshAt (48 min): reused
	if tok, _ := c.AccessToken(context.Background(), s, []string{"scope"}); tok.Value != first.Value {
		t.Fatalf("before RefreshAt: %s, want the cached %s", tok.Value, first.Value)
	}
	clock = now.Add(50 * time.Minute)
	src.mu.Lock()
	src.err = fmt.Errorf("api down: %w", subject.ErrUnavailable)
	src.mu.Unlock()
	if tok, err := c.AccessToken(context.Background(), s, []string{"scope"}); err != nil || tok.Value != first.Value {
		t.Fatalf("past RefreshAt with the source unavailable: %v, %v; want the unexpired %s", tok.Value, err, first.Value)
	}
	clock = now.Add(61 * time.Minute)
	if _, err := c.AccessToken(context.Background(), s, []string{"scope"}); !errors.Is(err, subject.ErrUnavailable) {
		t.Fatalf("past expiry with the source unavailable: %v, want ErrUnavailable", err)
	}
	src.mu.Lock()
	src.err = nil
	src.mu.Unlock()
	second, err := c.AccessToken(context.Background(), s, []string{"scope"})
	if err != nil || second.Value == first.Value {
		t.Fatalf("after the source returned: %v, %v", second.Value, err)
	}
	// What metrics hear: the mint, the reuse, the stale token served, the
	// failed mint past expiry, the mint after; four calls of the source.
	if got, want := fmt.Sprint(obs.results), "[miss hit stale miss miss]"; got != want || obs.mints != 4 {
		t.Errorf("observed %s and %d mints, want %s and 4", got, obs.mints, want)
	}
	c.ForgetPod("uid-1")
	if c.Len() != 0 {
		t.Fatalf("%d entries after ForgetPod", c.Len())
	}
}

// refreshingSource mints one-hour tokens due for a refresh at 80 %.
type refreshingSource struct{ fakeSource }

func (r *refreshingSource) AccessToken(ctx context.Context, s subject.Subject, scopes []string) (Token, error) {
	t, err := r.fakeSource.AccessToken(ctx, s, scopes)
	if err == nil {
		t.RefreshAt = t.IssuedAt.Add(48 * time.Minute)
	}
	return t, err
}

func (r *refreshingSource) IDToken(ctx context.Context, s subject.Subject, audience, format string, licenses bool) (Token, error) {
	t, err := r.fakeSource.IDToken(ctx, s, audience, format, licenses)
	if err == nil {
		t.RefreshAt = t.IssuedAt.Add(48 * time.Minute)
	}
	return t, err
}

// A source's RefreshAt does not keep an ID token past IDTokenReuse:
// clients take one from the metadata server as fresh.
func TestIDTokenReuseBoundsRefreshAt(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clock := now
	src := &refreshingSource{fakeSource: fakeSource{now: func() time.Time { return clock }}}
	c := NewCache(src, nil)
	c.Now = func() time.Time { return clock }
	s := subject.Subject{PodUID: "uid-1", Namespace: "ns", Pod: "p"}
	first, _ := c.IDToken(context.Background(), s, "aud", FormatStandard, false)
	clock = now.Add(IDTokenReuse + time.Second)
	if again, _ := c.IDToken(context.Background(), s, "aud", FormatStandard, false); again.Value == first.Value {
		t.Fatalf("ID token served %v after minting, past IDTokenReuse (%v)", IDTokenReuse+time.Second, IDTokenReuse)
	}
}

// A mint is detached from the request that started it: that client hanging
// up fails neither the mint nor the others waiting for it.
func TestMintSurvivesItsRequest(t *testing.T) {
	src := &fakeSource{now: time.Now, delay: 200 * time.Millisecond}
	c := NewCache(src, nil)
	s := subject.Subject{PodUID: "uid-1", Namespace: "ns", Pod: "p"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.AccessToken(ctx, s, []string{"scope"})
		done <- err
	}()
	for minting := false; !minting; { // until the first request is minting
		src.mu.Lock()
		minting = src.mints == 1
		src.mu.Unlock()
		runtime.Gosched()
	}
	cancel()
	if err := <-done; !errors.Is(err, subject.ErrUnavailable) {
		t.Fatalf("the hung-up request: %v, want ErrUnavailable", err)
	}
	tok, err := c.AccessToken(context.Background(), s, []string{"scope"})
	if err != nil || src.mints != 1 {
		t.Fatalf("after the first client hung up: %v, %v, %d mints; want the detached mint's token", tok.Value, err, src.mints)
	}
}

// sharedSource's tokens are an account's, not a pod's.
type sharedSource struct{ fakeSource }

func (*sharedSource) SharedAcrossPods() bool { return true }

// The pods of one account share its token: one mint for both; it goes
// with the last of them, and another account never sees it.
func TestSharedSourceTokensArePerAccount(t *testing.T) {
	src := &sharedSource{fakeSource{now: time.Now}}
	c := NewCache(src, nil)
	pod := func(uid, ksa string) subject.Subject {
		return subject.Subject{PodUID: uid, Pod: "p-" + uid, Namespace: "ns", ServiceAccount: ksa, Binding: store.Binding{ContainerID: "c-" + uid}}
	}
	a1, a2, b := pod("a1", "api"), pod("a2", "api"), pod("b", "web")
	scopes := []string{DefaultScopeForTest}
	t1, _ := c.AccessToken(context.Background(), a1, scopes)
	t2, _ := c.AccessToken(context.Background(), a2, scopes)
	t3, _ := c.AccessToken(context.Background(), b, scopes)
	if t1.Value != t2.Value || t3.Value == t1.Value || src.mints != 2 {
		t.Fatalf("tokens %s %s %s after %d mints; want the two api pods to share one, web its own", t1.Value, t2.Value, t3.Value, src.mints)
	}
	c.ForgetPod("a1")
	if tok, _ := c.AccessToken(context.Background(), a2, scopes); tok.Value != t1.Value {
		t.Fatalf("the account's token went with one of its two pods")
	}
	c.ForgetPod("a2")
	if c.Len() != 1 {
		t.Fatalf("%d entries after the account's last pod went, want web's alone", c.Len())
	}
}

const DefaultScopeForTest = "https://www.googleapis.com/auth/cloud-platform"
