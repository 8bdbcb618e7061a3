package responder

import (
	"path"

	"github.com/metabind/metabind/store"
)

// WorkloadIdentitySuffix forms the account email served for a rule
// without email: <project.id>.svc.id.goog, as on GKE.
const WorkloadIdentitySuffix = ".svc.id.goog"

// Matches reports whether the rule grants its identity to the pod of b.
// A binding without a namespace (not a Kubernetes pod) matches nothing.
func (r *IdentityRule) Matches(b store.Binding) bool {
	if b.Namespace == "" || b.Namespace != r.Namespace {
		return false
	}
	if r.Pod == "" {
		return true
	}
	ok, err := path.Match(r.Pod, b.Pod)
	return err == nil && ok
}

// Match returns the index of the first rule that matches b, or -1: there
// is no default identity.
func (c *Config) Match(b store.Binding) int {
	for i := range c.Identities {
		if c.Identities[i].Matches(b) {
			return i
		}
	}
	return -1
}

// AccountEmail is the email the metadata server serves for rule r.
func (c *Config) AccountEmail(r *IdentityRule) string {
	if r.Email != "" {
		return r.Email
	}
	return c.Project.ID + WorkloadIdentitySuffix
}
