package credentials

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/metabind/metabind/responder/subject"
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

// kind is what a cached token is: the kind and, for ID tokens, the format,
// since format=full adds claims.
type kind uint8

const (
	accessToken kind = iota
	idToken
	idTokenFull
)

// audit is the kind as the audit line names it.
func (k kind) audit() string {
	if k == accessToken {
		return "access"
	}
	return "id"
}

// key is whom a token was minted for and what it says. It names the pod
// by UID and container ID, not by IP: a new pod on a reused IP (or a pod
// recreated under the same name) never meets its predecessor's tokens. The
// identity is everything of the subject a source may put in a token.
type key struct {
	podUID, containerID, namespace, pod string
	serviceAccount, email, emailClaim   string
	annotations                         string // length-prefixed, sorted by name
	kind                                kind
	licenses                            bool   // ID tokens, format=full
	param                               string // access: the scopes, space-separated; ID: the audience
}

// keyFor is newKey as this cache keys: without the pod for a shared
// source (the account's token serves all its pods).
func (c *Cache) keyFor(s *subject.Subject, k kind, param string) key {
	key := newKey(s, k, param)
	if c.shared {
		key.podUID, key.containerID, key.pod = "", "", ""
	}
	return key
}

func newKey(s *subject.Subject, k kind, param string) key {
	return key{
		podUID:         s.PodUID,
		containerID:    s.Binding.ContainerID,
		namespace:      s.Namespace,
		pod:            s.Pod,
		serviceAccount: s.ServiceAccount,
		email:          s.Email,
		emailClaim:     s.EmailClaim,
		annotations:    annotationsKey(s.Annotations),
		kind:           k,
		param:          param,
	}
}

// annotationsKey is a map's entries as one string, sorted and
// length-prefixed so that no two maps share it; "" for none.
func annotationsKey(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		appendField(&b, k)
		appendField(&b, m[k])
	}
	return b.String()
}

// appendField writes s length-prefixed.
func appendField(b *strings.Builder, s string) {
	b.WriteString(strconv.Itoa(len(s)))
	b.WriteByte(':')
	b.WriteString(s)
}

// flightKey is k as a string for singleflight, every field length-prefixed
// so that no two keys collide whatever their fields hold.
func (k *key) flightKey() string {
	var b strings.Builder
	for _, s := range []string{k.podUID, k.containerID, k.namespace, k.pod, k.serviceAccount, k.email, k.emailClaim,
		k.annotations, strconv.Itoa(int(k.kind)), strconv.FormatBool(k.licenses), k.param} {
		appendField(&b, s)
	}
	return b.String()
}

// size is what k adds to an entry's bytes.
func (k *key) size() int {
	return len(k.podUID) + len(k.containerID) + len(k.namespace) + len(k.pod) + len(k.serviceAccount) +
		len(k.email) + len(k.emailClaim) + len(k.annotations) + len(k.param)
}

// entry is one minted token.
type entry struct {
	key   key
	tok   Token
	reuse time.Time // served from the cache until then
	size  int       // bytes counted against MaxCachedTokenBytes
	elem  *list.Element
	// users are the pods (UIDs) a shared entry was served to; it goes with
	// the last of them (see ForgetPod). Guarded by the cache's mu.
	users map[string]struct{}
}

// Cache is the one token cache, in front of any Source: a request is
// answered from it while its token may be reused (access tokens while more
// than half their life remains, ID tokens for IDTokenReuse), never past
// expiry nor, from a KeyedSource, after a key rotation; a miss mints once
// however many requests wait for it, and writes the audit line. Reads take
// a shared lock.
type Cache struct {
	// Now is the cache's clock; tests replace it before first use.
	Now func() time.Time
	// Observe, when not nil, hears of every request and every call of the
	// source (metrics); set it before first use.
	Observe CacheObserver

	src    Source
	keyed  KeyedSource // src, if it is one
	shared bool        // src is a SharedSource that shares
	log    *slog.Logger

	maxEntries int
	maxBytes   int
	flight     singleflight.Group

	mu      sync.RWMutex
	entries map[key]*entry
	// One list per kind of reuse window, each in minting order, so the
	// front of each is the first to go stale.
	access, id list.List
	bytes      int
}

var _ Source = (*Cache)(nil)

