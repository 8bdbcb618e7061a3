package responder

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/metabind/metabind/gcp"
	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/responder/flavour/gce"
	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/responder/metrics"
	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/responder/subject"
)

// Responder is the handler made from a Config: the server identifies
// callers by lookup and gives each binding the identity of the first rule
// that matches it, the GCE flavour answers under /computeMetadata with
// tokens from the node's own issuer through one cache, and the probe and
// the issuer's OIDC documents are public.
type Responder struct {
	server   *server.Handler
	subjects subject.Resolver
	source   credentials.Source
	tokens   *credentials.Cache
	gce      *gce.Flavour
	// audiences are prefetched for every new binding (Kubernetes mode).
	audiences []string
	// prefetchAccess warms the access token of a new binding's account
	// (a cloud exchange), so its pod's first request is answered from
	// the cache.
	prefetchAccess bool
	// awsCreds caches role credentials (aws: configured), warmed for a
	// new binding whose account names a role.
	awsCreds *credentials.Cache
	// awsKey signs IMDSv2 session tokens (aws: configured).
	awsKey  []byte
	metrics *metrics.Metrics // nil: none
}

// New assembles the responder for cfg (from ParseConfig or LoadConfig),
// signing with iss. A nil log discards. In Kubernetes mode (cfg.Kubernetes
// set) use NewKubernetes.
func New(cfg *Config, lookup server.BindingLookup, iss *issuer.Issuer, log *slog.Logger, opts ...Option) (*Responder, error) {
	return newStandalone(cfg, lookup, iss, log, newOptions(opts))
}

// newStandalone is New; o.kept holds what a reload takes over (live.go).
func newStandalone(cfg *Config, lookup server.BindingLookup, iss *issuer.Issuer, log *slog.Logger, o options) (*Responder, error) {
	num, _ := strconv.ParseUint(string(cfg.Project.NumericID), 10, 64) // validated
	source := credentials.NewOwnIssuer(iss, cfg.Node.Name, credentials.ComputeEngineClaims{
		ProjectID:     cfg.Project.ID,
		ProjectNumber: num,
		Zone:          cfg.Node.Zone,
		InstanceID:    strconv.FormatUint(gce.InstanceID(cfg.Node.Name), 10),
		InstanceName:  cfg.Node.Name,
	})
	var src credentials.Source = source
	if cfg.GCP != nil {
		g, err := newGCP(cfg, source, o.metrics)
		if err != nil {
			return nil, err
		}
		src = g
	}
	r, err := assemble(cfg, lookup, iss, subject.NewStatic(cfg.Identities, cfg.Project.ID), src, source, log, o)
	if err != nil {
		return nil, err
	}
	r.prefetchAccess = cfg.GCP != nil
	return r, nil
}

// newGCP is the GCP exchange of cfg, with subject tokens from subjects;
// its calls to Google are recorded in m (nil: not).
func newGCP(cfg *Config, subjects credentials.SubjectTokens, m *metrics.Metrics) (*credentials.GCP, error) {
	client, err := gcp.New(*cfg.GCP)
	if err != nil {
		return nil, fmt.Errorf("gcp: %w", err)
	}
	var x credentials.Exchanger = client
	if m != nil {
		x = timedExchanger{client, m}
	}
	return credentials.NewGCP(x, subjects, cfg.GCP.Audience(), time.Hour), nil
}

// KubernetesAPI is what Kubernetes mode needs of the API (kube.Client).
type KubernetesAPI interface {
	subject.API
	credentials.TokenAPI
}

// NewKubernetes assembles the responder in Kubernetes mode: a pod's
// identity is its service account, as api says, and its ID tokens are the
// cluster's, minted by TokenRequest with the node's credential. The node's
// own issuer still publishes its documents, and mints nothing for pods.
func NewKubernetes(cfg *Config, lookup server.BindingLookup, iss *issuer.Issuer, api KubernetesAPI, log *slog.Logger, opts ...Option) (*Responder, error) {
	return newKubernetes(cfg, lookup, iss, api, log, newOptions(opts))
}

