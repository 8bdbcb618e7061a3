package subject

import (
	"context"
	"path"

	"github.com/metabind/metabind/store"
)

// DefaultScope is what a rule without scopes grants.
const DefaultScope = "https://www.googleapis.com/auth/cloud-platform"

// WorkloadIdentitySuffix forms the account email served for a rule
// without email: <project.id>.svc.id.goog, as on GKE.
const WorkloadIdentitySuffix = ".svc.id.goog"

// Rule grants an identity to the pods it matches: one entry of the
// configuration's identities. Rules are tried in order and the first match
// wins; a pod no rule matches gets none.
type Rule struct {
	Namespace string `json:"namespace"`
	// Pod is a path.Match glob on the pod name; empty matches any pod.
	Pod            string `json:"pod,omitempty"`
	ServiceAccount string `json:"serviceAccount"`
	// Email is the account email served and put in the tokens' email
	// claim. When empty, <project.id>.svc.id.goog is served (the GKE
	// workload identity convention) and tokens carry no email claim.
	Email  string   `json:"email,omitempty"`
	Scopes []string `json:"scopes,omitempty"`
	// AWSRoleARN is the IAM role the pods assume with the aws: section
	// (standalone mode; in Kubernetes mode the service account's
	// eks.amazonaws.com/role-arn annotation).
	AWSRoleARN string `json:"awsRoleArn,omitempty"`
}

// Matches reports whether the rule grants its identity to the pod of b.
// A binding without a namespace (not a Kubernetes pod) matches nothing.
func (r *Rule) Matches(b store.Binding) bool {
	if b.Namespace == "" || b.Namespace != r.Namespace {
		return false
	}
	if r.Pod == "" {
		return true
	}
	ok, err := path.Match(r.Pod, b.Pod)
	return err == nil && ok
}

// AccountEmail is the email served for the rule in project projectID.
func (r *Rule) AccountEmail(projectID string) string {
	if r.Email != "" {
		return r.Email
	}
	return projectID + WorkloadIdentitySuffix
}

// Static resolves by identity rules (validated, as the configuration does).
type Static struct {
	rules       []Rule
	emails      []string            // AccountEmail of each rule
	annotations []map[string]string // each rule's awsRoleArn as RoleARNAnnotation
}

var _ Resolver = (*Static)(nil)

// NewStatic resolves by rules, serving <projectID>.svc.id.goog for those
// without email.
func NewStatic(rules []Rule, projectID string) *Static {
	s := &Static{rules: rules}
	for i := range rules {
		s.emails = append(s.emails, rules[i].AccountEmail(projectID))
		var ann map[string]string
		if rules[i].AWSRoleARN != "" {
			ann = map[string]string{RoleARNAnnotation: rules[i].AWSRoleARN}
		}
		s.annotations = append(s.annotations, ann)
	}
	return s
}

// Match returns the index of the first rule that matches b, or -1: there
// is no default identity.
func (s *Static) Match(b store.Binding) int {
	for i := range s.rules {
		if s.rules[i].Matches(b) {
			return i
		}
	}
	return -1
}

// Resolve gives the pod of b the identity of the first rule that matches
// it, or ErrNoIdentity.
func (s *Static) Resolve(_ context.Context, b store.Binding) (Subject, error) {
	i := s.Match(b)
	if i < 0 {
		return Subject{}, ErrNoIdentity
	}
	r := &s.rules[i]
	return Subject{
		Binding:        b,
		Namespace:      b.Namespace,
		Pod:            b.Pod,
		PodUID:         b.PodUID,
		ServiceAccount: r.ServiceAccount,
		Email:          s.emails[i],
		EmailClaim:     r.Email,
		Scopes:         r.Scopes,
		Annotations:    s.annotations[i],
	}, nil
}