// NewCache caches the tokens of src. Its log gets one "token issued" line
// per token minted (at info) and one line per token served from the cache
// (at debug). A nil log discards.
func NewCache(src Source, log *slog.Logger) *Cache {
	return newCache(src, log, MaxCachedTokens, MaxCachedTokenBytes)
}

func newCache(src Source, log *slog.Logger, maxEntries, maxBytes int) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keyed, _ := src.(KeyedSource)
	sh, _ := src.(SharedSource)
	return &Cache{Now: time.Now, src: src, keyed: keyed, shared: sh != nil && sh.SharedAcrossPods(), log: log,
		maxEntries: maxEntries, maxBytes: maxBytes, entries: make(map[key]*entry)}
}

// AccessToken returns the cached access token of s for scopes, or mints
// one.
func (c *Cache) AccessToken(ctx context.Context, s subject.Subject, scopes []string) (Token, error) {
	k := c.keyFor(&s, accessToken, scopeParam(scopes))
	now, kid := c.Now(), c.currentKeyID()
	if e := c.get(&k, now, kid); e != nil {
		c.use(e, &s)
		c.logHit(ctx, &s, e, now)
		c.observe(CacheHit)
		return e.tok, nil
	}
	return c.mintAccess(ctx, k, s, scopes, now, kid)
}

// IDToken returns the cached ID token of s for audience and format, or
// mints one. licenses counts for format=full only.
func (c *Cache) IDToken(ctx context.Context, s subject.Subject, audience, format string, licenses bool) (Token, error) {
	kd := idToken
	if format == FormatFull {
		kd = idTokenFull
	} else {
		licenses = false
	}
	k := c.keyFor(&s, kd, audience)
	k.licenses = licenses
	now, kid := c.Now(), c.currentKeyID()
	if e := c.get(&k, now, kid); e != nil {
		c.use(e, &s)
		c.logHit(ctx, &s, e, now)
		c.observe(CacheHit)
		return e.tok, nil
	}
	return c.mintID(ctx, k, s, audience, format, licenses, now, kid)
}

// mintAccess and mintID are the misses, apart so that the hits copy
// nothing to the heap.
func (c *Cache) mintAccess(ctx context.Context, k key, s subject.Subject, scopes []string, now time.Time, kid string) (Token, error) {
	return c.getOrMint(ctx, &k, &s, now, kid, func(ctx context.Context) (Token, error) { return c.src.AccessToken(ctx, s, scopes) })
}

func (c *Cache) mintID(ctx context.Context, k key, s subject.Subject, audience, format string, licenses bool, now time.Time, kid string) (Token, error) {
	return c.getOrMint(ctx, &k, &s, now, kid, func(ctx context.Context) (Token, error) {
		return c.src.IDToken(ctx, s, audience, format, licenses)
	})
}

// scopeParam is the cache key's part for a set of scopes.
func scopeParam(scopes []string) string {
	if len(scopes) == 1 {
		return scopes[0]
	}
	return strings.Join(scopes, " ")
}

// currentKeyID is the key a keyed source signs with now; "" for another.
func (c *Cache) currentKeyID() string {
	if c.keyed == nil {
		return ""
	}
	return c.keyed.CurrentKeyID()
}

// get returns the entry cached for k if it may be served at now when kid
// signs.
func (c *Cache) get(k *key, now time.Time, kid string) *entry {
	c.mu.RLock()
	e := c.entries[*k]
	c.mu.RUnlock()
	if e == nil || c.keyed != nil && e.tok.KeyID != kid || !now.Before(e.reuse) || now.Before(e.tok.IssuedAt) {
		return nil
	}
	return e
}

// unexpired returns the entry of k if its token has not expired at now,
// whether or not it is due for a refresh.
func (c *Cache) unexpired(k *key, now time.Time, kid string) *entry {
	c.mu.RLock()
	e := c.entries[*k]
	c.mu.RUnlock()
	if e == nil || c.keyed != nil && e.tok.KeyID != kid || !now.Before(e.tok.Expiry) || now.Before(e.tok.IssuedAt) {
		return nil
	}
	return e
}

