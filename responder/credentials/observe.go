package credentials

import "time"

// CacheResult is how the cache answered one request.
type CacheResult uint8

const (
	// CacheHit: a token in the cache, still fresh.
	CacheHit CacheResult = iota
	// CacheMiss: none fresh; the request minted or waited for a mint,
	// whether or not that succeeded.
	CacheMiss
	// CacheStale: the mint failed as the source is unavailable, and a
	// token past its refresh but unexpired was served instead.
	CacheStale
)

func (r CacheResult) String() string {
	switch r {
	case CacheHit:
		return "hit"
	case CacheMiss:
		return "miss"
	case CacheStale:
		return "stale"
	}
	return "unknown"
}

// CacheObserver hears of what a cache does, for metrics. Its methods must
// be cheap and never block: Request runs on every request.
type CacheObserver interface {
	// Request is one request for a token answered as result.
	Request(result CacheResult)
	// Minted is one call of the source (a mint, successful or not), which
	// took d.
	Minted(d time.Duration)
}

// observe tells the observer, if any, of one request answered as r.
func (c *Cache) observe(r CacheResult) {
	if c.Observe != nil {
		c.Observe.Request(r)
	}
}
