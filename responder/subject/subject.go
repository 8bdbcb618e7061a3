// Package subject turns the binding of a caller into its identity: the pod,
// its service account, the email and scopes a flavour shows, and what a
// credential source needs to know about the account. A Resolver does it;
// Static resolves by the configuration's identity rules. The server calls
// the resolver once per request, after the caller's binding is known and
// before any flavour runs, and maps its errors to answers.
package subject

import (
	"context"
	"errors"

	"github.com/metabind/metabind/store"
)

// Subject is the identity of one caller. Resolvers may share its slices and
// map between callers: nobody writes to them.
type Subject struct {
	// Binding is who is calling, as the runtime said at ADD.
	Binding store.Binding
	// Namespace, Pod and PodUID name the pod (static rules: the binding's).
	// A subject without PodUID gets no token: every token names its pod.
	Namespace, Pod, PodUID string
	// ServiceAccount is the Kubernetes service account's name (static
	// rules: the rule's serviceAccount).
	ServiceAccount string
	// Email is the identity's email as the GCE flavour shows it: the
	// account's, or GKE's workload identity pool name
	// (<project>.svc.id.goog) when there is none.
	Email string
	// EmailClaim is the email tokens carry (email claim; it also names the
	// party in azp and client_id): Email when it names an account, ""
	// when Email is only the pool's name.
	EmailClaim string
	// Scopes are the OAuth scopes the identity holds, in the configured
	// order.
	Scopes []string
	// Annotations are the account's own, for credential sources that
	// exchange it for a cloud's (the Kubernetes service account's
	// iam.gke.io/gcp-service-account, eks.amazonaws.com/role-arn). Static
	// rules have none; the pod's are in Binding.Annotations.
	Annotations map[string]string
}

// Resolver turns a binding into the caller's subject. Its errors are
// ErrNoIdentity, a *Refused, ErrUnavailable (each may be wrapped), or
// anything else, which the server answers with 500.
type Resolver interface {
	Resolve(ctx context.Context, b store.Binding) (Subject, error)
}

// ErrNoIdentity: the caller has no identity. The server answers 404 with
// this error's text, so SDKs fall back as they would off-cloud.
var ErrNoIdentity = errors.New("no identity for this pod")

// ErrUnavailable: the identity cannot be known now (say, the Kubernetes API
// is out of reach). The server answers 503 with Retry-After.
var ErrUnavailable = errors.New("identity not available yet")

// Refused is a caller the resolver turns away with a reason: the server
// answers Code (403 or 404; anything else but a 4xx counts as 403) and
// Reason as the body.
type Refused struct {
	Code   int
	Reason string
}

func (r *Refused) Error() string { return r.Reason }
