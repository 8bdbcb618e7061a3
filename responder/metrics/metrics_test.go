package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/metabind/metabind/reconcile"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/store"
)

// Every exchange error series exists from the start, at 0, so a rate()
// over it needs no first error; a call counts in its upstream's histogram
// and, when it failed, in its reason's counter.
func TestExchange(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	if n := testutil.CollectAndCount(reg, "metabind_exchange_errors_total"); n != int(upstreams)*(int(reasons)-1) {
		t.Errorf("%d exchange error series, want %d", n, int(upstreams)*(int(reasons)-1))
	}
	m.Exchange(GoogleSTS, 20*time.Millisecond, Success)
	m.Exchange(GoogleIAM, time.Second, Denied)
	m.Exchange(AWSSTS, 10*time.Second, Timeout)
	if got := testutil.ToFloat64(m.exchangeErrors[GoogleIAM][Denied]); got != 1 {
		t.Errorf("google_iam denied: %v", got)
	}
	if got := testutil.ToFloat64(m.exchangeErrors[AWSSTS][Timeout]); got != 1 {
		t.Errorf("aws_sts timeout: %v", got)
	}
	if got := testutil.ToFloat64(m.exchangeErrors[GoogleSTS][Unavailable]); got != 0 {
		t.Errorf("google_sts unavailable: %v", got)
	}
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP metabind_exchange_duration_seconds Time of one call to a cloud's token service, by upstream: google_sts, google_iam, aws_sts.
# TYPE metabind_exchange_duration_seconds histogram
`+histogram("metabind_exchange_duration_seconds", `upstream="aws_sts"`, upstreamBuckets, 10)+
		histogram("metabind_exchange_duration_seconds", `upstream="google_iam"`, upstreamBuckets, 1)+
		histogram("metabind_exchange_duration_seconds", `upstream="google_sts"`, upstreamBuckets, 0.02)),
		"metabind_exchange_duration_seconds")
	if err != nil {
		t.Error(err)
	}
}

// histogram is the exposition of one classic histogram series holding the
// one observation v.
func histogram(name, labels string, buckets []float64, v float64) string {
	var b strings.Builder
	for _, le := range buckets {
		n := 0
		if v <= le {
			n = 1
		}
		b.WriteString(name + "_bucket{" + labels + `,le="` + prometheusFloat(le) + `"} ` + prometheusFloat(float64(n)) + "\n")
	}
	b.WriteString(name + "_bucket{" + labels + `,le="+Inf"} 1` + "\n")
	b.WriteString(name + "_sum{" + labels + "} " + prometheusFloat(v) + "\n")
	b.WriteString(name + "_count{" + labels + "} 1\n")
	return b.String()
}

func prometheusFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// The store's reloads set the bindings gauge; a failed one leaves it and
// counts as an error.
func TestStoreReloaded(t *testing.T) {
	m := New(prometheus.NewRegistry())
	m.StoreReloaded(3, time.Millisecond, nil)
	m.StoreReloaded(0, time.Second, errors.New("locked"))
	if got := testutil.ToFloat64(m.bindings); got != 3 {
		t.Errorf("bindings %v, want 3 (kept across a failed reload)", got)
	}
	if got := testutil.ToFloat64(m.storeReloads); got != 2 {
		t.Errorf("reloads %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.reloadErrors); got != 1 {
		t.Errorf("reload errors %v, want 1", got)
	}
	if got := testutil.CollectAndCount(m.reloadSeconds); got != 1 {
		t.Errorf("reload duration series %d", got)
	}
}

// A reconciliation's report counts by kind.
func TestRulesRepaired(t *testing.T) {
	m := New(prometheus.NewRegistry())
	m.RulesRepaired(reconcile.Report{
		BaseRepairs:     []string{"filter INPUT lacks metabind's rule", "nat chain missing"},
		RestoredRules:   []store.Binding{{}},
		RemovedRules:    []redirect.Owned{{}, {}, {}},
		RemovedBindings: nil,
	})
	for k, want := range map[repairKind]float64{repairBase: 2, repairPodRules: 1, repairOrphanRules: 3, repairReleasedBinding: 0} {
		if got := testutil.ToFloat64(m.ruleRepairs[k]); got != want {
			t.Errorf("rule repairs %s: %v, want %v", k, got, want)
		}
	}
}

// A token cache's observer counts by result and times its source's mints.
func TestTokenCache(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	c := m.TokenCache("kubernetes")
	c.Request(credentials.CacheMiss)
	c.Minted(50 * time.Millisecond)
	c.Request(credentials.CacheHit)
	c.Request(credentials.CacheHit)
	c.Request(credentials.CacheStale)
	for r, want := range map[credentials.CacheResult]float64{credentials.CacheHit: 2, credentials.CacheMiss: 1, credentials.CacheStale: 1} {
		if got := testutil.ToFloat64(m.cacheRequests.WithLabelValues(r.String())); got != want {
			t.Errorf("%s: %v, want %v", r, got, want)
		}
	}
	if got := testutil.CollectAndCount(m.mint); got != 1 {
		t.Errorf("%d mint series, want 1 (kubernetes)", got)
	}
}

// A nil *Metrics records nothing and does not panic: the responder without
// metrics.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Request("gce", "token", 200, time.Millisecond)
	m.RateLimited()
	m.LimitedCallers(func() int { return 1 })
	m.Lookup(time.Millisecond)
	m.Prefetch()
	m.KubernetesTokenRequest(time.Millisecond)
	m.Exchange(GoogleSTS, time.Millisecond, Denied)
	m.StoreReloaded(1, time.Millisecond, nil)
	m.RulesRepaired(reconcile.Report{})
	if m.TokenCache("gcp") != nil {
		t.Error("a nil Metrics' token cache observer is not nil")
	}
}

// The handler serves the registry in Prometheus' text format, with the Go
// runtime's and the process's collectors and every metabind family.
func TestHandler(t *testing.T) {
	reg := NewRegistry()
	m := New(reg)
	m.Request("gce", "token", 200, time.Millisecond)
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		`metabind_requests_total{code="200",endpoint="token",flavour="gce"} 1`,
		"go_goroutines ", "process_resident_memory_bytes ",
		"# TYPE metabind_request_duration_seconds histogram",
		"# TYPE metabind_bindings gauge",
		"# TYPE metabind_rate_limited_callers gauge",
		"# TYPE metabind_rule_repairs_total counter",
		"# TYPE metabind_store_reloads_total counter",
		"# TYPE metabind_token_prefetches_total counter",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("no %q in /metrics", want)
		}
	}
}

// BenchmarkRequestPath is what metrics add to a request answered from the
// token cache: the request's counter and histogram, the lookup's
// histogram, the cache's hit.
func BenchmarkRequestPath(b *testing.B) {
	m := New(prometheus.NewRegistry())
	c := m.TokenCache("own_issuer")
	b.ReportAllocs()
	for b.Loop() {
		m.Lookup(20 * time.Microsecond)
		c.Request(credentials.CacheHit)
		m.Request("gce", "token", 200, 50*time.Microsecond)
	}
}
