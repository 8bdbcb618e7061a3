package server

import (
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/metabind/metabind/responder/subject"
	"github.com/metabind/metabind/store"
)

// BindingLookup finds the pod that owns an IP; *store.View is one.
type BindingLookup interface {
	Lookup(netip.Addr) (store.Binding, bool, error)
}

var _ BindingLookup = (*store.View)(nil)

// Flavour answers one cloud's metadata API under a path prefix.
type Flavour interface {
	// Admit vets a request before its caller is looked up, for what the
	// flavour's clients always send (GCE: Metadata-Flavor: Google). It
	// answers a request it refuses, and returns false.
	Admit(w *Response, r *http.Request) bool
	// Serve answers the request of a caller with a subject. q is the
	// parsed query.
	Serve(w *Response, r *http.Request, q url.Values, c Caller)
}

// Caller is who sent a request: its TCP peer address and the identity the
// resolver gave its binding (c.Subject.Binding).
type Caller struct {
	IP      netip.Addr
	Subject subject.Subject
}

// Route sends the requests whose path starts with Prefix (as a string:
// "/computeMetadata" takes "/computeMetadataX" too) to Flavour.
type Route struct {
	Prefix  string
	Flavour Flavour
	// Header, when not nil, is set on every response to a path of the
	// route, refusals included, in place of Options.Header: a cloud's
	// clients must not see another cloud's headers. Shared between
	// responses, never written to.
	Header http.Header
	// Methods are the request methods the route takes; nil: GET and HEAD.
	// Others are refused with 405 before the flavour is asked.
	Methods []string
	// Name is the route's flavour in metrics ("gce", "imds", ...): a
	// constant, never anything of a request.
	Name string
	// Endpoint, when not nil, names a path's endpoint in metrics: one of
	// the Endpoint constants whatever the path (see Observer); nil:
	// EndpointOther.
	Endpoint func(path string) string
}

// defaultMethods are what a route without Methods, a public document or a
// path no route takes accepts.
var defaultMethods = []string{http.MethodGet, http.MethodHead}

// Document is a response served to anyone at its path, before any caller
// lookup: a detection probe, the issuer's OIDC documents.
type Document struct {
	Body         []byte // never written to
	ContentType  string
	CacheControl string // "": none
}

// Limits is the token bucket of each caller IP: RequestsPerSecond
// sustained (> 0), Burst at once (>= 1).
type Limits struct {
	RequestsPerSecond float64
	Burst             int
}

// Options are what a Handler serves.
type Options struct {
	Lookup   BindingLookup    // who owns a caller's IP
	Resolver subject.Resolver // a caller's identity
	Routes   []Route          // tried in order
	// Public maps exact paths to their documents, fetched per request.
	Public map[string]func() Document
	// Header is set on every response, refusals included, but those to a
	// route with a Header of its own: what clients detect the server by
	// (GCE: Metadata-Flavor: Google). Its values are shared between
	// responses, never written to.
	Header http.Header
	Limits Limits
	Log    *slog.Logger // nil discards
	// Requests is which request lines Log gets (requestlog.go).
	Requests RequestLog
	// Observer, when not nil, hears of every request answered (metrics).
	Observer Observer
}

// RequestLogMessage is the message of the one log line per request.
const RequestLogMessage = "request"

// Handler serves the flavours of its routes to the callers its lookup
// knows, and its public documents to anyone.
type Handler struct {
	// Now is the rate limits' clock; tests replace it before first use.
	Now func() time.Time

	lookup   BindingLookup
	resolver subject.Resolver
	routes   []Route
	public   map[string]func() Document
	header   http.Header
	limits   *callerLimits
	log      *slog.Logger
	requests *requestSampler
	observer Observer
}

// New returns the handler for o.
func New(o Options) *Handler {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Handler{
		Now:      time.Now,
		lookup:   o.Lookup,
		resolver: o.Resolver,
		routes:   o.Routes,
		public:   o.Public,
		header:   o.Header,
		limits:   newCallerLimits(o.Limits.RequestsPerSecond, o.Limits.Burst, DefaultMaxCallers),
		log:      o.Log,
		requests: &requestSampler{RequestLog: o.Requests},
		observer: o.Observer,
	}
}

// caller is what the request log knows of who sent a request.
type caller struct {
	ip      netip.Addr
	binding store.Binding
	bound   bool
	err     error // store lookup failed
}

// identify looks the request's TCP peer up in the store.
func (h *Handler) identify(r *http.Request, c *caller) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return // not a TCP peer: never bound
	}
	c.ip = ap.Addr().Unmap()
	c.binding, c.bound, c.err = h.lookup.Lookup(c.ip)
	if c.err != nil {
		c.bound = false
	}
}

func (h *Handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &Response{ResponseWriter: rw}
	rt := h.route(r.URL.Path)
	header := h.header
	if rt != nil && rt.Header != nil {
		header = rt.Header
	}
	hdr := w.Header()
	for k, v := range header {
		hdr[k] = v
	}
	var c caller
	h.serve(w, r, rt, &c)
	d := time.Since(start)
	if h.observer != nil {
		h.observe(r.URL.Path, rt, w, d)
	}
	h.logRequest(r, w, &c, d)
}

