// Package metrics is the responder's Prometheus metrics: the collectors,
// on a registry of the responder's own (never the global default), and the
// methods the rest of the responder records through. The packages that
// record (server, credentials, store, reconcile) know nothing of
// Prometheus: each has a hook (an Observer, an OnReload func) that the
// responder's assembly points here. Every label takes its values from a
// small fixed set, never from a request, so a pod sending endless paths or
// audiences adds no series.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/metabind/metabind/reconcile"
	"github.com/metabind/metabind/responder/credentials"
)

const namespace = "metabind"

// Buckets, in seconds. A request answered from memory takes tens of
// microseconds; one that waits on a mint is bounded by
// credentials.MintWait, a mint by the source's 30 s.
var (
	requestBuckets  = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	lookupBuckets   = []float64{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 2.5}
	upstreamBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

// NewRegistry is a registry with the Go runtime's and the process's
// collectors, for New and Handler.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves what reg gathers, in the text or OpenMetrics format the
// scraper asks for.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true})
}

// Metrics are the responder's collectors. A nil *Metrics records nothing.
type Metrics struct {
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	rateLimited     prometheus.Counter
	limitedCallers  atomic.Pointer[func() int]

	lookup           prometheus.Histogram
	cacheRequests    *prometheus.CounterVec
	mint             *prometheus.HistogramVec
	prefetches       prometheus.Counter
	kubeTokenRequest prometheus.Histogram
	exchange         [upstreams]prometheus.Observer
	exchangeErrors   [upstreams][reasons]prometheus.Counter

	bindings      prometheus.Gauge
	storeReloads  prometheus.Counter
	reloadErrors  prometheus.Counter
	reloadSeconds prometheus.Histogram
	ruleRepairs   [repairKinds]prometheus.Counter

	// series are the request counters and histograms already bound, by
	// their labels: WithLabelValues hashes and allocates its arguments.
	mu     sync.RWMutex
	series map[requestLabels]requestSeries
}

type requestLabels struct {
	flavour, endpoint string
	code              int
}

type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// New registers the responder's collectors with reg.
func New(reg prometheus.Registerer) *Metrics {
	f := factory{reg}
	m := &Metrics{
		requests: f.counterVec("requests_total",
			"Requests answered on the metadata address, by flavour (gce, imds, container, public, none), endpoint and HTTP status code.",
			"flavour", "endpoint", "code"),
		requestDuration: f.histogramVec("request_duration_seconds",
			"Time to answer a request on the metadata address, by flavour.", requestBuckets, "flavour"),
		rateLimited: f.counter("rate_limited_total", "Requests refused with 429: their caller was over its rate limit."),
		lookup: f.histogram("lookup_duration_seconds",
			"Time to look a caller's IP up in the binding store (a reload included when one is due).", lookupBuckets),
		cacheRequests: f.counterVec("token_cache_requests_total",
			"Token requests to the token caches, by result: hit, miss (minted or waited for a mint) or stale (served past its refresh as the source was unavailable).",
			"result"),
		mint: f.histogramVec("token_mint_duration_seconds",
			"Time of one call of a credentials source (a mint), by source: own_issuer, kubernetes, gcp, aws.", upstreamBuckets, "source"),
		prefetches: f.counter("token_prefetches_total", "Tokens asked for ahead of a new pod's first request."),
		kubeTokenRequest: f.histogram("kubernetes_token_request_duration_seconds",
			"Time of one Kubernetes TokenRequest (serviceaccounts/token) for a pod.", upstreamBuckets),
		bindings:     f.gauge("bindings", "Bindings (pod IPs) in the store, as of the latest reload."),
		storeReloads: f.counter("store_reloads_total", "Reloads of the binding store after a write (errors included)."),
		reloadErrors: f.counter("store_reload_errors_total", "Reloads of the binding store that failed."),
		reloadSeconds: f.histogram("store_reload_duration_seconds",
			"Time to reload the binding store after a write.", lookupBuckets),
		series: make(map[requestLabels]requestSeries),
	}
	exchange := f.histogramVec("exchange_duration_seconds",
		"Time of one call to a cloud's token service, by upstream: google_sts, google_iam, aws_sts.", upstreamBuckets, "upstream")
	exchangeErrors := f.counterVec("exchange_errors_total",
		"Failed calls to a cloud's token service, by upstream and reason: denied, invalid, unavailable, timeout, other.",
		"upstream", "reason")
	for u := range Upstream(upstreams) {
		m.exchange[u] = exchange.WithLabelValues(u.String())
		for r := range Reason(reasons) {
			if r != Success {
				m.exchangeErrors[u][r] = exchangeErrors.WithLabelValues(u.String(), r.String())
			}
		}
	}
	repairs := f.counterVec("rule_repairs_total",
		"Repairs of the node's rules by the repair loop, by kind: base (a chain or jump put back), pod_rules (a pod's rules restored), orphan_rules (a rule no binding owns removed), released_binding (a binding a failed takeover left removed).",
		"kind")
	for k := range repairKind(repairKinds) {
		m.ruleRepairs[k] = repairs.WithLabelValues(k.String())
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "rate_limited_callers",
		Help: "Callers (pod IPs) whose latest request, within the last minute, was refused with 429."},
		func() float64 {
			if f := m.limitedCallers.Load(); f != nil {
				return float64((*f)())
			}
			return 0
		}))
	return m
}

