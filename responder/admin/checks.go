// Package admin is the responder's node-local admin address: liveness
// (/healthz) and readiness (/readyz) for the kubelet's probes, and the
// metrics (/metrics), on a server of its own, never the one pods reach for
// metadata.
package admin

import (
	"errors"
	"fmt"
	"time"

	"github.com/metabind/metabind/reconcile"
)

// Check is one readiness check. Run returns nil when the check passes,
// with an optional note for the operator; it must be cheap (no iptables,
// no API request): a probe runs every check at every request.
type Check struct {
	Name string
	Run  func() (note string, err error)
}

// Result is what one check found.
type Result struct {
	Name string
	Note string
	Err  error
}

// String is the result's line in kube-apiserver's /readyz format:
// "[+]name ok" or "[-]name failed: reason".
func (r Result) String() string {
	if r.Err != nil {
		return fmt.Sprintf("[-]%s failed: %v", r.Name, r.Err)
	}
	if r.Note != "" {
		return fmt.Sprintf("[+]%s ok: %s", r.Name, r.Note)
	}
	return fmt.Sprintf("[+]%s ok", r.Name)
}

// RunChecks runs every check, in order; ready is true when all pass.
func RunChecks(checks []Check) (results []Result, ready bool) {
	ready = true
	for _, c := range checks {
		note, err := c.Run()
		results = append(results, Result{Name: c.Name, Note: note, Err: err})
		ready = ready && err == nil
	}
	return results, ready
}

// StoreCheck passes while the binding store is readable: a read of the
// responder's view (store.View) succeeds. It rereads only after a write
// (one load of the mapped generation counter otherwise).
func StoreCheck(view interface{ Len() (int, error) }) Check {
	return Check{Name: "store", Run: func() (string, error) {
		if _, err := view.Len(); err != nil {
			return "", fmt.Errorf("the binding store cannot be read: %w", err)
		}
		return "", nil
	}}
}

// RulesCheck passes when the repair loop's latest look (at most maxAge
// ago) found every base recorded in the store whole, or none recorded. It
// reads what the loop recorded and runs nothing: a probe never repairs, and
// never waits for iptables.
func RulesCheck(loop interface {
	LastStatus() (reconcile.BaseStatus, bool)
}, maxAge time.Duration) Check {
	return Check{Name: "rules", Run: func() (string, error) {
		s, ok := loop.LastStatus()
		switch {
		case !ok:
			return "", errors.New("the repair loop has not audited the rules yet")
		case time.Since(s.At) > maxAge:
			return "", fmt.Errorf("the repair loop last audited the rules %v ago", time.Since(s.At).Round(time.Second))
		case s.Err != nil:
			return "", fmt.Errorf("cannot audit the rules: %w", s.Err)
		case len(s.Problems) == 1:
			return "", errors.New(s.Problems[0])
		case len(s.Problems) > 1:
			return "", fmt.Errorf("%s (and %d more problems)", s.Problems[0], len(s.Problems)-1)
		case s.Bases == 0:
			return "no bases recorded yet", nil
		}
		return "", nil
	}}
}

// KubernetesCheck passes once the pod informer has listed this node's pods
// (kube.Client.HasSynced). Only in Kubernetes mode.
func KubernetesCheck(synced func() bool) Check {
	return Check{Name: "kubernetes", Run: func() (string, error) {
		if !synced() {
			return "", errors.New("the pod informer has not listed this node's pods yet")
		}
		return "", nil
	}}
}

// SigningKeyCheck passes while the issuer has a signing key loaded
// (issuer.Issuer.KeyID names it).
func SigningKeyCheck(keyID func() string) Check {
	return Check{Name: "signing-key", Run: func() (string, error) {
		if keyID() == "" {
			return "", errors.New("no signing key loaded")
		}
		return "", nil
	}}
}
