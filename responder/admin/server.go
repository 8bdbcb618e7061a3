package admin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Server answers the kubelet's probes on the admin address:
//
//	GET /healthz  200 "ok" while the process serves (liveness: it depends on
//	              neither the store nor the API)
//	GET /readyz   200 when every check passes, else 503; one line per check
//	              ("[+]store ok", "[-]rules failed: ..."), then "readyz check
//	              passed" or "readyz check failed", as kube-apiserver's
//	              /readyz?verbose
//
// and what Handle adds (GET /metrics). It has a mux of its own: nothing of
// the metadata handler is reachable through it, nor the probes through the
// metadata address.
type Server struct {
	checks   []Check
	mux      *http.ServeMux
	srv      *http.Server
	requests atomic.Int64
}

// NewServer returns the admin server running checks at every /readyz.
func NewServer(checks []Check, log *slog.Logger) *Server {
	mux := http.NewServeMux()
	s := &Server{checks: checks, mux: mux}
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.requests.Add(1)
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// Handle serves pattern (as http.ServeMux takes it) with h on the admin
// address only; before Serve.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler serves the admin paths (for tests; Serve uses it).
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// Serve serves on ln until Shutdown (then http.ErrServerClosed).
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(ln) }

// Shutdown stops the server, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Requests counts the requests the server has received, any path.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Ready runs the checks: what /readyz would answer.
func (s *Server) Ready() ([]Result, bool) { return RunChecks(s.checks) }

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok\n")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	results, ready := s.Ready()
	var b strings.Builder
	for _, r := range results {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	code, verdict := http.StatusOK, "passed"
	if !ready {
		code, verdict = http.StatusServiceUnavailable, "failed"
	}
	fmt.Fprintf(&b, "readyz check %s\n", verdict)
	writeText(w, code, b.String())
}

func writeText(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprint(w, body)
}
