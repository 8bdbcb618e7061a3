package server

import (
	"container/list"
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter map bounds. Pod IPs on one node number in the hundreds; the cap
// only matters if something floods the responder from many addresses.
const (
	// DefaultMaxCallers caps the callers tracked at once; past it the least
	// recently seen caller is forgotten (it then starts with a full bucket,
	// which only ever errs on the generous side).
	DefaultMaxCallers = 16384
	// CallerIdleTimeout is how long a caller's bucket is kept after its last
	// request (at least as long as the bucket takes to refill).
	CallerIdleTimeout = time.Minute
	// rateLimitWarnEvery paces the warning logged for a caller over its
	// limit.
	rateLimitWarnEvery = time.Minute
)

// callerLimits is a token bucket per caller IP, in an LRU list so that
// idle callers are dropped as new ones arrive: memory is bounded by
// maxCallers whatever the number of source addresses, with no sweeper
// goroutine.
type callerLimits struct {
	limit rate.Limit
	burst int
	idle  time.Duration
	max   int

	mu    sync.Mutex
	lru   *list.List // of *callerBucket, most recent first
	index map[netip.Addr]*list.Element
	// limited counts the buckets whose latest request was refused.
	limited int
}

type callerBucket struct {
	ip       netip.Addr
	lim      *rate.Limiter
	lastSeen time.Time

	refused    int // requests refused since the last warning
	lastWarned time.Time
	limited    bool // the latest request was refused
}

func newCallerLimits(perSecond float64, burst, maxCallers int) *callerLimits {
	idle := CallerIdleTimeout
	if fill := time.Duration(float64(burst) / perSecond * float64(time.Second)); fill > idle {
		idle = fill
	}
	return &callerLimits{
		limit: rate.Limit(perSecond),
		burst: burst,
		idle:  idle,
		max:   maxCallers,
		lru:   list.New(),
		index: make(map[netip.Addr]*list.Element),
	}
}

// rateDecision is the answer for one request.
type rateDecision struct {
	ok         bool
	retryAfter time.Duration // when !ok
	warn       bool          // when !ok: time to log a warning
	refused    int           // requests refused since the last warning
}

// allow takes one token from ip's bucket at now.
func (l *callerLimits) allow(ip netip.Addr, now time.Time) rateDecision {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evictIdle(now)
	var b *callerBucket
	if e, ok := l.index[ip]; ok {
		b = e.Value.(*callerBucket)
		l.lru.MoveToFront(e)
	} else {
		if l.lru.Len() >= l.max {
			l.remove(l.lru.Back())
		}
		b = &callerBucket{ip: ip, lim: rate.NewLimiter(l.limit, l.burst)}
		l.index[ip] = l.lru.PushFront(b)
	}
	b.lastSeen = now
	if b.lim.AllowN(now, 1) { // allocates nothing, unlike a reservation
		l.setLimited(b, false)
		return rateDecision{ok: true}
	}
	l.setLimited(b, true)
	// Refused: a reservation says how long until a token is free, and is
	// cancelled, so a refused request takes no token.
	r := b.lim.ReserveN(now, 1)
	d := r.DelayFrom(now) // InfDuration when the reservation failed
	r.CancelAt(now)
	b.refused++
	dec := rateDecision{retryAfter: d}
	if d == rate.InfDuration {
		dec.retryAfter = time.Second
	}
	if now.Sub(b.lastWarned) >= rateLimitWarnEvery {
		dec.warn, dec.refused = true, b.refused
		b.refused, b.lastWarned = 0, now
	}
	return dec
}

// evictIdle drops callers idle for longer than l.idle, oldest first: the
// list is in order of last use, so it stops at the first recent one.
func (l *callerLimits) evictIdle(now time.Time) {
	for e := l.lru.Back(); e != nil; e = l.lru.Back() {
		if now.Sub(e.Value.(*callerBucket).lastSeen) <= l.idle {
			return
		}
		l.remove(e)
	}
}

func (l *callerLimits) remove(e *list.Element) {
	b := e.Value.(*callerBucket)
	l.setLimited(b, false)
	delete(l.index, b.ip)
	l.lru.Remove(e)
}

// setLimited records whether b's latest request was refused.
func (l *callerLimits) setLimited(b *callerBucket, limited bool) {
	if b.limited == limited {
		return
	}
	b.limited = limited
	if limited {
		l.limited++
	} else {
		l.limited--
	}
}

// limitedCallers is the number of callers whose latest request was
// refused, once those idle at now are forgotten.
func (l *callerLimits) limitedCallers(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evictIdle(now)
	return l.limited
}

// len is the number of callers tracked.
func (l *callerLimits) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// retryAfterSeconds is the Retry-After value for d: whole seconds, at
// least 1.
func retryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		return 1
	}
	return s
}
