package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// warmup is sent before every measured round and not counted: it opens
// the connections and lets a fresh responder mint its first tokens.
const warmup = 300 * time.Millisecond

// workload is what the clients send: each client cycles through paths; with
// unique, each request's path gets a number of its own appended (a new
// audience per request, so every one is a mint).
type workload struct {
	paths  []string
	unique bool
}

// result is one measured round.
type result struct {
	rps      float64
	p50, p99 time.Duration
	requests int
}

// load sends w to the server at base from clients concurrent keep-alive
// clients for d (after the warm-up). Client c sends from pods c, c+clients,
// ... in turn, one connection each, or from pod c mod len(pods) when there
// are fewer pods than clients. Any answer but 200 fails the round.
func load(base string, w workload, pods []pod, clients int, d time.Duration) (result, error) {
	type clientState struct {
		transports []*http.Transport
		latencies  []time.Duration
		err        error
		errors     int
	}
	cs := make([]*clientState, clients)
	for c := range cs {
		s := &clientState{latencies: make([]time.Duration, 0, 1<<14)}
		var own []pod
		if len(pods) >= clients {
			for p := c; p < len(pods); p += clients {
				own = append(own, pods[p])
			}
		} else {
			own = []pod{pods[c%len(pods)]}
		}
		for _, p := range own {
			s.transports = append(s.transports, &http.Transport{
				DialContext:         p.dialContext,
				MaxIdleConnsPerHost: 1,
				DisableCompression:  true,
			})
		}
		cs[c] = s
	}

	var counter int64
	var mu sync.Mutex
	measureFrom := time.Now().Add(warmup)
	end := measureFrom.Add(d)
	var wg sync.WaitGroup
	for c, s := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			reqs := make([]*http.Request, len(w.paths))
			for i, p := range w.paths {
				reqs[i], _ = http.NewRequestWithContext(ctx, http.MethodGet, base+p, nil)
				reqs[i].Header.Set("Metadata-Flavor", "Google")
			}
			clientsFor := make([]*http.Client, len(s.transports))
			for i, t := range s.transports {
				clientsFor[i] = &http.Client{Transport: t, Timeout: 10 * time.Second}
			}
			for k := c; ; k++ {
				req := reqs[k%len(reqs)]
				if w.unique {
					mu.Lock()
					counter++
					n := counter
					mu.Unlock()
					req, _ = http.NewRequestWithContext(ctx, http.MethodGet, base+w.paths[k%len(w.paths)]+strconv.FormatInt(n, 10), nil)
					req.Header.Set("Metadata-Flavor", "Google")
				}
				start := time.Now()
				if !start.Before(end) {
					return
				}
				resp, err := clientsFor[k%len(clientsFor)].Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s: status %d", req.URL.Path, resp.StatusCode)
					}
				}
				done := time.Now()
				if err != nil {
					s.errors++
					if s.err == nil {
						s.err = err
					}
					continue
				}
				if !start.Before(measureFrom) && done.Before(end) {
					s.latencies = append(s.latencies, done.Sub(start))
				}
			}
		}()
	}
	wg.Wait()
	var all []time.Duration
	var errs []error
	failed := 0
	for _, s := range cs {
		for _, t := range s.transports {
			t.CloseIdleConnections()
		}
		all = append(all, s.latencies...)
		failed += s.errors
		if s.err != nil {
			errs = append(errs, s.err)
		}
	}
	if failed > 0 {
		return result{}, fmt.Errorf("%d requests failed, e.g.: %w", failed, errors.Join(errs[:min(len(errs), 3)]...))
	}
	if len(all) == 0 {
		return result{}, errors.New("no request completed")
	}
	slices.Sort(all)
	return result{
		rps:      float64(len(all)) / d.Seconds(),
		p50:      all[(len(all)-1)*50/100],
		p99:      all[(len(all)-1)*99/100],
		requests: len(all),
	}, nil
}