// ForgetPod drops every token of the pod with uid: its binding or its API
// object is gone, and a pod-bound token is only ever served to its pod.
func (c *Cache) ForgetPod(uid string) {
	if uid == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if c.shared {
			if _, ok := e.users[uid]; !ok {
				continue // not this pod's (or minted a moment ago, not served yet)
			}
			delete(e.users, uid)
			if len(e.users) == 0 {
				c.removeLocked(e)
			}
		} else if k.podUID == uid {
			c.removeLocked(e)
		}
	}
}

// use records that the pod of s was served e (shared entries only).
func (c *Cache) use(e *entry, s *subject.Subject) {
	if !c.shared || s.PodUID == "" {
		return
	}
	c.mu.RLock()
	_, ok := e.users[s.PodUID]
	c.mu.RUnlock()
	if ok {
		return
	}
	c.mu.Lock()
	if e.users == nil {
		e.users = map[string]struct{}{}
	}
	e.users[s.PodUID] = struct{}{}
	c.mu.Unlock()
}

// MintWait bounds how long a request waits for a mint: under the HTTP
// server's write timeout, so a source that hangs (a blackholed API) is a
// 503 the client retries, not a dropped connection. The mint itself goes
// on, detached from the request, and fills the cache.
const MintWait = 8 * time.Second

// mintTimeout bounds a detached mint.
const mintTimeout = 30 * time.Second

// getOrMint returns the token cached for k, or the one mint returns, which
// it caches and audits. Concurrent callers with the same key share one
// mint and its error, except in a shared cache a refusal that is about the
// first caller's pod (its API object gone, say): the others try their own.
// The mint runs detached from the request that started it: one client
// hanging up must not fail the others waiting.
func (c *Cache) getOrMint(ctx context.Context, k *key, s *subject.Subject, now time.Time, kid string, mint func(context.Context) (Token, error)) (Token, error) {
	t, ran, stale, err := c.mintShared(ctx, k, s, now, kid, mint)
	var refused *subject.Refused
	if err != nil && c.shared && !ran && errors.As(err, &refused) {
		t, _, stale, err = c.mintShared(ctx, k, s, now, kid, mint)
	}
	if stale {
		c.observe(CacheStale)
	} else {
		c.observe(CacheMiss)
	}
	return t, err
}

// staleEntry is what a mint that failed hands its waiters when it served a
// token past its refresh instead.
type staleEntry struct{ *entry }

// mintShared mints through the key's one flight; stale tells that the token
// is one past its refresh, served as the source is unavailable.
func (c *Cache) mintShared(ctx context.Context, k *key, s *subject.Subject, now time.Time, kid string, mint func(context.Context) (Token, error)) (
	tok Token, ran, stale bool, err error) {
	ch := c.flight.DoChan(k.flightKey(), func() (any, error) {
		// A mint for this key may have finished since the caller's get.
		if e := c.get(k, now, kid); e != nil {
			return e, nil
		}
		ran = true
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mintTimeout)
		defer cancel()
		start := time.Now()
		t, err := mint(mctx)
		if c.Observe != nil {
			c.Observe.Minted(time.Since(start))
		}
		if err != nil {
			// The source cannot mint now (its API is out of reach): a
			// token it minted before is still good until it expires.
			if old := c.unexpired(k, now, kid); old != nil && errors.Is(err, subject.ErrUnavailable) {
				c.log.LogAttrs(ctx, slog.LevelWarn, "serving a cached token past its refresh: the source is unavailable",
					slog.String("podUID", s.PodUID), slog.String("jti", old.tok.ID), slog.Time("expiry", old.tok.Expiry), slog.String("error", err.Error()))
				return staleEntry{old}, nil
			}
			return nil, err
		}
		if t.IssuedAt.IsZero() {
			t.IssuedAt = now
		}
		c.audit(ctx, s, k.kind, &t)
		e := newEntry(*k, t)
		c.put(e, now)
		return e, nil
	})
	wait := time.NewTimer(MintWait)
	defer wait.Stop()
	var r singleflight.Result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return Token{}, false, false, fmt.Errorf("%w: %w", subject.ErrUnavailable, ctx.Err())
	case <-wait.C:
		return Token{}, false, false, fmt.Errorf("%w: no token within %v", subject.ErrUnavailable, MintWait)
	}
	if r.Err != nil {
		return Token{}, ran, false, r.Err
	}
	e, ok := r.Val.(*entry)
	if !ok {
		e, stale = r.Val.(staleEntry).entry, true
	}
	c.use(e, s)
	if !ran {
		c.logHit(ctx, s, e, now)
	}
	return e.tok, ran, stale, nil
}

