// Package kube is the node's view of the Kubernetes API, through the node's
// own credential (user system:node:<name>, group system:nodes): the pods
// scheduled on this node (a node-scoped informer), the ServiceAccounts they
// run as (cached GETs) and tokens bound to one of those pods (TokenRequest).
//
// The Node authorizer and the NodeRestriction admission plugin confine that
// credential to this node's pods: it lists and watches pods only with
// spec.nodeName=<node>, gets only the pods and ServiceAccounts related to the
// node, and requests tokens only bound to a pod on the node, for audiences
// granted to system:nodes (deploy/rbac.yaml). So a compromised node can mint
// tokens for its own pods' accounts and no others.
//
// Errors are ErrPodNotFound (the binding is stale), ErrServiceAccountNotFound,
// *ErrForbidden (the API's 403, with its reason) and ErrUnavailable (no
// answer in time); never a guess.
package kube

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Config says where the API is and which node this is.
type Config struct {
	// Kubeconfig is the path of a kubeconfig file; "" is the in-cluster
	// config. The node's own credential is the recommended one.
	Kubeconfig string
	// NodeName is the node's name in the API (its pods' spec.nodeName).
	NodeName string
	// TokenLifetime is the lifetime TokenRequest asks for when given none,
	// 10m..24h; 0 is 1h.
	TokenLifetime time.Duration
}

// Bounds of a TokenRequest's lifetime: the API server's minimum is 10
// minutes.
const (
	DefaultTokenLifetime = time.Hour
	MinTokenLifetime     = 10 * time.Minute
	MaxTokenLifetime     = 24 * time.Hour
)

const (
	// serviceAccountTTL bounds how long a ServiceAccount's annotations are
	// served from the cache: a change is seen within it.
	serviceAccountTTL = 30 * time.Second
	// requestTimeout bounds every request to the API, so an unreachable API
	// is ErrUnavailable in bounded time.
	requestTimeout = 5 * time.Second
	// forbiddenGrace: how long a 403 to a pod GET waits for the informer
	// (and the API's Node authorizer, which learns of pods from its own
	// watch) to catch up with a pod created a moment ago.
	forbiddenGrace = time.Second
	// goneTTL: how long the UID of a pod the informer saw deleted is
	// remembered, so a request for it is ErrPodNotFound rather than the 403
	// the API answers for a pod it does not relate to this node.
	goneTTL = 10 * time.Minute
)

// Client is the node's client. Its methods are safe for concurrent use.
// Objects it returns are shared with its caches: do not modify them.
type Client struct {
	cs       kubernetes.Interface
	node     string
	lifetime time.Duration
	log      *slog.Logger
	timeout  time.Duration // of each request

	informer cache.SharedIndexInformer
	started  atomic.Bool

	mu        sync.Mutex
	goneFns   []func(uid string)
	gone      map[string]time.Time // UIDs of this node's pods seen deleted
	prunedAt  time.Time
	changed   chan struct{} // closed and replaced on every informer add or update
	saTTL     time.Duration
	sas       map[string]saEntry
	saPruned  time.Time
	saFlights singleflight.Group

	// counters for tests: requests sent to the API
	podGets   atomic.Int64
	podGraces atomic.Int64 // 403s to a pod GET given forbiddenGrace
	saFetches atomic.Int64
}

// New returns a client of the API named by cfg. It sends nothing until
// Start or a call.
func New(cfg Config, log *slog.Logger) (*Client, error) {
	if cfg.NodeName == "" {
		return nil, fmt.Errorf("kubernetes: the node name is required")
	}
	if cfg.TokenLifetime == 0 {
		cfg.TokenLifetime = DefaultTokenLifetime
	}
	if err := checkLifetime(cfg.TokenLifetime); err != nil {
		return nil, fmt.Errorf("kubernetes: tokenLifetime: %w", err)
	}
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	rc.UserAgent = "metabind (node " + cfg.NodeName + ")"
	rc.ContentType = runtime.ContentTypeProtobuf
	rc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	// Every TokenRequest and cold ServiceAccount is one request: the
	// default 5/s would queue a node's burst of new pods.
	rc.QPS, rc.Burst = 50, 100
	rc.WarningHandlerWithContext = warningLogger{log}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client: %w", err)
	}
	return newClient(cs, cfg, log), nil
}

func newClient(cs kubernetes.Interface, cfg Config, log *slog.Logger) *Client {
	c := &Client{
		cs:       cs,
		node:     cfg.NodeName,
		lifetime: cfg.TokenLifetime,
		log:      log,
		timeout:  requestTimeout,
		gone:     map[string]time.Time{},
		changed:  make(chan struct{}),
		saTTL:    serviceAccountTTL,
		sas:      map[string]saEntry{},
	}
	c.informer = newPodInformer(cs, cfg.NodeName)
	c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.notify() },
		UpdateFunc: c.podUpdated,
		DeleteFunc: c.podDeleted,
	})
	return c
}

// restConfig is the client configuration of the kubeconfig file at path, or
// the in-cluster one (the pod's ServiceAccount) when path is "".
func restConfig(path string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if path == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", path)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client config: %w", err)
	}
	return rest.CopyConfig(rc), nil
}

func checkLifetime(d time.Duration) error {
	if d < MinTokenLifetime || d > MaxTokenLifetime {
		return fmt.Errorf("%v is outside %v..%v", d, MinTokenLifetime, MaxTokenLifetime)
	}
	return nil
}

// warningLogger logs the API's warning headers (a deprecated field, ...).
type warningLogger struct{ log *slog.Logger }

func (w warningLogger) HandleWarningHeaderWithContext(_ context.Context, code int, agent, text string) {
	if code == 299 && text != "" {
		w.log.Warn("kubernetes API warning", "agent", agent, "warning", text)
	}
}

// ServiceAccountName is the ServiceAccount a pod runs as: its
// spec.serviceAccountName, "default" when empty.
func ServiceAccountName(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName == "" {
		return "default"
	}
	return pod.Spec.ServiceAccountName
}
