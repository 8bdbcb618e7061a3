// Package reconcile brings the binding store and the node's rules back into
// agreement: the CNI GC verb, `metabindctl gc` and the responder's repair
// loop all run it. It is the one place that changes rules without a pod
// event, so it is the one place that must never race a pod's ADD or DEL.
package reconcile

import (
	"fmt"
	"time"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// Report is what a reconciliation found and did (or, dry, would do).
type Report struct {
	RemovedBindings []store.Binding  // no longer wanted (GC: attachment not valid; metabindctl: netns gone)
	RemovedRules    []redirect.Owned // per-pod rules with no binding
	RestoredRules   []store.Binding  // bindings whose rules were missing
	BaseRepairs     []string         // what was wrong with the chains and jumps
	Unreadable      int              // binding records that could not be decoded and were left alone
	Errors          []error          // what failed; reconciliation goes on past each
}

// Changed reports whether the reconciliation found anything to do.
func (r Report) Changed() bool {
	return len(r.RemovedBindings)+len(r.RemovedRules)+len(r.RestoredRules)+len(r.BaseRepairs) > 0
}

// Options say what to reconcile.
type Options struct {
	StateDir    string
	LockTimeout time.Duration
	// Redirects are the bases to keep whole, at most one per family for
	// the per-pod rules (those of the first of each family are listed and
	// restored: per-pod rules live in fixed chains whatever the base).
	Redirects []*redirect.Redirect
	// Keep says which bindings stay; nil keeps every binding (the repair
	// loop), so the store is only read.
	Keep func(store.Binding) bool
	// RefuseAll refuses to remove every binding at once (see ErrAll).
	RefuseAll bool
	DryRun    bool
}

// ErrAll is Run's answer when Keep would remove every one of several
// bindings and RefuseAll is set: a caller that cannot see the pods' netns
// paths (run inside a container) would otherwise unbind the whole node.
var ErrAll = fmt.Errorf("refusing to remove every binding at once")

// Run reconciles. It holds the rules lock exclusively throughout (see
// store.LockRulesExclusive): from its read of the bindings to its last rule
// change no ADD or DEL is between its store transaction and its rules, so
// "a rule without a binding" is an orphan and "a binding without its rules"
// is damage, never a pod change at work. It keeps going past errors and
// returns them in the report.
func Run(o Options) (Report, error) {
	var rep Report
	lock, err := store.LockRulesExclusive(o.StateDir, o.LockTimeout)
	if err != nil {
		return rep, err
	}
	defer lock.Close()

	live, err := o.bindings(&rep)
	if err != nil {
		return rep, err
	}
	for _, rd := range o.Redirects {
		var repaired []string
		var err error
		if o.DryRun {
			repaired, err = rd.AuditBase()
		} else {
			repaired, err = rd.EnsureBase()
		}
		rep.BaseRepairs = append(rep.BaseRepairs, repaired...)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("base for %s: %w", rd.Metadata(), err))
		}
	}
	for fam, rd := range o.byFamily() {
		if rd == nil {
			continue // a binding of a family nobody configured cannot be checked
		}
		var mine []store.Binding
		for _, b := range live {
			if redirect.Family(b.IP) == fam {
				mine = append(mine, b)
			}
		}
		if err := o.podRules(&rep, rd, mine); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// bindings removes the bindings Keep rejects and returns the rest.
func (o Options) bindings(rep *Report) ([]store.Binding, error) {
	var live []store.Binding
	pick := func(tx *store.Tx) ([]store.Binding, error) {
		live, rep.RemovedBindings = nil, nil
		err := tx.ForEach(func(b store.Binding) error {
			if o.Keep == nil || o.Keep(b) {
				live = append(live, b)
			} else {
				rep.RemovedBindings = append(rep.RemovedBindings, b)
			}
			return nil
		})
		// An unreadable record is left alone: its IP is unbound for the
		// responder, and the next ADD of that IP overwrites it.
		rep.Unreadable = len(tx.Unreadable())
		if err == nil && o.RefuseAll && len(live) == 0 && len(rep.RemovedBindings) > 0 {
			err = fmt.Errorf("%w (%d): none of their pods' network namespaces is visible from here", ErrAll, len(rep.RemovedBindings))
		}
		return rep.RemovedBindings, err
	}
	if o.Keep == nil || o.DryRun {
		err := store.Read(o.StateDir, o.LockTimeout, func(tx *store.Tx) error { _, err := pick(tx); return err })
		return live, err
	}
	st, err := store.Open(o.StateDir, o.LockTimeout)
	if err != nil {
		return nil, err
	}
	_, err = st.Remove(pick)
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	return live, err
}

// byFamily is the redirect whose per-pod rules are listed, per family.
func (o Options) byFamily() [2]*redirect.Redirect {
	var out [2]*redirect.Redirect
	for _, rd := range o.Redirects {
		if f := rd.Family(); out[f] == nil {
			out[f] = rd
		}
	}
	return out
}

// podRules removes the per-pod rules of one family that no binding owns
// and restores the missing rules of live.
func (o Options) podRules(rep *Report, rd *redirect.Redirect, live []store.Binding) error {
	owned, err := rd.ListOwned()
	if err != nil {
		return err
	}
	present := make([]int, len(live)) // pieces of each live binding found
	for _, r := range owned {
		ok := false
		for i, b := range live {
			if r.Is(redirect.RuleFor(b)) {
				ok = true
				present[i]++
			}
		}
		if ok {
			continue
		}
		rep.RemovedRules = append(rep.RemovedRules, r)
		if !o.DryRun {
			if err := rd.Delete(r); err != nil {
				rep.Errors = append(rep.Errors, err)
			}
		}
	}
	for i, b := range live {
		if present[i] >= 2 {
			continue
		}
		rep.RestoredRules = append(rep.RestoredRules, b)
		if !o.DryRun {
			if _, err := rd.Add(redirect.RuleFor(b)); err != nil {
				rep.Errors = append(rep.Errors, fmt.Errorf("restore rules of %s: %w", b.IP, err))
			}
		}
	}
	return nil
}
