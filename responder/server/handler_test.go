package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/metabind/metabind/responder/subject"
	"github.com/metabind/metabind/store"
)

// lookupFunc binds every IP it is asked about, counting the lookups.
type lookupFunc struct{ n int }

func (l *lookupFunc) Lookup(ip netip.Addr) (store.Binding, bool, error) {
	l.n++
	return store.Binding{IP: ip, Namespace: "ns", Pod: "pod-" + ip.String()}, true, nil
}

// resolverFunc resolves with a function.
type resolverFunc func(store.Binding) (subject.Subject, error)

func (f resolverFunc) Resolve(_ context.Context, b store.Binding) (subject.Subject, error) {
	return f(b)
}

// echoFlavour admits requests without ?refuse and answers the caller's
// pod and IP.
type echoFlavour struct{}

func (echoFlavour) Admit(w *Response, r *http.Request) bool {
	if r.URL.Query().Has("refuse") {
		w.Forbidden("refused by the flavour")
		return false
	}
	return true
}

func (echoFlavour) Serve(w *Response, r *http.Request, q url.Values, c Caller) {
	fmt.Fprintf(w, "%s %s %s", c.Subject.Pod, c.IP, c.Subject.Binding.Pod)
}

func testHandler(res subject.Resolver, log *slog.Logger) (*Handler, *lookupFunc) {
	l := &lookupFunc{}
	return New(Options{
		Lookup:   l,
		Resolver: res,
		Routes:   []Route{{Prefix: "/echo", Flavour: echoFlavour{}}},
		Public: map[string]func() Document{"/doc": func() Document {
			return Document{Body: []byte("doc"), ContentType: "text/x", CacheControl: "max-age=1"}
		}},
		Header: http.Header{"Flavour": {"Test"}},
		Limits: Limits{RequestsPerSecond: 100, Burst: 100},
		Log:    log,
	}), l
}

func get(h http.Handler, target string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", target, nil)
	r.RemoteAddr = "10.1.2.3:4321"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestRouting: public documents and refusals never look the caller up;
// a flavour's path gets the caller and its subject; every response carries
// the Header.
func TestRouting(t *testing.T) {
	h, lookups := testHandler(resolverFunc(func(b store.Binding) (subject.Subject, error) {
		return subject.Subject{Binding: b, Pod: "resolved"}, nil
	}), nil)
	for _, tc := range []struct {
		target, body string
		status       int
		looked       bool
	}{
		{"/doc", "doc", 200, false},
		{"/elsewhere", "not found\n", 404, false},
		{"/echo/x?refuse", "refused by the flavour\n", 403, false},
		{"/echo/x?a=%zz", "bad query parameters\n", 400, false},
		{"/echo/x", "resolved 10.1.2.3 pod-10.1.2.3", 200, true},
	} {
		lookups.n = 0
		w := get(h, tc.target)
		if w.Code != tc.status || w.Body.String() != tc.body || (lookups.n > 0) != tc.looked {
			t.Errorf("%s: %d %q, looked up %v; want %d %q, %v", tc.target, w.Code, w.Body, lookups.n > 0, tc.status, tc.body, tc.looked)
		}
		if w.Header().Get("Flavour") != "Test" {
			t.Errorf("%s: no Header", tc.target)
		}
	}
	if w := get(h, "/doc"); w.Header().Get("Content-Type") != "text/x" || w.Header().Get("Cache-Control") != "max-age=1" {
		t.Errorf("document headers %v", w.Header())
	}
}

// TestResolverErrors: what the server answers for each error a resolver
// may return, wrapped or not.
func TestResolverErrors(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		body       string
		retryAfter string
		logged     string // in the request's log line
	}{
		{subject.ErrNoIdentity, 404, "no identity for this pod\n", "", ""},
		{fmt.Errorf("service account web: %w", subject.ErrNoIdentity), 404, "no identity for this pod\n", "", ""},
		{&subject.Refused{Code: 403, Reason: "namespace is not enrolled"}, 403, "namespace is not enrolled\n", "", ""},
		{fmt.Errorf("x: %w", &subject.Refused{Code: 404, Reason: "pod unknown"}), 404, "pod unknown\n", "", ""},
		{&subject.Refused{Code: 200, Reason: "odd"}, 403, "odd\n", "", ""},
		{fmt.Errorf("api server: %w", subject.ErrUnavailable), 503, "identity not available yet\n", "1", "api server"},
		{errors.New("resolver on fire"), 500, "internal error\n", "", "resolver on fire"},
	} {
		var log strings.Builder
		h, _ := testHandler(resolverFunc(func(store.Binding) (subject.Subject, error) { return subject.Subject{}, tc.err }),
			slog.New(slog.NewTextHandler(&log, nil)))
		w := get(h, "/echo/x")
		if w.Code != tc.status || w.Body.String() != tc.body || w.Header().Get("Retry-After") != tc.retryAfter {
			t.Errorf("%v: %d %q Retry-After %q; want %d %q %q", tc.err, w.Code, w.Body, w.Header().Get("Retry-After"), tc.status, tc.body, tc.retryAfter)
		}
		if tc.logged != "" && !strings.Contains(log.String(), tc.logged) {
			t.Errorf("%v: the log does not say why:\n%s", tc.err, log.String())
		}
	}
}