// Request records one request answered on the metadata address
// (server.Observer).
func (m *Metrics) Request(flavour, endpoint string, code int, d time.Duration) {
	if m == nil {
		return
	}
	l := requestLabels{flavour, endpoint, code}
	m.mu.RLock()
	s, ok := m.series[l]
	m.mu.RUnlock()
	if !ok {
		s = m.bind(l)
	}
	s.count.Inc()
	s.duration.Observe(d.Seconds())
}

// bind makes the series of l, once.
func (m *Metrics) bind(l requestLabels) requestSeries {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.series[l]
	if !ok {
		s = requestSeries{
			count:    m.requests.WithLabelValues(l.flavour, l.endpoint, strconv.Itoa(l.code)),
			duration: m.requestDuration.WithLabelValues(l.flavour),
		}
		m.series[l] = s
	}
	return s
}

// RateLimited records one request refused with 429 (server.Observer).
func (m *Metrics) RateLimited() {
	if m != nil {
		m.rateLimited.Inc()
	}
}

// LimitedCallers makes metabind_rate_limited_callers read f
// (server.Handler.LimitedCallers); the latest f set is read.
func (m *Metrics) LimitedCallers(f func() int) {
	if m != nil {
		m.limitedCallers.Store(&f)
	}
}

// Lookup records one binding lookup that took d.
func (m *Metrics) Lookup(d time.Duration) {
	if m != nil {
		m.lookup.Observe(d.Seconds())
	}
}

// TokenCache is what a token cache over the source named source records
// through (credentials.CacheObserver); nil for a nil m.
func (m *Metrics) TokenCache(source string) credentials.CacheObserver {
	if m == nil {
		return nil
	}
	c := &tokenCache{mint: m.mint.WithLabelValues(source)}
	for r := range c.requests {
		c.requests[r] = m.cacheRequests.WithLabelValues(credentials.CacheResult(r).String())
	}
	return c
}

type tokenCache struct {
	requests [credentials.CacheStale + 1]prometheus.Counter
	mint     prometheus.Observer
}

func (c *tokenCache) Request(r credentials.CacheResult) {
	if int(r) < len(c.requests) {
		c.requests[r].Inc()
	}
}

func (c *tokenCache) Minted(d time.Duration) { c.mint.Observe(d.Seconds()) }

// Prefetch records one token asked for ahead of a pod's first request.
func (m *Metrics) Prefetch() {
	if m != nil {
		m.prefetches.Inc()
	}
}

// KubernetesTokenRequest records one TokenRequest that took d.
func (m *Metrics) KubernetesTokenRequest(d time.Duration) {
	if m != nil {
		m.kubeTokenRequest.Observe(d.Seconds())
	}
}

// Exchange records one call to upstream that took d and ended as r.
func (m *Metrics) Exchange(u Upstream, d time.Duration, r Reason) {
	if m == nil || u >= upstreams || r >= reasons {
		return
	}
	m.exchange[u].Observe(d.Seconds())
	if r != Success {
		m.exchangeErrors[u][r].Inc()
	}
}

// StoreReloaded records one reload of the binding store (store.View's
// OnReload): on success, bindings is the count it holds.
func (m *Metrics) StoreReloaded(bindings int, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.storeReloads.Inc()
	m.reloadSeconds.Observe(d.Seconds())
	if err != nil {
		m.reloadErrors.Inc()
		return
	}
	m.bindings.Set(float64(bindings))
}

// RulesRepaired records what one reconciliation of the repair loop did
// (reconcile.Repairer's OnRepair).
func (m *Metrics) RulesRepaired(rep reconcile.Report) {
	if m == nil {
		return
	}
	m.ruleRepairs[repairBase].Add(float64(len(rep.BaseRepairs)))
	m.ruleRepairs[repairPodRules].Add(float64(len(rep.RestoredRules)))
	m.ruleRepairs[repairOrphanRules].Add(float64(len(rep.RemovedRules)))
	m.ruleRepairs[repairReleasedBinding].Add(float64(len(rep.RemovedBindings)))
}

// factory makes collectors named metabind_* and registers them.
type factory struct{ reg prometheus.Registerer }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
