package responder

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/metabind/metabind/responder/metrics"
)

// metered is the test handler recording its metrics in a registry of its
// own, whose collectors the tests read.
func metered(t *testing.T, cfg *Config) (*Responder, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, _ := newResponder(t, cfg, testLookup(), nil, WithMetrics(metrics.New(reg)))
	return h, reg
}

// gathered is the value of the one series of name with labels in reg (a
// counter's or gauge's value, a histogram's count), and whether it exists.
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func wantValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	if got, _ := gathered(t, reg, name, labels); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// Requests through the real handler move the counters and histograms of
// their flavour, endpoint and code; the token cache counts its miss (the
// mint, timed per source) and then its hit; every caller lookup is timed.
func TestRequestMetrics(t *testing.T) {
	h, reg := metered(t, unlimited(testCfg(t)))
	const sa = "/computeMetadata/v1/instance/service-accounts/default"
	for _, r := range []struct {
		path, ip string
		header   map[string]string
		code     int
	}{
		{sa + "/token", apiIP, flavor, 200},
		{sa + "/token", apiIP, flavor, 200},
		{sa + "/identity?audience=https://aud.example", apiIP, flavor, 200},
		{"/computeMetadata/v1/instance/service-accounts/" + apiEmail + "/email", apiIP, flavor, 200},
		{"/computeMetadata/v1/project/project-id", apiIP, flavor, 200},
		{"/computeMetadata/v1/project/project-id", apiIP, nil, 403},
		{"/computeMetadata/v1/instance/zone", unboundIP, flavor, 404},
		{"/", apiIP, nil, 200},
		{"/no/such/path", apiIP, nil, 404},
	} {
		if rec := do(t, h, "GET", r.path, r.ip, r.header); rec.Code != r.code {
			t.Fatalf("GET %s: %d, want %d", r.path, rec.Code, r.code)
		}
	}
	req := func(flavour, endpoint, code string) map[string]string {
		return map[string]string{"flavour": flavour, "endpoint": endpoint, "code": code}
	}
	const total = "metabind_requests_total"
	wantValue(t, reg, total, req("gce", "token", "200"), 2)
	wantValue(t, reg, total, req("gce", "identity", "200"), 1)
	wantValue(t, reg, total, req("gce", "email", "200"), 1)
	wantValue(t, reg, total, req("gce", "project", "200"), 1)
	wantValue(t, reg, total, req("gce", "project", "403"), 1)
	wantValue(t, reg, total, req("gce", "instance", "404"), 1)
	wantValue(t, reg, total, req("public", "document", "200"), 1)
	wantValue(t, reg, total, req("none", "other", "404"), 1)
	wantValue(t, reg, "metabind_request_duration_seconds", map[string]string{"flavour": "gce"}, 7)
	// Looked up: every request that passed the flavour's own check.
	wantValue(t, reg, "metabind_lookup_duration_seconds", nil, 6)
	// Two mints (the access token, the ID token), one hit (the second
	// token request).
	wantValue(t, reg, "metabind_token_cache_requests_total", map[string]string{"result": "miss"}, 2)
	wantValue(t, reg, "metabind_token_cache_requests_total", map[string]string{"result": "hit"}, 1)
	wantValue(t, reg, "metabind_token_cache_requests_total", map[string]string{"result": "stale"}, 0)
	wantValue(t, reg, "metabind_token_mint_duration_seconds", map[string]string{"source": "own_issuer"}, 2)
	wantValue(t, reg, "metabind_rate_limited_total", nil, 0)

	// The exposition as Prometheus reads it, for one family.
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP metabind_token_cache_requests_total Token requests to the token caches, by result: hit, miss (minted or waited for a mint) or stale (served past its refresh as the source was unavailable).
# TYPE metabind_token_cache_requests_total counter
metabind_token_cache_requests_total{result="hit"} 1
metabind_token_cache_requests_total{result="miss"} 2
metabind_token_cache_requests_total{result="stale"} 0
`), "metabind_token_cache_requests_total")
	if err != nil {
		t.Error(err)
	}
}

// A refused request counts as a 429 of its endpoint and in
// metabind_rate_limited_total, and its caller in
// metabind_rate_limited_callers until a request of its is let through.
func TestRateLimitMetrics(t *testing.T) {
	cfg, err := ParseConfig([]byte(testConfig + "limits: {requestsPerSecond: 1, burst: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	h, reg := metered(t, cfg)
	clock := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	h.setClock(func() time.Time { return clock })
	const p = "/computeMetadata/v1/project/project-id"
	for i, want := range []int{200, 200, 429, 429} {
		if rec := do(t, h, "GET", p, apiIP, flavor); rec.Code != want {
			t.Fatalf("request %d: %d, want %d", i, rec.Code, want)
		}
	}
	do(t, h, "GET", p, workerIP, flavor)
	wantValue(t, reg, "metabind_rate_limited_total", nil, 2)
	wantValue(t, reg, "metabind_requests_total", map[string]string{"flavour": "gce", "endpoint": "project", "code": "429"}, 2)
	wantValue(t, reg, "metabind_rate_limited_callers", nil, 1)
	clock = clock.Add(time.Second)
	do(t, h, "GET", p, apiIP, flavor)
	wantValue(t, reg, "metabind_rate_limited_callers", nil, 0)
	// No series names a caller.
	if n := testutil.CollectAndCount(reg, "metabind_rate_limited_total"); n != 1 {
		t.Errorf("metabind_rate_limited_total has %d series, want 1", n)
	}
}

// A hostile pod sending 1,000 distinct random paths (and queries) adds a
// handful of series, not one per path: endpoints are a fixed set, and
// nothing of the path or query is a label.
func TestRequestMetricsCardinality(t *testing.T) {
	h, reg := metered(t, unlimited(testCfg(t)))
	prefixes := []string{
		"/",
		"/computeMetadata/",
		"/computeMetadata/v1/",
		"/computeMetadata/v1/instance/",
		"/computeMetadata/v1/project/",
		"/computeMetadata/v1/instance/service-accounts/",
		"/computeMetadata/v1/instance/service-accounts/default/",
		"/latest/meta-data/iam/security-credentials/",
		"/v1/credentials/",
	}
	for i := range 1000 {
		b := make([]byte, 8)
		rand.Read(b)
		path := prefixes[mrand.IntN(len(prefixes))] + hex.EncodeToString(b)
		if i%2 == 0 {
			path += "/token"
		}
		if i%3 == 0 {
			path += "?audience=" + hex.EncodeToString(b) + "&x" + fmt.Sprint(i) + "=1"
		}
		header := flavor
		if i%5 == 0 {
			header = nil // refused before the lookup: 403
		}
		rec := do(t, h, "GET", path, apiIP, header)
		if rec.Code == http.StatusOK {
			t.Fatalf("GET %s: 200", path)
		}
	}
	series := testutil.CollectAndCount(reg, "metabind_requests_total")
	t.Logf("1,000 random paths: %d series of metabind_requests_total", series)
	if series > 12 {
		t.Errorf("1,000 random paths made %d series of metabind_requests_total, want a handful", series)
	}
	// And none holds any of the paths.
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if len(l.GetValue()) > 16 {
					t.Errorf("%s has label %s=%q", f.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}