func newEntry(k key, t Token) *entry {
	// Access tokens: while more than half their life remains. ID tokens:
	// see IDTokenReuse.
	reuse := t.IssuedAt.Add(t.Expiry.Sub(t.IssuedAt) / 2)
	if idReuse := t.IssuedAt.Add(IDTokenReuse); k.kind != accessToken && idReuse.Before(reuse) {
		reuse = idReuse
	}
	if !t.RefreshAt.IsZero() && t.RefreshAt.Before(t.Expiry) {
		reuse = t.RefreshAt
		// Clients take an ID token from the metadata server as fresh
		// (see IDTokenReuse), whatever its source.
		if idReuse := t.IssuedAt.Add(IDTokenReuse); k.kind != accessToken && idReuse.Before(reuse) {
			reuse = idReuse
		}
	}
	size := len(t.Value) + k.size() + len(t.KeyID) + len(t.ID) + 256
	for _, a := range t.Audience {
		size += len(a)
	}
	return &entry{key: k, tok: t, reuse: reuse, size: size}
}

// audit logs one "token issued" line per token: who got it (caller IP, pod,
// identity), what kind, for whom (audience), its ID, expiry and signing
// key. Never the token: the jti finds it in a relying party's logs.
func (c *Cache) audit(ctx context.Context, s *subject.Subject, k kind, t *Token) {
	c.log.LogAttrs(ctx, slog.LevelInfo, "token issued",
		slog.String("caller", s.Binding.IP.String()),
		slog.String("namespace", s.Namespace),
		slog.String("pod", s.Pod),
		slog.String("podUID", s.PodUID),
		slog.String("serviceAccount", s.ServiceAccount),
		slog.String("email", s.Email),
		slog.String("kind", k.audit()),
		slog.String("audience", strings.Join(t.Audience, " ")),
		slog.String("jti", t.ID),
		slog.Time("expiry", t.Expiry),
		slog.String("kid", t.KeyID),
	)
}

func (c *Cache) logHit(ctx context.Context, s *subject.Subject, e *entry, now time.Time) {
	if !c.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "token served from cache",
		slog.String("caller", s.Binding.IP.String()),
		slog.String("podUID", s.PodUID),
		slog.String("kind", e.key.kind.audit()),
		slog.String("jti", e.tok.ID),
		slog.Int64("expiresIn", e.tok.ExpiresIn(now)),
	)
}

// put adds e, replacing the entry of its key, then drops stale entries and,
// past the caps, the oldest.
func (c *Cache) put(e *entry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.entries[e.key]; old != nil {
		c.removeLocked(old)
	}
	l := &c.access
	if e.key.kind != accessToken {
		l = &c.id
	}
	e.elem = l.PushBack(e)
	c.entries[e.key] = e
	c.bytes += e.size
	for _, l := range []*list.List{&c.access, &c.id} {
		// Kept until they expire, not only until they are due for a
		// refresh: one may be served while its source is unavailable.
		for f := l.Front(); f != nil && !now.Before(f.Value.(*entry).tok.Expiry); f = l.Front() {
			c.removeLocked(f.Value.(*entry))
		}
	}
	for len(c.entries) > 0 && (len(c.entries) > c.maxEntries || c.bytes > c.maxBytes) {
		c.removeLocked(c.oldestLocked())
	}
}

// oldestLocked is the entry minted first.
func (c *Cache) oldestLocked() *entry {
	a, i := c.access.Front(), c.id.Front()
	switch {
	case a == nil:
		return i.Value.(*entry)
	case i == nil:
		return a.Value.(*entry)
	}
	at, it := a.Value.(*entry), i.Value.(*entry)
	if it.tok.IssuedAt.Before(at.tok.IssuedAt) {
		return it
	}
	return at
}

func (c *Cache) removeLocked(e *entry) {
	if e.key.kind == accessToken {
		c.access.Remove(e.elem)
	} else {
		c.id.Remove(e.elem)
	}
	delete(c.entries, e.key)
	c.bytes -= e.size
}

// Len is the number of tokens cached.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