// serve checks a request in the order: proxy headers, method, path; then
// the public documents; then, for a flavour's path (rt, nil when no route
// takes it), the flavour's own check, the query, the caller, its rate
// limit and its subject.
func (h *Handler) serve(w *Response, r *http.Request, rt *Route, c *caller) {
	if _, ok := r.Header["X-Forwarded-For"]; ok {
		w.Forbidden("requests with X-Forwarded-For are refused")
		return
	}
	if _, ok := r.Header["Forwarded"]; ok {
		w.Forbidden("requests with Forwarded are refused")
		return
	}
	methods := defaultMethods
	if rt != nil && rt.Methods != nil {
		methods = rt.Methods
	}
	if !slices.Contains(methods, r.Method) {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		w.Error(http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	// Nothing the responder serves takes a body: one is refused unread,
	// and past this point there is none to read.
	if r.ContentLength > 0 || len(r.TransferEncoding) > 0 {
		w.BadRequest("request bodies are not accepted")
		return
	}
	r.Body = http.NoBody
	if len(r.URL.Path) > MaxPathBytes || len(r.URL.RawPath) > MaxPathBytes {
		w.NotFound()
		return
	}
	if !plainPath(r.URL) {
		w.NotFound()
		return
	}
	if len(r.URL.RawQuery) > MaxQueryBytes {
		w.BadRequest("query too long")
		return
	}
	if get, ok := h.public[r.URL.Path]; ok {
		d := get()
		w.Header()["Content-Type"] = []string{d.ContentType}
		if d.CacheControl != "" {
			w.Header()["Cache-Control"] = []string{d.CacheControl}
		}
		w.Write(d.Body)
		return
	}
	if rt == nil {
		w.NotFound()
		return
	}
	f := rt.Flavour
	if !f.Admit(w, r) {
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		w.BadRequest("bad query parameters")
		return
	}
	// Only now, for a well-formed request to a flavour, is the caller
	// looked up: the probes, the OIDC documents and refusals never wait on
	// the store.
	h.identify(r, c)
	if c.err != nil {
		w.err = c.err
		w.Error(http.StatusServiceUnavailable, "binding store unavailable")
		return
	}
	// Per caller IP, so one pod cannot keep the responder from the others.
	if d := h.limits.allow(c.ip, h.Now()); !d.ok {
		if d.warn {
			attrs := []slog.Attr{slog.String("caller", c.ip.String())}
			if c.bound {
				attrs = append(attrs, slog.String("namespace", c.binding.Namespace), slog.String("pod", c.binding.Pod))
			}
			attrs = append(attrs, slog.Int("refusedSinceLastWarning", d.refused))
			h.log.LogAttrs(r.Context(), slog.LevelWarn, "caller rate limited", attrs...)
		}
		if h.observer != nil {
			h.observer.RateLimited()
		}
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(d.retryAfter)))
		w.Error(http.StatusTooManyRequests, "rate limit exceeded")
		return
	}
	// No binding: the pod gets nothing, so SDKs fall back as they would
	// off-cloud. Nor does a binding without identity.
	if !c.bound {
		w.NotFound()
		return
	}
	s, err := h.resolver.Resolve(r.Context(), c.binding)
	if err != nil {
		Refuse(w, err)
		return
	}
	s.Binding = c.binding // who calls is the store's to say, never the resolver's
	f.Serve(w, r, q, Caller{IP: c.ip, Subject: s})
}

// route is the first route whose prefix path has, nil when none.
func (h *Handler) route(path string) *Route {
	for i := range h.routes {
		if strings.HasPrefix(path, h.routes[i].Prefix) {
			return &h.routes[i]
		}
	}
	return nil
}

// UnavailableRetryAfter is the Retry-After of a subject the resolver could
// not know (subject.ErrUnavailable).
const UnavailableRetryAfter = time.Second

// Refuse answers a resolver's error, or a credential source's of the same
// kinds (subject.ErrNoIdentity, *subject.Refused, subject.ErrUnavailable);
// anything else is a 500.
func Refuse(w *Response, err error) {
	var refused *subject.Refused
	switch {
	case errors.Is(err, subject.ErrNoIdentity):
		w.Error(http.StatusNotFound, subject.ErrNoIdentity.Error())
	case errors.As(err, &refused):
		code := refused.Code
		if code < 400 || code > 499 {
			code = http.StatusForbidden
		}
		w.reason = refused.Reason
		w.Error(code, refused.Reason)
	case errors.Is(err, subject.ErrUnavailable):
		w.err = err
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(UnavailableRetryAfter)))
		w.Error(http.StatusServiceUnavailable, subject.ErrUnavailable.Error())
	default:
		w.Fail(err)
	}
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

// logRequest writes one line per request. It never logs the query (an
// audience is harmless, but nothing else belongs in a log), headers or
// response bodies.
func (h *Handler) logRequest(r *http.Request, w *Response, c *caller, d time.Duration) {
	status := w.Status()
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
	keep, sampled := h.requests.keep(status)
	if !keep {
		return
	}
	attrs := make([]slog.Attr, 0, 10)
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
	if w.reason != "" {
		attrs = append(attrs, slog.String("reason", w.reason))
	}
	if w.err != nil {
		attrs = append(attrs, slog.String("error", w.err.Error()))
	}
	if sampled.Key != "" {
		attrs = append(attrs, sampled)
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