// newKubernetes is NewKubernetes; o.kept holds what a reload takes over
// (live.go).
func newKubernetes(cfg *Config, lookup server.BindingLookup, iss *issuer.Issuer, api KubernetesAPI, log *slog.Logger, o options) (*Responder, error) {
	var tokens credentials.TokenAPI = api
	if o.metrics != nil {
		tokens = timedTokenAPI{api, o.metrics}
	}
	k8s := credentials.NewKubernetes(tokens, cfg.Kubernetes.Audiences, cfg.Kubernetes.Lifetime)
	if cfg.GCP != nil {
		// As GKE: the pod's Google credentials, for its service account's
		// pod-bound token exchanged at Google.
		g, err := newGCP(cfg, k8s, o.metrics)
		if err != nil {
			return nil, err
		}
		r, err := assemble(cfg, lookup, iss, subject.NewKubernetes(api, cfg.Project.ID, cfg.Identities), g, k8s, log, o)
		if err != nil {
			return nil, err
		}
		r.prefetchAccess = true
		return r, nil
	}
	r, err := assemble(cfg, lookup, iss, subject.NewKubernetes(api, cfg.Project.ID, cfg.Identities), k8s, k8s, log, o)
	if err != nil {
		return nil, err
	}
	r.audiences = cfg.Kubernetes.Audiences
	return r, nil
}

// assemble builds the responder; web mints the web identity tokens a
// cloud exchanges (the AWS flavours'). What k holds (a reload's) is taken
// over rather than built: the token caches with their sources.
func assemble(cfg *Config, lookup server.BindingLookup, iss *issuer.Issuer, subjects subject.Resolver, source credentials.Source,
	web credentials.SubjectTokens, log *slog.Logger, o options) (*Responder, error) {
	r := &Responder{subjects: subjects, source: source, metrics: o.metrics}
	if k := o.kept; k != nil && k.tokens != nil {
		r.tokens, r.source = k.tokens, k.source
	} else {
		r.tokens = credentials.NewCache(source, log)
		observeCache(r.tokens, source, o.metrics)
	}
	var cluster gce.Cluster
	if c := cfg.Cluster; c != nil {
		cluster = gce.Cluster{Name: c.Name, Location: c.Location, UID: c.UID}
	}
	r.gce = gce.New(gce.Config{
		ProjectID:        cfg.Project.ID,
		NumericProjectID: string(cfg.Project.NumericID),
		Instance:         cfg.Node.Name,
		Zone:             cfg.Node.Zone,
		Cluster:          cluster,
	}, r.tokens)
	routes := []server.Route{r.gce.Route()}
	if cfg.AWS != nil {
		aws, err := r.awsRoutes(cfg, web, log, o.kept)
		if err != nil {
			return nil, err
		}
		routes = append(routes, aws...)
	}
	var observer server.Observer
	if o.metrics != nil {
		lookup = timedLookup{lookup, o.metrics}
		observer = o.metrics
	}
	r.server = server.New(server.Options{
		Lookup:   lookup,
		Resolver: r.subjects,
		Routes:   routes,
		Public:   publicDocuments(iss),
		Header:   gce.ResponseHeader(),
		Limits:   server.Limits{RequestsPerSecond: *cfg.Limits.RequestsPerSecond, Burst: *cfg.Limits.Burst},
		Log:      log,
		Requests: cfg.Log.requestLog(),
		Observer: observer,
	})
	o.metrics.LimitedCallers(r.server.LimitedCallers)
	return r, nil
}

func (r *Responder) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.server.ServeHTTP(w, req) }

// publicDocuments are GCE's probe and the issuer's OIDC documents, the
// latter at the root and under the issuer URL's path.
func publicDocuments(iss *issuer.Issuer) map[string]func() server.Document {
	cacheControl := "max-age=" + strconv.Itoa(int(issuer.OIDCMaxAge/time.Second))
	discovery := server.Document{Body: iss.DiscoveryJSON(), ContentType: issuer.DiscoveryContentType, CacheControl: cacheControl}
	docs := map[string]func() server.Document{gce.ProbePath: gce.Probe}
	for _, prefix := range []string{"", iss.PathPrefix()} {
		docs[prefix+issuer.DiscoveryPath] = func() server.Document { return discovery }
		docs[prefix+issuer.JWKSPath] = func() server.Document { // follows key rotations
			return server.Document{Body: iss.JWKSJSON(), ContentType: issuer.JWKSContentType, CacheControl: cacheControl}
		}
	}
	return docs
}
