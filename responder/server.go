package responder

import (
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/store"
)

// BindingLookup finds the pod that owns an IP; *store.View is one.
type BindingLookup interface {
	Lookup(netip.Addr) (store.Binding, bool, error)
}

var _ BindingLookup = (*store.View)(nil)

// Request bounds. The request line and headers together are bounded by
// MaxHeaderBytes (larger: 431); within that, a longer path is 404 and a
// longer query 400, before any other work.
const (
	MaxHeaderBytes = 16 << 10
	MaxPathBytes   = 1024
	MaxQueryBytes  = 4 << 10
)

// Server timeouts. ReadHeaderTimeout is a deadline for the whole request
// line and headers, not an idle timeout, so a client that trickles a byte
// at a time is cut off all the same. WriteTimeout stays above MaxLongPoll.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 10 * time.Second
	IdleTimeout       = 90 * time.Second
)

// NewServer returns the HTTP server for h with the responder's size bounds
// and timeouts; its errors (bad requests, TLS probes) go to log at warning
// level. Callers may adjust the fields before serving.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// oidcCacheHeader is the Cache-Control value of the OIDC documents,
// shared like the values in gce.go: never written to.
var oidcCacheHeader = []string{"max-age=" + strconv.Itoa(int(issuer.OIDCMaxAge/time.Second))}

// RequestLogMessage is the message of the one log line per request.
const RequestLogMessage = "request"

// rootBody is what GET / answers: Go's OnGCE probes / without the
// Metadata-Flavor header, Python's ping with it.
const rootBody = "computeMetadata/\n"

var rootBodyBytes = []byte(rootBody)

type handler struct {
	cfg    *Config
	lookup BindingLookup
	iss    *issuer.Issuer
	log    *slog.Logger

	site          *site
	projectNumber uint64
	oidc          map[string]func() body // discovery document and JWKS by path
	limits        *callerLimits
	tokens        *tokenCache

	now         func() time.Time
	maxLongPoll time.Duration
}

// NewHandler serves the GCE metadata API to the callers lookup knows, and
// the issuer's OIDC documents to anyone. cfg must come from ParseConfig or
// LoadConfig. A nil log discards.
func NewHandler(cfg *Config, lookup BindingLookup, iss *issuer.Issuer, log *slog.Logger) http.Handler {
	return newHandler(cfg, lookup, iss, log)
}

func newHandler(cfg *Config, lookup BindingLookup, iss *issuer.Issuer, log *slog.Logger) *handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	num, _ := strconv.ParseUint(string(cfg.Project.NumericID), 10, 64) // validated
	perSecond, burst := float64(DefaultRequestsPerSecond), DefaultBurst
	if cfg.Limits.RequestsPerSecond != nil {
		perSecond = *cfg.Limits.RequestsPerSecond
	}
	if cfg.Limits.Burst != nil {
		burst = *cfg.Limits.Burst
	}
	h := &handler{
		cfg:           cfg,
		lookup:        lookup,
		iss:           iss,
		log:           log,
		site:          newSite(cfg),
		projectNumber: num,
		oidc:          make(map[string]func() body),
		limits:        newCallerLimits(perSecond, burst, DefaultMaxCallers),
		tokens:        newTokenCache(MaxCachedTokens, MaxCachedTokenBytes),
		now:           time.Now,
		maxLongPoll:   MaxLongPoll,
	}
	discoveryBody := newBody(iss.DiscoveryJSON(), jsonType)
	discovery := func() body { return discoveryBody }
	jwks := func() body { return newBody(iss.JWKSJSON(), "application/jwk-set+json") } // follows key rotations
	for _, prefix := range []string{"", iss.PathPrefix()} {
		h.oidc[prefix+issuer.DiscoveryPath] = discovery
		h.oidc[prefix+issuer.JWKSPath] = jwks
	}
	return h
}

// caller is who sent a request, by its TCP peer address.
type caller struct {
	ip      netip.Addr
	binding store.Binding
	bound   bool
	err     error // store lookup failed
	rule    int   // index of the matching identity rule, or -1
}

func (h *handler) identify(r *http.Request) caller {
	c := caller{rule: -1}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return c // not a TCP peer: never bound
	}
	c.ip = ap.Addr().Unmap()
	c.binding, c.bound, c.err = h.lookup.Lookup(c.ip)
	if c.bound && c.err == nil {
		c.rule = h.cfg.Match(c.binding)
	} else {
		c.bound = false
	}
	return c
}

// statusWriter records the status and any error for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	err    error
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (h *handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	w.Header()["Metadata-Flavor"] = flavorHeader
	c := caller{rule: -1}
	h.serve(w, r, &c)
	h.logRequest(r, w, &c, time.Since(start))
}

