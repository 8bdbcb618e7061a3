package integration

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The responder is killed (SIGKILL) and restarted while pods hammer it: no
// request is ever answered with another pod's identity, the bindings are
// intact, it serves again within a second, and a pod created while it was
// down is served as soon as it is back.
func TestResponderRestartUnderLoad(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.24.0/24"})
	config := responderConfig + "limits: {requestsPerSecond: 10000, burst: 100000}\n"
	responder := n.startResponder(t, config)
	pods := []*pod{n.addPod(t, "payments", "api-1"), n.addPod(t, "web", "site-1")}

	var (
		stop   = make(chan struct{})
		wg     sync.WaitGroup
		wrong  atomic.Int64
		mu     sync.Mutex
		served []time.Time // when each good answer came
	)
	for _, p := range pods {
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func(p *pod) {
				defer wg.Done()
				want := identityOf[p.namespace].email
				for {
					select {
					case <-stop:
						return
					default:
					}
					code, body, err := p.metadataGet(emailPath)
					if err != nil || code != 200 {
						continue // down: fail closed
					}
					if body != want {
						wrong.Add(1)
						t.Errorf("%s was answered %q", p.name, body)
						continue
					}
					mu.Lock()
					served = append(served, time.Now())
					mu.Unlock()
				}
			}(p)
		}
	}
	// waitServed polls until n answers came after `after`, and returns how
	// long after it the first one came.
	waitServed := func(after time.Time, n int) time.Duration {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			var first time.Time
			count := 0
			for _, at := range served {
				if at.After(after) {
					count++
					if first.IsZero() || at.Before(first) {
						first = at
					}
				}
			}
			mu.Unlock()
			if count >= n {
				return first.Sub(after)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("fewer than %d answers within 10 s", n)
		return 0
	}
	waitServed(time.Time{}, 200) // under load before the first kill

	var worst time.Duration
	var late *pod
	for round := 0; round < 3; round++ {
		responder.Process.Kill()
		responder.Wait()
		if round == 2 {
			late = n.addPod(t, "web", "site-late") // ADD while the responder is down
		}
		restarted := time.Now()
		responder = n.startResponder(t, config)
		if d := waitServed(restarted, 200); d > worst {
			worst = d
		}
	}
	if code, body, err := late.metadataGet(emailPath); err != nil || body != identityOf["web"].email {
		t.Errorf("pod created while the responder was down: %d %q %v", code, body, err)
	}
	close(stop)
	wg.Wait()
	if worst > time.Second {
		t.Errorf("serving again took %v after a restart, want within 1 s", worst)
	}
	t.Logf("responder restarts: 3 kill -9 under load, %d requests served, %d wrong identities, restart-to-ready at most %v",
		len(served), wrong.Load(), worst.Round(time.Millisecond))
}
