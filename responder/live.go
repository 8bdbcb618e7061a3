package responder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/responder/subject"
	"github.com/metabind/metabind/store"
)

// BindingView is what Live reads of the binding store (*store.View): a
// caller's binding, and all of them, whose identities a reload compares.
type BindingView interface {
	server.BindingLookup
	Bindings() (map[netip.Addr]store.Binding, error)
}

var _ BindingView = (*store.View)(nil)

// Live is the responder of the configuration in force, for the HTTP
// server's Handler: Reload builds the responder of a new configuration and
// swaps it in at once. Requests in flight finish with the responder they
// started with; connections are not touched, so a pod's keep-alive
// connection gets its next answer from the new one.
//
// What decides a pod's tokens survives a reload that leaves it alone: the
// token caches (and the IMDSv2 session key) are taken over when the
// configuration of their sources is unchanged (sourceKey), and then only
// the tokens of pods whose identity the new configuration changes are
// forgotten. The rate limits' buckets start afresh.
type Live struct {
	cur atomic.Pointer[Responder]

	view BindingView
	iss  *issuer.Issuer
	api  KubernetesAPI // nil: standalone
	log  *slog.Logger
	opts options // every generation's (metrics)

	mu  sync.Mutex // one reload at a time
	cfg *Config    // in force
}

// NewLive assembles the responder for cfg as New does (api nil) or as
// NewKubernetes does (api set), ready to Reload.
func NewLive(cfg *Config, view BindingView, iss *issuer.Issuer, api KubernetesAPI, log *slog.Logger, opts ...Option) (*Live, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Live{view: view, iss: iss, api: api, log: log, cfg: cfg, opts: newOptions(opts)}
	r, err := l.build(cfg, nil)
	if err != nil {
		return nil, err
	}
	l.cur.Store(r)
	return l, nil
}

func (l *Live) build(cfg *Config, k *kept) (*Responder, error) {
	o := l.opts
	o.kept = k
	if l.api != nil {
		return newKubernetes(cfg, l.view, l.iss, l.api, l.log, o)
	}
	return newStandalone(cfg, l.view, l.iss, l.log, o)
}

// Current is the responder in force.
func (l *Live) Current() *Responder { return l.cur.Load() }

func (l *Live) ServeHTTP(w http.ResponseWriter, r *http.Request) { l.cur.Load().ServeHTTP(w, r) }

// ForgetPod drops the cached tokens of the pod with uid from the responder
// in force (kube's OnPodGone).
func (l *Live) ForgetPod(uid string) { l.cur.Load().ForgetPod(uid) }

// Watch is Responder.Watch for whichever responder is in force.
func (l *Live) Watch(ctx context.Context, view *store.View, log *slog.Logger) {
	watch(ctx, view, log, l.cur.Load)
}

// RestartError is a reload refused because a setting changed that only a
// restart applies.
type RestartError struct{ Keys []string }

func (e *RestartError) Error() string {
	return fmt.Sprintf("%s changed: restart metabind-responder to apply it; the running configuration stays in force", strings.Join(e.Keys, ", "))
}

// Reload is what one Reload did.
type Reload struct {
	// Changed are the configuration's top-level keys that differ ("limits",
	// "identities"); none: the new responder is the same as the old.
	Changed []string
	// TokensKept: the token caches were taken over.
	TokensKept bool
	// Forgotten are the pods whose tokens were dropped because their
	// identity changed.
	Forgotten int
}

// Reload puts cfg (validated, from LoadNodeConfig) in force. A change the
// running process cannot make (restartKeys) is refused with a
// *RestartError, and a responder that cannot be built with its error; in
// both cases the old configuration stays in force.
func (l *Live) Reload(ctx context.Context, cfg *Config) (Reload, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.cfg
	if keys := restartKeys(old, cfg); len(keys) > 0 {
		return Reload{}, &RestartError{Keys: keys}
	}
	var done Reload
	done.Changed = changedKeys(old, cfg)
	prev := l.cur.Load()
	var k *kept
	if sourceKey(old) == sourceKey(cfg) {
		k = &kept{tokens: prev.tokens, source: prev.source}
		if old.AWS != nil && cfg.AWS != nil && awsKey(old) == awsKey(cfg) {
			k.awsCreds = prev.awsCreds
		}
		done.TokensKept = true
	}
	if old.AWS != nil && cfg.AWS != nil {
		if k == nil {
			k = &kept{}
		}
		k.awsKey = prev.awsKey
	}
	next, err := l.build(cfg, k)
	if err != nil {
		return Reload{}, err
	}
	if done.TokensKept {
		done.Forgotten = forgetChanged(ctx, l.view, prev, next)
	}
	l.cur.Store(next)
	l.cfg = cfg
	return done, nil
}

