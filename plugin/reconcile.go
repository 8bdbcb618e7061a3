package plugin

import (
	"fmt"
	"time"

	"github.com/metabind/metabind/plugin/redirect"
	"github.com/metabind/metabind/store"
)

// Report is what a reconciliation found and did (or, dry, would do).
type Report struct {
	RemovedBindings []store.Binding  // no longer wanted (GC: attachment not valid; metabindctl: netns gone)
	RemovedRules    []redirect.Owned // per-pod rules with no binding
	RestoredRules   []store.Binding  // bindings whose rules were missing
	Errors          []error          // what failed; reconciliation goes on past each
}

// settle is how old a binding must be before a missing rule counts as
// lost: ADD commits the binding first and adds its rules right after, so a
// young binding without rules is an ADD at work, not damage.
const settle = 30 * time.Second

// Reconcile brings the binding store and the per-pod rules back into
// agreement: bindings that keep rejects go, with their rules; rules with no
// binding go; bindings whose rules are missing get them back. With dryRun it
// only reports. It keeps going past errors and returns them in the report.
func Reconcile(stateDir string, lockTimeout time.Duration, rds *Redirects, keep func(store.Binding) bool, dryRun bool, now time.Time) (Report, error) {
	var rep Report
	st, err := store.Open(stateDir, lockTimeout)
	if err != nil {
		return rep, err
	}
	var live []store.Binding
	pick := func(tx *store.Tx) ([]store.Binding, error) {
		live, rep.RemovedBindings = nil, nil
		err := tx.ForEach(func(b store.Binding) error {
			if keep(b) {
				live = append(live, b)
			} else {
				rep.RemovedBindings = append(rep.RemovedBindings, b)
			}
			return nil
		})
		return rep.RemovedBindings, err
	}
	if dryRun {
		err = st.View(func(tx *store.Tx) error { _, err := pick(tx); return err })
	} else {
		_, err = st.Remove(pick)
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rep, err
	}

	// The per-pod rules of every configured family; a binding of a family
	// that is not configured (any more) cannot be checked or restored.
	all, err := rds.All()
	if err != nil {
		return rep, err
	}
	var owned []redirect.Owned
	ownedBy := map[int]*redirect.Redirect{} // index in owned -> its family's redirect
	for _, rd := range all {
		found, err := rd.ListOwned()
		if err != nil {
			return rep, err
		}
		for _, o := range found {
			ownedBy[len(owned)] = rd
			owned = append(owned, o)
		}
	}
	checked := live[:0:0]
	for _, b := range live {
		if rds.Configured(b.IP) {
			checked = append(checked, b)
		}
	}
	live = checked
	present := make([]int, len(live)) // pieces of each live binding found
	for j, o := range owned {
		ok := false
		for i, b := range live {
			if o.Is(ruleOf(b)) {
				ok = true
				present[i]++
			}
		}
		if ok {
			continue
		}
		rep.RemovedRules = append(rep.RemovedRules, o)
		if !dryRun {
			if err := ownedBy[j].Delete(o); err != nil {
				rep.Errors = append(rep.Errors, err)
			}
		}
	}
	for i, b := range live {
		if present[i] >= 2 || now.Sub(b.Created) < settle {
			continue
		}
		rep.RestoredRules = append(rep.RestoredRules, b)
		if !dryRun {
			rd, err := rds.For(b.IP)
			if err == nil {
				_, err = rd.Add(ruleOf(b))
			}
			if err != nil {
				rep.Errors = append(rep.Errors, fmt.Errorf("restore rules of %s: %w", b.IP, err))
			}
		}
	}
	return rep, nil
}
