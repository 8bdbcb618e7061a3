package server

import (
	"net/netip"
	"testing"
	"time"
)

func TestCallerLimits(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	type step struct {
		at    time.Duration // after t0
		ip    netip.Addr
		n     int // requests at that instant
		allow int // how many of them pass
		retry time.Duration
	}
	for _, tc := range []struct {
		name      string
		perSecond float64
		burst     int
		steps     []step
	}{
		{"burst then refused", 10, 5, []step{{0, a, 7, 5, 100 * time.Millisecond}}},
		{"refill at the rate", 10, 5, []step{
			{0, a, 5, 5, 0},
			{0, a, 1, 0, 100 * time.Millisecond},
			{100 * time.Millisecond, a, 2, 1, 100 * time.Millisecond},
			{time.Second, a, 10, 5, 100 * time.Millisecond}, // refilled to the burst, no more
		}},
		{"refusals take no token", 1, 1, []step{
			{0, a, 1, 1, 0},
			{500 * time.Millisecond, a, 100, 0, 500 * time.Millisecond},
			{time.Second, a, 1, 1, 0},
		}},
		{"callers are independent", 10, 2, []step{
			{0, a, 3, 2, 100 * time.Millisecond},
			{0, b, 3, 2, 100 * time.Millisecond},
		}},
		{"slow rate retries after seconds", 0.25, 1, []step{{0, a, 2, 1, 4 * time.Second}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newCallerLimits(tc.perSecond, tc.burst, 100)
			for i, s := range tc.steps {
				allowed := 0
				var retry time.Duration
				for range s.n {
					d := l.allow(s.ip, t0.Add(s.at))
					if d.ok {
						allowed++
					} else {
						retry = d.retryAfter
					}
				}
				if allowed != s.allow || retry != s.retry {
					t.Errorf("step %d: %d of %d allowed, retry after %v; want %d, %v", i, allowed, s.n, retry, s.allow, s.retry)
				}
			}
		})
	}
}

func TestCallerLimitsAreBounded(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }

	// A flood of source addresses never holds more than the cap.
	l := newCallerLimits(50, 100, 1000)
	for i := range 50000 {
		l.allow(ip(i), t0)
	}
	if n := l.len(); n != 1000 {
		t.Errorf("after 50000 callers: %d tracked, want the cap 1000", n)
	}

	// Callers idle for more than a minute are dropped as others come.
	l = newCallerLimits(50, 100, 1000)
	for i := range 500 {
		l.allow(ip(i), t0)
	}
	l.allow(ip(1), t0.Add(30*time.Second))
	l.allow(ip(9999), t0.Add(CallerIdleTimeout+time.Second))
	if n := l.len(); n != 2 {
		t.Errorf("after the idle timeout: %d tracked, want 2 (the caller seen 30 s ago and the new one)", n)
	}

	// Forgetting a caller never makes it stricter: a dropped bucket had
	// refilled anyway (the idle timeout is at least the refill time).
	l = newCallerLimits(0.01, 10, 1000)
	if l.idle < 1000*time.Second {
		t.Errorf("idle timeout %v is shorter than the refill time 1000 s", l.idle)
	}
}
