// Package gce is the GCE flavour: the metadata API v1 under
// /computeMetadata, as Google's clients expect it on a VM. The static
// metadata tree each identity sees is tree.go; the service accounts'
// token and identity endpoints, which ask a credentials.Source, are
// tokens.go; this file routes a request within the tree and holds
// wait_for_change long polls.
package gce

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/responder/server"
)

// Content types as GCE's metadata server sends them. Python's google-auth
// decodes a body only when the type is exactly application/json.
const (
	textType = "application/text"
	jsonType = "application/json"
)

const (
	computeMetadataPath = "/computeMetadata"
	v1Path              = "/computeMetadata/v1"
	serviceAccountsPath = v1Path + "/instance/service-accounts"
	defaultAccount      = "default"
)

// Prefix is the flavour's route.
const Prefix = computeMetadataPath

// MaxLongPoll caps a wait_for_change request; it stays below the server's
// write timeout. Nothing the responder serves changes while it runs, so a
// long poll only paces clients that subscribe.
const MaxLongPoll = 8 * time.Second

// Header values set on every response of their kind. They are assigned to
// response headers as they are, not copied, so nothing may write to their
// elements; each has len == cap, so an Add copies before appending.
var (
	textTypeHeader = []string{textType}
	jsonTypeHeader = []string{jsonType}
	noStoreHeader  = []string{"no-store"}
)

// ResponseHeader is what GCE's metadata server sets on every response:
// Metadata-Flavor, which its clients detect it by, and Server.
func ResponseHeader() http.Header {
	return http.Header{"Metadata-Flavor": {"Google"}, "Server": {ServerName}}
}

// ServerName is the Server header of GCE's metadata server.
const ServerName = "Metadata Server for VM"

// rootBody is what GET / answers: Go's OnGCE probes / without the
// Metadata-Flavor header, Python's ping with it.
const rootBody = "computeMetadata/\n"

// ProbePath is where GCE clients probe for a metadata server.
const ProbePath = "/"

// Probe is what they get there: a public document, served before any
// caller lookup.
func Probe() server.Document {
	return server.Document{Body: []byte(rootBody), ContentType: textType}
}

// Config is what the metadata tree says about the node and its project.
type Config struct {
	ProjectID        string
	NumericProjectID string // decimal digits
	Instance         string // the node's name
	Zone             string
	Cluster          Cluster
}

// Cluster is the Kubernetes cluster the node belongs to, served as GKE's
// metadata server does: instance/attributes/cluster-name,
// cluster-location and cluster-uid, each when set. The zero Cluster
// serves none: instance/attributes/ is then empty, as on a VM without
// custom metadata.
type Cluster struct {
	Name     string
	Location string // a region or zone
	UID      string
}

// Flavour serves the GCE metadata API v1 to callers with an identity, and
// their tokens from creds.
type Flavour struct {
	// Now is the flavour's clock (expires_in) and MaxLongPoll the longest
	// wait_for_change; tests replace them before first use.
	Now         func() time.Time
	MaxLongPoll time.Duration

	cfg     Config
	creds   credentials.Source
	views   views
	buffers sync.Pool // of *[]byte: access token responses being written
}

var _ server.Flavour = (*Flavour)(nil)

// New serves cfg's metadata and the tokens of creds.
func New(cfg Config, creds credentials.Source) *Flavour {
	return &Flavour{Now: time.Now, MaxLongPoll: MaxLongPoll, cfg: cfg, creds: creds}
}

// Admit wants the Metadata-Flavor header, once, as Google's clients send
// it.
func (f *Flavour) Admit(w *server.Response, r *http.Request) bool {
	if v := r.Header.Values("Metadata-Flavor"); len(v) != 1 || v[0] != "Google" {
		w.Forbidden("missing required header: Metadata-Flavor: Google")
		return false
	}
	return true
}

// Serve answers a /computeMetadata path from the caller's view, or its
// service account's token and identity endpoints.
func (f *Flavour) Serve(w *server.Response, r *http.Request, q url.Values, c server.Caller) {
	s := &c.Subject
	v := f.views.get(&f.cfg, s.Email, s.Scopes)
	p := r.URL.Path
	key := strings.TrimSuffix(p, "/")
	if e := v.entries[key]; e != nil {
		if !e.dir && key != p {
			w.NotFound()
			return
		}
		f.writeEntry(w, r, q, e)
		return
	}
	rest, ok := strings.CutPrefix(p, serviceAccountsPath+"/")
	if !ok {
		w.NotFound()
		return
	}
	acct, leaf, _ := strings.Cut(rest, "/")
	if acct != defaultAccount && acct != v.email {
		w.NotFound()
		return
	}
	if leaf != "token" && leaf != "identity" {
		w.NotFound()
		return
	}
	// Every token names the pod it was issued to (kubernetes.io.pod.uid),
	// so a relying party can tell a pod from its successor of the same
	// name. A binding without a pod UID cannot be bound: no token.
	if s.PodUID == "" {
		w.NotFound()
		return
	}
	if leaf == "token" {
		f.serveToken(w, r, q, s, v)
	} else {
		f.serveIdentity(w, r, q, s)
	}
}

func (f *Flavour) writeEntry(w *server.Response, r *http.Request, q url.Values, e *entry) {
	b := e.text
	switch alt := q.Get("alt"); {
	case e.dir && strings.EqualFold(q.Get("recursive"), "true"):
		b = e.json // alt=text on a tree still answers JSON
	case alt == "json" && e.dir:
		b = e.list
	case alt == "json":
		b = e.json
	case alt != "" && alt != "text":
		w.BadRequest("alt must be json or text")
		return
	}
	if strings.EqualFold(q.Get("wait_for_change"), "true") {
		if ok := f.longPoll(w, r, q, b.etag); !ok {
			return
		}
	}
	hdr := w.Header()
	hdr["Content-Type"] = b.ctypeHeader
	hdr["Etag"] = b.etagHeader
	w.Write(b.data)
}

// longPoll holds a wait_for_change request while the value's ETag is
// last_etag (or none was given), for timeout_sec capped at MaxLongPoll.
func (f *Flavour) longPoll(w *server.Response, r *http.Request, q url.Values, etag string) bool {
	wait := f.MaxLongPoll
	if s := q.Get("timeout_sec"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			w.BadRequest("timeout_sec must be a positive integer")
			return false
		}
		if d := time.Duration(n) * time.Second; d < wait {
			wait = d
		}
	}
	if last := q.Get("last_etag"); last != "" && last != etag {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
	return true
}
