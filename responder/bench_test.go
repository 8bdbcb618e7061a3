package responder

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metabind/metabind/responder/metrics"
	"github.com/metabind/metabind/store"
)

// discardWriter is a ResponseWriter that keeps nothing but its header map,
// cleared between requests, so a benchmark counts the handler's own
// allocations and not a recorder's.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *discardWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n += len(b)
	return len(b), nil
}

// WriteString is there as on net/http's own writer, which writes a string
// without copying it.
func (w *discardWriter) WriteString(s string) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n += len(s)
	return len(s), nil
}

func (w *discardWriter) reset() {
	clear(w.h)
	w.code, w.n = 0, 0
}

// benchHandler is the test handler with a rate limit no benchmark reaches,
// recording its metrics as the responder does.
func benchHandler(b *testing.B) *Responder {
	h, _ := newResponder(b, unlimited(testCfg(b)), testLookup(), nil, WithMetrics(metrics.New(prometheus.NewRegistry())))
	return h
}

// benchServe sends target from apiIP b.N times, as the server would hand
// it to the handler (one shallow copy of a parsed request per iteration,
// which the server's own request allocation stands for).
func benchServe(b *testing.B, h http.Handler, target string) {
	base := httptest.NewRequest("GET", target, nil)
	base.Header.Set("Metadata-Flavor", "Google")
	base.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(apiIP), 4321).String()
	base.Body = http.NoBody
	w := &discardWriter{h: make(http.Header)}
	serve := func() {
		r := new(http.Request)
		*r = *base
		w.reset()
		h.ServeHTTP(w, r)
		if w.code != http.StatusOK {
			b.Fatalf("%s: status %d", target, w.code)
		}
	}
	serve() // the first request mints
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		serve()
	}
}

const benchSA = "/computeMetadata/v1/instance/service-accounts/default"

// BenchmarkTokenCached is one access-token request of a pod whose token is
// in the cache.
func BenchmarkTokenCached(b *testing.B) {
	benchServe(b, benchHandler(b), benchSA+"/token")
}

// BenchmarkIdentityCached is one ID-token request of a pod whose token for
// that audience is in the cache.
func BenchmarkIdentityCached(b *testing.B) {
	benchServe(b, benchHandler(b), benchSA+"/identity?audience=https://aud.example")
}

// BenchmarkEmail is a plain metadata read, for comparison: no token.
func BenchmarkEmail(b *testing.B) {
	benchServe(b, benchHandler(b), benchSA+"/email")
}

// BenchmarkIdentityUncached mints a token on every request: each asks for
// a new audience. This is the cost of a cache miss.
func BenchmarkIdentityUncached(b *testing.B) {
	h := benchHandler(b)
	w := &discardWriter{h: make(http.Header)}
	remote := netip.AddrPortFrom(netip.MustParseAddr(apiIP), 4321).String()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		r := httptest.NewRequest("GET", benchSA+"/identity?audience=aud-"+strconv.Itoa(i), nil)
		r.Header.Set("Metadata-Flavor", "Google")
		r.RemoteAddr = remote
		w.reset()
		h.ServeHTTP(w, r)
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
}

// benchLookup measures store.View.Lookup with n bindings in a real store:
// the generation check (one load from the mapped counter) and the map lookup.
func benchLookup(b *testing.B, n int) {
	dir := b.TempDir()
	s, err := store.Open(dir, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	ips := make([]netip.Addr, n)
	err = s.Update(func(tx *store.Tx) error {
		for i := range n {
			ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			ips[i] = ip
			id := fmt.Sprintf("c%06d", i)
			if err := tx.Put(store.Binding{
				IP: ip, ContainerID: id, IfName: "eth0", HostInterface: "veth" + id,
				Namespace: "bench", Pod: "pod-" + id, PodUID: "uid-" + id, Created: time.Now(),
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.Fatal(err)
	}
	v := store.NewView(dir, 5*time.Second)
	defer v.Close()
	if got, err := v.Len(); err != nil || got != n {
		b.Fatalf("view holds %d bindings (%v), want %d", got, err, n)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, ok, err := v.Lookup(ips[(i*7919)%n]); !ok || err != nil {
			b.Fatalf("lookup: %v %v", ok, err)
		}
	}
}

func BenchmarkLookup10(b *testing.B)    { benchLookup(b, 10) }
func BenchmarkLookup10000(b *testing.B) { benchLookup(b, 10000) }