// TestRouteHeaderAndMethods: a route with its own Header and Methods gets
// them on every response to its paths, refusals included, and only those;
// other paths keep Options.Header and GET and HEAD.
func TestRouteHeaderAndMethods(t *testing.T) {
	h := New(Options{
		Lookup: &lookupFunc{},
		Resolver: resolverFunc(func(b store.Binding) (subject.Subject, error) {
			return subject.Subject{Binding: b, Pod: "resolved"}, nil
		}),
		Routes: []Route{
			{Prefix: "/own", Flavour: echoFlavour{}, Header: http.Header{"Server": {"Own"}}, Methods: []string{"GET", "PUT"}},
			{Prefix: "/echo", Flavour: echoFlavour{}},
		},
		Header: http.Header{"Flavour": {"Test"}, "Server": {"Default"}},
		Limits: Limits{RequestsPerSecond: 100, Burst: 100},
	})
	for _, tc := range []struct {
		method, target string
		xff            bool
		status         int
		server, allow  string
	}{
		{"PUT", "/own/x", false, 200, "Own", ""},
		{"GET", "/own/x", false, 200, "Own", ""},
		{"HEAD", "/own/x", false, 405, "Own", "GET, PUT"},
		{"POST", "/own/x", false, 405, "Own", "GET, PUT"},
		{"GET", "/own/x", true, 403, "Own", ""},
		{"GET", "/own/x?refuse", false, 403, "Own", ""},
		{"GET", "/own/../echo", false, 404, "Own", ""},
		{"PUT", "/echo/x", false, 405, "Default", "GET, HEAD"},
		{"GET", "/echo/x", true, 403, "Default", ""},
		{"GET", "/echo/x", false, 200, "Default", ""},
		{"PUT", "/elsewhere", false, 405, "Default", "GET, HEAD"},
		{"GET", "/elsewhere", false, 404, "Default", ""},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		r.RemoteAddr = "10.1.2.3:4321"
		if tc.xff {
			r.Header.Set("X-Forwarded-For", "10.9.9.9")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		name := fmt.Sprintf("%s %s xff=%v", tc.method, tc.target, tc.xff)
		if w.Code != tc.status || w.Header().Get("Allow") != tc.allow {
			t.Errorf("%s: %d Allow %q; want %d %q", name, w.Code, w.Header().Get("Allow"), tc.status, tc.allow)
		}
		if got := w.Header().Get("Server"); got != tc.server {
			t.Errorf("%s: Server %q, want %q", name, got, tc.server)
		}
		if own := tc.server == "Own"; own != (w.Header().Get("Flavour") == "") {
			t.Errorf("%s: Flavour header %q on a route with own header: %v", name, w.Header().Get("Flavour"), own)
		}
	}
}

// failFlavour fails every request with FailWith.
type failFlavour struct{}

func (failFlavour) Admit(*Response, *http.Request) bool { return true }

func (failFlavour) Serve(w *Response, _ *http.Request, _ url.Values, _ Caller) {
	w.FailWith("the exchange failed", errors.New("sts unreachable"))
}

// TestFailWith: 500 with the flavour's message, and the error on the
// request's log line at error level.
func TestFailWith(t *testing.T) {
	var log strings.Builder
	h := New(Options{
		Lookup:   &lookupFunc{},
		Resolver: resolverFunc(func(b store.Binding) (subject.Subject, error) { return subject.Subject{Binding: b}, nil }),
		Routes:   []Route{{Prefix: "/fail", Flavour: failFlavour{}}},
		Limits:   Limits{RequestsPerSecond: 100, Burst: 100},
		Log:      slog.New(slog.NewTextHandler(&log, nil)),
	})
	w := get(h, "/fail")
	if w.Code != 500 || w.Body.String() != "the exchange failed\n" {
		t.Errorf("%d %q", w.Code, w.Body)
	}
	if l := log.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "sts unreachable") {
		t.Errorf("log: %s", l)
	}
}