// serve checks a request in the order: proxy headers, method, path; then
// the public paths (/ and the OIDC documents); then, for metadata, the
// Metadata-Flavor header, the query and the caller.
func (h *handler) serve(w *statusWriter, r *http.Request, c *caller) {
	if _, ok := r.Header["X-Forwarded-For"]; ok {
		h.forbidden(w, "requests with X-Forwarded-For are refused")
		return
	}
	if _, ok := r.Header["Forwarded"]; ok {
		h.forbidden(w, "requests with Forwarded are refused")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.error(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	// Nothing the responder serves takes a body: one is refused unread,
	// and past this point there is none to read.
	if r.ContentLength > 0 || len(r.TransferEncoding) > 0 {
		h.badRequest(w, "request bodies are not accepted")
		return
	}
	r.Body = http.NoBody
	if len(r.URL.Path) > MaxPathBytes || len(r.URL.RawPath) > MaxPathBytes {
		h.notFound(w)
		return
	}
	if !plainPath(r.URL) {
		h.notFound(w)
		return
	}
	if len(r.URL.RawQuery) > MaxQueryBytes {
		h.badRequest(w, "query too long")
		return
	}
	if r.URL.Path == "/" {
		w.Header()["Content-Type"] = textTypeHeader
		w.Write(rootBodyBytes)
		return
	}
	if get, ok := h.oidc[r.URL.Path]; ok {
		b := get()
		w.Header()["Content-Type"] = b.ctypeHeader
		w.Header()["Cache-Control"] = oidcCacheHeader
		w.Write(b.data)
		return
	}
	if !strings.HasPrefix(r.URL.Path, computeMetadataPath) {
		h.notFound(w)
		return
	}
	if v := r.Header.Values("Metadata-Flavor"); len(v) != 1 || v[0] != "Google" {
		h.forbidden(w, "missing required header: Metadata-Flavor: Google")
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		h.badRequest(w, "bad query parameters")
		return
	}
	// Only now, for a well-formed metadata request, is the caller looked
	// up: the probes, the OIDC documents and refusals never wait on the
	// store.
	*c = h.identify(r)
	if c.err != nil {
		w.err = c.err
		h.error(w, http.StatusServiceUnavailable, "binding store unavailable")
		return
	}
	// Per caller IP, so one pod cannot keep the responder from the others.
	if d := h.limits.allow(c.ip, h.now()); !d.ok {
		if d.warn {
			attrs := []slog.Attr{slog.String("caller", c.ip.String())}
			if c.bound {
				attrs = append(attrs, slog.String("namespace", c.binding.Namespace), slog.String("pod", c.binding.Pod))
			}
			attrs = append(attrs, slog.Int("refusedSinceLastWarning", d.refused))
			h.log.LogAttrs(r.Context(), slog.LevelWarn, "caller rate limited", attrs...)
		}
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(d.retryAfter)))
		h.error(w, http.StatusTooManyRequests, "rate limit exceeded")
		return
	}
	// No binding, or a binding no identity rule matches: the pod gets
	// nothing, so SDKs fall back as they would off-cloud.
	if !c.bound || c.rule < 0 {
		h.notFound(w)
		return
	}
	h.serveMetadata(w, r, q, c)
}

// plainPath reports whether a path names what it seems to: no dot
// segments, empty segments or backslashes, and no encoded '/', '.' or '\'.
func plainPath(u *url.URL) bool {
	p := u.Path
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") || strings.Contains(p, "//") {
		return false
	}
	if raw := strings.ToLower(u.RawPath); raw != "" {
		for _, enc := range []string{"%2f", "%2e", "%5c"} {
			if strings.Contains(raw, enc) {
				return false
			}
		}
	}
	for rest := p; rest != ""; {
		var seg string
		seg, rest, _ = strings.Cut(rest, "/")
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

func (h *handler) error(w *statusWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Del("ETag")
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

func (h *handler) notFound(w *statusWriter)               { h.error(w, http.StatusNotFound, "not found") }
func (h *handler) forbidden(w *statusWriter, msg string)  { h.error(w, http.StatusForbidden, msg) }
func (h *handler) badRequest(w *statusWriter, msg string) { h.error(w, http.StatusBadRequest, msg) }

func (h *handler) internalError(w *statusWriter, err error) {
	w.err = err
	h.error(w, http.StatusInternalServerError, "internal error")
}

// logRequest writes one line per request. It never logs the query (an
// audience is harmless, but nothing else belongs in a log), headers or
// response bodies.
func (h *handler) logRequest(r *http.Request, w *statusWriter, c *caller, d time.Duration) {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	level := slog.LevelInfo
	if status == http.StatusTooManyRequests {
		level = slog.LevelDebug // a flood is summed up by the "caller rate limited" warning
	}
	if w.err != nil {
		level = slog.LevelError
	}
	if !h.log.Enabled(r.Context(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, 9)
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		attrs = append(attrs, slog.String("caller", ap.Addr().Unmap().String()))
	} else {
		attrs = append(attrs, slog.String("caller", r.RemoteAddr))
	}
	if c.bound {
		attrs = append(attrs, slog.String("namespace", c.binding.Namespace), slog.String("pod", c.binding.Pod))
	}
	attrs = append(attrs,
		slog.String("method", r.Method),
		slog.String("path", logPath(r.URL.Path)),
		slog.Int("status", status),
		slog.Duration("duration", d),
	)
	if w.err != nil {
		attrs = append(attrs, slog.String("error", w.err.Error()))
	}
	h.log.LogAttrs(r.Context(), level, RequestLogMessage, attrs...)
}

// logPath cuts a path for the request log; paths over MaxPathBytes are
// refused anyway.
func logPath(p string) string {
	const max = 256
	if len(p) > max {
		return p[:max] + "..."
	}
	return p
}
