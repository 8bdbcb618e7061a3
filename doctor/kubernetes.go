package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/metabind/metabind/kube"
	"github.com/metabind/metabind/responder"
)

// Clock skew against the API server beyond which tokens misbehave: a
// warning, then a failure.
const (
	skewWarn = 5 * time.Second
	skewFail = 30 * time.Second
)

// checkConfig: the responder's configuration parses as the responder
// parses it.
func checkConfig(_ context.Context, n *node) Result {
	cfg, err := n.loadConfig()
	switch {
	case errors.Is(err, errNoConfig):
		return skipped("no configuration file at %s (give --config)", n.ConfigFile)
	case err != nil:
		return failed("fix "+n.ConfigFile+": the responder refuses it too", "%v", err)
	}
	mode := "own issuer " + cfg.Issuer.URL
	if cfg.Kubernetes != nil {
		mode = "Kubernetes mode, node " + cfg.Node.Name
	}
	return ok("%s: %s, %d identity rules", n.ConfigFile, mode, len(cfg.Identities))
}

// kubeAPI is the node credential's client, from the kubernetes: section.
type kubeAPI struct {
	cfg  *responder.Config
	rest *rest.Config
	cs   kubernetes.Interface
}

// kubeClient returns the client, or the result to report instead: skipped
// without a kubernetes: section, failed when the credential cannot be
// loaded.
func (n *node) kubeClient() (*kubeAPI, *Result) {
	cfg, err := n.loadConfig()
	if err != nil || cfg.Kubernetes == nil {
		r := skipped("no kubernetes: section in %s (see config)", n.ConfigFile)
		return nil, &r
	}
	path := cfg.Kubernetes.Kubeconfig
	rc, err := clientcmd.BuildConfigFromFlags("", path) // "": the in-cluster config, as the responder
	if err != nil {
		r := failed("set kubernetes.kubeconfig in "+n.ConfigFile+" to the node's credential (the kubelet's kubeconfig), readable here",
			"credential %q: %v", path, err)
		return nil, &r
	}
	rc.Timeout = n.Timeout
	rc.UserAgent = "metabindctl doctor (node " + cfg.Node.Name + ")"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		r := failed("fix the kubeconfig "+path, "%v", err)
		return nil, &r
	}
	return &kubeAPI{cfg: cfg, rest: rc, cs: cs}, nil
}

// podsOnNode lists at most one pod of this node, as the responder's
// informer lists them.
func (k *kubeAPI) podsOnNode(ctx context.Context) (*corev1.PodList, error) {
	return k.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", k.cfg.Node.Name).String(),
		Limit:         1,
	})
}

// checkKubePods: the credential lists this node's pods.
func checkKubePods(ctx context.Context, n *node) Result {
	k, skip := n.kubeClient()
	if skip != nil {
		return *skip
	}
	pods, err := k.podsOnNode(ctx)
	if err != nil {
		return failed(fmt.Sprintf("use the node's credential (user system:node:%s, group system:nodes; Node authorizer on) and set node.name to the node's name in the API", k.cfg.Node.Name),
			"list pods with spec.nodeName=%s at %s: %v", k.cfg.Node.Name, k.rest.Host, err)
	}
	return ok("lists pods with spec.nodeName=%s at %s (%d seen, limit 1)", k.cfg.Node.Name, k.rest.Host, len(pods.Items))
}

// checkKubeTokens: the credential may request a token for each configured
// audience. With a pod on this node, a dry-run TokenRequest bound to it
// asks exactly what the responder asks (NodeRestriction's audience check
// included); without one, a SelfSubjectAccessReview of the audience verb
// NodeRestriction checks, cluster-wide.
func checkKubeTokens(ctx context.Context, n *node) Result {
	k, skip := n.kubeClient()
	if skip != nil {
		return *skip
	}
	auds := k.cfg.Kubernetes.Audiences
	if len(auds) == 0 {
		return skipped("no kubernetes.audiences configured in %s", n.ConfigFile)
	}
	grant := "grant the audience to system:nodes: add it to deploy/rbac.yaml's metabind:token-audiences and apply it"
	pods, err := k.podsOnNode(ctx)
	if err == nil && len(pods.Items) > 0 {
		pod := &pods.Items[0]
		var refused []string
		for _, aud := range auds {
			if err := k.dryRunToken(ctx, pod, aud); err != nil {
				refused = append(refused, fmt.Sprintf("%s: %v", aud, err))
			}
		}
		if len(refused) > 0 {
			return failed(grant, "dry-run TokenRequest for pod %s/%s refused: %s", pod.Namespace, pod.Name, firstFew(refused))
		}
		return ok("dry-run TokenRequest for pod %s/%s granted for %s", pod.Namespace, pod.Name, strings.Join(auds, ", "))
	}
	var refused []string
	for _, aud := range auds {
		allowed, reason, err := k.mayRequestAudience(ctx, aud)
		switch {
		case err != nil:
			refused = append(refused, fmt.Sprintf("%s: %v", aud, err))
		case !allowed:
			refused = append(refused, fmt.Sprintf("%s: not granted %s", aud, reason))
		}
	}
	if len(refused) > 0 {
		return failed(grant, "SelfSubjectAccessReview (no pod on this node for a dry-run TokenRequest): %s", firstFew(refused))
	}
	return ok("SelfSubjectAccessReview (no pod on this node for a dry-run TokenRequest): granted for %s cluster-wide", strings.Join(auds, ", "))
}

// dryRunToken asks for a token of pod's ServiceAccount, bound to pod, as the
// responder does, with dryRun=All: admission runs, no token is issued.
func (k *kubeAPI) dryRunToken(ctx context.Context, pod *corev1.Pod, aud string) error {
	secs := int64(kube.MinTokenLifetime / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{aud},
		ExpirationSeconds: &secs,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	_, err := k.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, kube.ServiceAccountName(pod), req,
		metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

// mayRequestAudience asks the authorizer whether the credential holds the
// grant NodeRestriction checks for a token audience (see deploy/rbac.yaml).
func (k *kubeAPI) mayRequestAudience(ctx context.Context, aud string) (bool, string, error) {
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "request-serviceaccounts-token-audience", Resource: aud},
	}}
	got, err := k.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	return got.Status.Allowed, got.Status.Reason, nil
}

// checkClockSkew compares the API server's Date header with the local
// clock, taken half way through the request.
func checkClockSkew(ctx context.Context, n *node) Result {
	k, skip := n.kubeClient()
	if skip != nil {
		return *skip
	}
	client, err := rest.HTTPClientFor(k.rest)
	if err != nil {
		return failed("fix the kubeconfig", "%v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(k.rest.Host, "/")+"/version", nil)
	if err != nil {
		return failed("fix the kubeconfig's server", "%v", err)
	}
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return failed("make the API server reachable from this node", "GET %s: %v", req.URL, err)
	}
	resp.Body.Close()
	local := sent.Add(time.Since(sent) / 2)
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return warned("", "the API server sent no usable Date header (%q)", resp.Header.Get("Date"))
	}
	// Date has whole seconds: up to 1 s of the difference is its rounding.
	skew := local.Sub(date).Round(time.Second)
	abs := max(skew, -skew)
	fix := "synchronise the node's clock (chrony, systemd-timesyncd): tokens' validity is judged by the cluster's clock"
	switch {
	case abs > skewFail:
		return failed(fix, "local clock is %v off the API server's (more than %v)", skew, skewFail)
	case abs > skewWarn:
		return warned(fix, "local clock is %v off the API server's (more than %v)", skew, skewWarn)
	}
	return ok("local clock within %v of the API server's (%v)", skewWarn, skew)
}
