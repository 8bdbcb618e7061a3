package responder

import (
	"container/list"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Token cache bounds. A node runs a few hundred pods at most, each asking
// for a token or two and ID tokens for a few audiences; the caps only
// matter when a pod asks for endless audiences. Past either cap the oldest
// token is dropped, which costs its pod one mint on its next request.
const (
	MaxCachedTokens     = 65536
	MaxCachedTokenBytes = 16 << 20
)

// IDTokenReuse is how long after minting an ID token is served again from
// the cache. An ID token's expiry is inside the JWT only, and Google's Go
// clients do not read it: google.golang.org/api/idtoken takes a token
// fetched now to be valid for 55 minutes, cloud.google.com/go/auth for 60
// minutes and refreshes 225 s before that. An ID token served a minute
// after minting still outlives what either client assumes, minus its
// refresh margin. Access tokens come with expires_in, which every client
// honours, so they are served for half their lifetime.
const IDTokenReuse = time.Minute

// tokenKind is what a cached token is: the kind and, for ID tokens, the
// format, since format=full adds claims.
type tokenKind uint8

const (
	accessToken tokenKind = iota
	idToken
	idTokenFull
)

func (k tokenKind) audit() string {
	if k == accessToken {
		return "access"
	}
	return "id"
}

// tokenKey is whom a token was minted for and what it says. It names the
// pod by UID and container ID, not by IP: a new pod on a reused IP (or a
// pod recreated under the same name) never meets its predecessor's tokens.
type tokenKey struct {
	podUID      string
	containerID string
	namespace   string
	pod         string
	rule        int
	kind        tokenKind
	param       string // access: the scope claim (sorted, see scopeClaim); ID: the audience
}

// flightKey is k as a string for singleflight, every field length-prefixed
// so that no two keys collide whatever their fields hold.
func (k *tokenKey) flightKey() string {
	var b strings.Builder
	b.Grow(len(k.podUID) + len(k.containerID) + len(k.namespace) + len(k.pod) + len(k.param) + 40)
	for _, s := range []string{k.podUID, k.containerID, k.namespace, k.pod, strconv.Itoa(k.rule), strconv.Itoa(int(k.kind)), k.param} {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	return b.String()
}

// cachedToken is one minted token and its response, ready to write.
type cachedToken struct {
	key     tokenKey
	kid     string // signing key; a rotation retires the entry
	jti     string
	issued  time.Time // iat
	reuse   time.Time // served from the cache until then
	expires time.Time // exp
	size    int       // bytes counted against MaxCachedTokenBytes
	elem    *list.Element

	// body is the response body: the ID token, or for an access token the
	// JSON up to expires_in, whose value is appended per second (tail).
	body []byte
	tail atomic.Pointer[accessTail]
}

// accessTail is the end of an access token response for one second.
type accessTail struct {
	second int64
	data   []byte
}

const (
	accessBodyStart = `{"access_token":"`
	accessBodyMid   = `","expires_in":`
	accessBodyEnd   = `,"token_type":"Bearer"}` + "\n"
)

func newCachedToken(key tokenKey, tok, kid, jti string, issued, expires, reuse time.Time) *cachedToken {
	t := &cachedToken{key: key, kid: kid, jti: jti, issued: issued, expires: expires, reuse: reuse}
	if key.kind == accessToken {
		// A JWT is base64url and dots: nothing to escape in JSON.
		t.body = make([]byte, 0, len(accessBodyStart)+len(tok)+len(accessBodyMid))
		t.body = append(append(append(t.body, accessBodyStart...), tok...), accessBodyMid...)
	} else {
		t.body = []byte(tok)
	}
	t.size = len(t.body) + len(key.podUID) + len(key.containerID) + len(key.namespace) + len(key.pod) + len(key.param) + len(kid) + len(jti) + 256
	return t
}

// expiresIn is the token's remaining life in whole seconds at now, rounded
// down, at least 1.
func (t *cachedToken) expiresIn(now time.Time) int64 {
	n := t.expires.Unix() - now.Unix() - 1 // exp is a whole second; now is not
	return max(n, 1)
}

// accessTail returns `<expires_in>,"token_type":"Bearer"}` for now; it is
// made once per second per token, so serving allocates nothing.
func (t *cachedToken) accessTail(now time.Time) []byte {
	sec := now.Unix()
	if tail := t.tail.Load(); tail != nil && tail.second == sec {
		return tail.data
	}
	data := strconv.AppendInt(make([]byte, 0, 24+len(accessBodyEnd)), t.expiresIn(now), 10)
	data = append(data, accessBodyEnd...)
	t.tail.Store(&accessTail{second: sec, data: data})
	return data
}

// usable reports whether t may be served at now when kid signs.
func (t *cachedToken) usable(now time.Time, kid string) bool {
	return t.kid == kid && now.Before(t.reuse) && !now.Before(t.issued)
}

// tokenCache holds minted tokens by tokenKey. Reads take a shared lock;
// a miss mints once per key however many requests wait for it.
type tokenCache struct {
	maxEntries int
	maxBytes   int
	flight     singleflight.Group

	mu      sync.RWMutex
	entries map[tokenKey]*cachedToken
	// One list per kind of reuse window, each in minting order, so the
	// front of each is the first to go stale.
	access, id list.List
	bytes      int
}

func newTokenCache(maxEntries, maxBytes int) *tokenCache {
	return &tokenCache{maxEntries: maxEntries, maxBytes: maxBytes, entries: make(map[tokenKey]*cachedToken)}
}

// get returns the token cached for k if it may be served at now.
func (c *tokenCache) get(k *tokenKey, now time.Time, kid string) *cachedToken {
	c.mu.RLock()
	t := c.entries[*k]
	c.mu.RUnlock()
	if t == nil || !t.usable(now, kid) {
		return nil
	}
	return t
}

// getOrMint returns the token cached for k, or the one mint returns, which
// it caches. Concurrent callers with the same key share one mint and its
// error; minted reports whether this caller's mint ran.
func (c *tokenCache) getOrMint(k *tokenKey, now time.Time, kid string, mint func() (*cachedToken, error)) (t *cachedToken, minted bool, err error) {
	if t := c.get(k, now, kid); t != nil {
		return t, false, nil
	}
	ran := false
	v, err, _ := c.flight.Do(k.flightKey(), func() (any, error) {
		// A mint for this key may have finished since the get above.
		if t := c.get(k, now, kid); t != nil {
			return t, nil
		}
		ran = true
		t, err := mint()
		if err != nil {
			return nil, err
		}
		c.put(t, now)
		return t, nil
	})
	if err != nil {
		return nil, false, err
	}
	return v.(*cachedToken), ran, nil
}

// put adds t, replacing the entry of its key, then drops stale entries and,
// past the caps, the oldest.
func (c *tokenCache) put(t *cachedToken, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.entries[t.key]; old != nil {
		c.removeLocked(old)
	}
	l := &c.access
	if t.key.kind != accessToken {
		l = &c.id
	}
	t.elem = l.PushBack(t)
	c.entries[t.key] = t
	c.bytes += t.size
	for _, l := range []*list.List{&c.access, &c.id} {
		for e := l.Front(); e != nil && !now.Before(e.Value.(*cachedToken).reuse); e = l.Front() {
			c.removeLocked(e.Value.(*cachedToken))
		}
	}
	for len(c.entries) > 0 && (len(c.entries) > c.maxEntries || c.bytes > c.maxBytes) {
		c.removeLocked(c.oldestLocked())
	}
}

// oldestLocked is the entry minted first.
func (c *tokenCache) oldestLocked() *cachedToken {
	a, i := c.access.Front(), c.id.Front()
	switch {
	case a == nil:
		return i.Value.(*cachedToken)
	case i == nil:
		return a.Value.(*cachedToken)
	}
	at, it := a.Value.(*cachedToken), i.Value.(*cachedToken)
	if it.issued.Before(at.issued) {
		return it
	}
	return at
}

func (c *tokenCache) removeLocked(t *cachedToken) {
	if t.key.kind == accessToken {
		c.access.Remove(t.elem)
	} else {
		c.id.Remove(t.elem)
	}
	delete(c.entries, t.key)
	c.bytes -= t.size
}

// len is the number of tokens cached.
func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
