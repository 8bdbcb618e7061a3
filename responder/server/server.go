// Package server is metabind-responder's HTTP side, which knows no
// flavour: the http.Server's bounds and timeouts, the listen addresses
// (listenaddr.go, listencheck.go), and the Handler. The Handler sets each
// route's response headers (a cloud's clients see only its own), refuses
// what no flavour serves (proxy headers, methods a route does not take,
// bodies, odd paths), serves the public documents, routes by path prefix
// to a flavour,
// identifies the caller by the TCP peer address of its connection only (a
// store.View lookup), applies the per-caller rate limit (ratelimit.go),
// resolves the caller's subject, and logs one line per request. A token
// request reads: server (caller) -> subject.Resolver (subject) -> flavour
// -> credentials.
package server

import (
	"log/slog"
	"net/http"
	"time"
)

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
// at a time is cut off all the same. WriteTimeout stays above the
// flavours' long polls (gce.MaxLongPoll).
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 10 * time.Second
	IdleTimeout       = 90 * time.Second
)

// NewHTTPServer returns the HTTP server for h with the responder's size
// bounds and timeouts; its errors (bad requests, TLS probes) go to log at
// warning level. Callers may adjust the fields before serving.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
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
