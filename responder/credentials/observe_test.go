package credentials

import (
	"sync"
	"time"
)

// recordingObserver keeps what a cache tells it.
type recordingObserver struct {
	mu      sync.Mutex
	results []CacheResult
	mints   int
}

func (o *recordingObserver) Request(r CacheResult) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.results = append(o.results, r)
}

func (o *recordingObserver) Minted(time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.mints++
}
