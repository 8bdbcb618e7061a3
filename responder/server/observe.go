package server

import (
	"strings"
	"time"
)

// Observer hears of what the handler does, for metrics. Its methods run on
// the request's goroutine: they must be cheap and never block.
type Observer interface {
	// Request is one request answered with code after d. flavour is a
	// route's Name, FlavourPublic or FlavourNone; endpoint is one of the
	// Endpoint constants. Neither is ever taken from the request, so a pod
	// sending endless paths adds no series.
	Request(flavour, endpoint string, code int, d time.Duration)
	// RateLimited is one request refused with 429.
	RateLimited()
}

// The flavours of requests no route takes.
const (
	FlavourPublic = "public" // a public document (Options.Public)
	FlavourNone   = "none"   // a path nothing serves
)

// Endpoints: what a request asked for, as metrics name it. A route's
// Endpoint func maps any path to one of these.
const (
	EndpointToken       = "token"       // an access token
	EndpointIdentity    = "identity"    // an ID token, or AWS's instance identity document
	EndpointEmail       = "email"       // a service account's email
	EndpointProject     = "project"     // the project's metadata
	EndpointInstance    = "instance"    // the instance's (node's) metadata
	EndpointCredentials = "credentials" // AWS role credentials
	EndpointRole        = "role"        // AWS: the role's name and instance profile
	EndpointSession     = "session"     // an IMDSv2 session token
	EndpointDocument    = "document"    // a public document
	EndpointOther       = "other"       // anything else
)

// observe tells the observer of one request answered after d. A public
// path counts as public whatever route takes its prefix, as serve answers
// it first.
func (h *Handler) observe(path string, rt *Route, w *Response, d time.Duration) {
	flavour, endpoint := FlavourNone, EndpointOther
	if _, ok := h.public[path]; ok {
		flavour, endpoint = FlavourPublic, EndpointDocument
	} else if rt != nil {
		flavour = rt.Name
		if rt.Endpoint != nil {
			endpoint = rt.Endpoint(path)
		}
	}
	h.observer.Request(flavour, endpoint, w.Status(), d)
}

// LimitedCallers is how many callers are rate limited now: their latest
// request, within CallerIdleTimeout, was refused.
func (h *Handler) LimitedCallers() int { return h.limits.limitedCallers(h.Now()) }

// PathUnder reports whether path is dir or a path under it: a route's
// Endpoint func's test.
func PathUnder(path, dir string) bool {
	rest, ok := strings.CutPrefix(path, dir)
	return ok && (rest == "" || rest[0] == '/')
}
