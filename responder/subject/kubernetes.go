package subject

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"

	corev1 "k8s.io/api/core/v1"

	"github.com/metabind/metabind/kube"
	"github.com/metabind/metabind/store"
)

// RoleARNAnnotation names the IAM role a Kubernetes service account stands
// for (EKS IRSA); a static rule's awsRoleArn is carried as if annotated.
const RoleARNAnnotation = "eks.amazonaws.com/role-arn"

// GCPServiceAccountAnnotation names the Google service account a
// Kubernetes service account stands for (GKE Workload Identity).
const GCPServiceAccountAnnotation = "iam.gke.io/gcp-service-account"

// API is the part of the Kubernetes client the resolver uses (kube.Client).
type API interface {
	Pod(ctx context.Context, namespace, name, uid string) (*corev1.Pod, error)
	ServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error)
}

var _ API = (*kube.Client)(nil)

// Kubernetes resolves a binding to the pod's Kubernetes service account:
// the binding says which pod is calling (namespace, name and UID, as the
// runtime told the plugin), the API says which account it runs as, and
// the account's annotations which cloud identities it stands for. The
// email served is the account's iam.gke.io/gcp-service-account, or
// <project>.svc.id.goog as on GKE. Identity rules, when given, only narrow
// who is served (and set the scopes); the pod's account is still the API's.
type Kubernetes struct {
	api       API
	projectID string
	narrow    *Static // nil: every pod with an account is served
}

var _ Resolver = (*Kubernetes)(nil)

// NewKubernetes resolves through api; rules (may be empty) narrow who is
// served.
func NewKubernetes(api API, projectID string, rules []Rule) *Kubernetes {
	k := &Kubernetes{api: api, projectID: projectID}
	if len(rules) > 0 {
		k.narrow = NewStatic(rules, projectID)
	}
	return k
}

// Resolve looks the binding's pod up by its UID (never by its address or
// name alone: a pod deleted and recreated under its name is another pod)
// and its service account.
func (k *Kubernetes) Resolve(ctx context.Context, b store.Binding) (Subject, error) {
	if b.PodUID == "" || b.Namespace == "" || b.Pod == "" {
		return Subject{}, ErrNoIdentity // not a Kubernetes pod, or a runtime that gave no UID
	}
	scopes := []string{DefaultScope}
	var rule *Rule
	if k.narrow != nil {
		i := k.narrow.Match(b)
		if i < 0 {
			return Subject{}, ErrNoIdentity
		}
		rule = &k.narrow.rules[i]
		if len(rule.Scopes) > 0 {
			scopes = rule.Scopes
		}
	}
	pod, err := k.api.Pod(ctx, b.Namespace, b.Pod, b.PodUID)
	if err != nil {
		return Subject{}, APIError(err)
	}
	ksa := kube.ServiceAccountName(pod)
	if rule != nil && rule.ServiceAccount != "" && rule.ServiceAccount != ksa {
		return Subject{}, ErrNoIdentity // the rule serves another account of the namespace
	}
	sa, err := k.api.ServiceAccount(ctx, pod.Namespace, ksa)
	if err != nil {
		return Subject{}, APIError(err)
	}
	s := Subject{
		Binding:        b,
		Namespace:      pod.Namespace,
		Pod:            pod.Name,
		PodUID:         string(pod.UID),
		ServiceAccount: ksa,
		Email:          k.projectID + WorkloadIdentitySuffix,
		Scopes:         scopes,
		Annotations:    sa.Annotations,
	}
	if gsa := sa.Annotations[GCPServiceAccountAnnotation]; gsa != "" {
		if !serviceAccountEmail.MatchString(gsa) {
			return Subject{}, &Refused{Code: http.StatusForbidden, Reason: fmt.Sprintf(
				"service account %s/%s: annotation %s is %q, not a Google service account email", pod.Namespace, ksa, GCPServiceAccountAnnotation, gsa)}
		}
		s.Email, s.EmailClaim = gsa, gsa
	}
	return s, nil
}

// serviceAccountEmail is what an annotation naming a Google service account
// may hold: anyone who can edit the ServiceAccount writes it, and it ends up
// in URLs (IAM Credentials) and the metadata tree's paths.
var serviceAccountEmail = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,99}@[a-z0-9][a-z0-9.-]{0,99}$`)

// APIError maps the Kubernetes client's errors to the server's answers: a stale
// binding (pod gone or replaced) is 404, the API's refusal 403 with its
// reason, an API out of reach 503. Never a guess.
func APIError(err error) error {
	var forbidden *kube.ErrForbidden
	switch {
	case errors.Is(err, kube.ErrPodNotFound), errors.Is(err, kube.ErrServiceAccountNotFound):
		return &Refused{Code: http.StatusNotFound, Reason: err.Error()}
	case errors.As(err, &forbidden):
		return &Refused{Code: http.StatusForbidden, Reason: forbidden.Reason}
	case errors.Is(err, kube.ErrUnavailable):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	default:
		return err
	}
}