// kept is what a new responder takes over from the one it replaces; a nil
// field is built anew.
type kept struct {
	tokens   *credentials.Cache
	source   credentials.Source // tokens' source
	awsCreds *credentials.Cache
	awsKey   []byte
}

// restartKeys are the settings of cfg the running process cannot change
// from old: the issuer (its key and URL are loaded once), the node's name
// and the Kubernetes API client (mode, credential and token lifetime).
func restartKeys(old, cfg *Config) []string {
	var keys []string
	if !sameJSON(old.Issuer, cfg.Issuer) {
		keys = append(keys, "issuer")
	}
	if old.Node.Name != cfg.Node.Name {
		keys = append(keys, "node.name")
	}
	switch ok, nk := old.Kubernetes, cfg.Kubernetes; {
	case (ok == nil) != (nk == nil):
		keys = append(keys, "kubernetes (present or not)")
	case ok != nil && ok.Kubeconfig != nk.Kubeconfig:
		keys = append(keys, "kubernetes.kubeconfig")
	case ok != nil && ok.Lifetime != nk.Lifetime:
		keys = append(keys, "kubernetes.tokenLifetime")
	}
	return keys
}

// sourceKey is everything of a configuration the token source's tokens
// depend on: the claims the node's issuer puts in (project, node), the
// Kubernetes token requests (audiences) and the GCP exchange. Not the
// identity rules: a cached token is keyed by the identity it was minted
// for, so a rule change cannot serve it to another identity.
func sourceKey(c *Config) string {
	return jsonString(struct {
		Project    ProjectConfig
		Node       NodeConfig
		Issuer     any
		Kubernetes any
		GCP        any
	}{c.Project, c.Node, c.Issuer, c.Kubernetes, c.GCP})
}

// awsKey is what the AWS role credentials depend on besides sourceKey
// (their web identity tokens): the STS client's configuration.
func awsKey(c *Config) string { return jsonString(c.AWS.Client) }

// changedKeys are the top-level keys of Config whose values differ.
func changedKeys(old, cfg *Config) []string {
	var keys []string
	t := reflect.TypeFor[Config]()
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(cfg).Elem()
	for i := range t.NumField() {
		if !sameJSON(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			keys = append(keys, name)
		}
	}
	return keys
}

func sameJSON(a, b any) bool { return jsonString(a) == jsonString(b) }

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("unmarshalable: %v", err) // never equal to a real value's JSON
	}
	return string(b)
}

// identityWait bounds how long a reload spends resolving the bindings'
// identities (Kubernetes mode may ask the API).
const identityWait = 5 * time.Second

// forgetChanged drops, from the caches next took over from prev, the
// tokens of every bound pod whose identity next resolves differently (or
// not at all), and returns how many pods that was. A binding prev could
// not resolve has nothing cached.
func forgetChanged(ctx context.Context, view BindingView, prev, next *Responder) int {
	bindings, err := view.Bindings()
	if err != nil {
		return 0 // nothing read, nothing forgotten: the tokens stay keyed by identity
	}
	ctx, cancel := context.WithTimeout(ctx, identityWait)
	defer cancel()
	n := 0
	for _, b := range bindings {
		if b.PodUID == "" {
			continue // gets no token
		}
		was, err := prev.subjects.Resolve(ctx, b)
		if err != nil {
			continue
		}
		now, err := next.subjects.Resolve(ctx, b)
		var refused *subject.Refused
		switch {
		case err == nil && reflect.DeepEqual(was, now):
			continue
		case err != nil && !errors.Is(err, subject.ErrNoIdentity) && !errors.As(err, &refused):
			continue // cannot tell now (the API out of reach); the tokens stay keyed by identity
		}
		next.ForgetPod(b.PodUID)
		n++
	}
	return n
}
