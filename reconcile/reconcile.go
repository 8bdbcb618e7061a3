// Package reconcile brings the binding store and the node's rules back into
// agreement: the CNI GC verb, `metabindctl gc` and the responder's repair
// loop all run it. It is the one place that changes rules without a pod
// event, so it is the one place that must never race a pod's ADD or DEL.
package reconcile

import (
	"errors"
	"fmt"
	"os"
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

// Options say what to reconcile.
type Options struct {
	StateDir    string
	LockTimeout time.Duration
	// Redirects are the bases to keep whole, at most one per family for
	// the per-pod rules (those of the first of each family are listed and
	// restored: per-pod rules live in fixed chains whatever the base).
	Redirects []redirect.Backend
	// Keep says which bindings stay; nil keeps every binding (the repair
	// loop) but those a failed takeover left released.
	Keep func(store.Binding) bool
	// RefuseAll refuses to remove every binding at once (see ErrAll).
	RefuseAll bool
	DryRun    bool
	// Record are base records to write once the run is done without an
	// error, as an ADD writes its netconf's: a GC that switches the node's
	// backend records the switch, or the repair loop, which follows the
	// records, would switch the node back.
	Record []store.Base
	// Refresh, if set, gives Redirects once the rules lock is held: the
	// repair loop's, read from the recorded bases, which a switch of
	// backends may change while it waits for the lock.
	Refresh func() ([]redirect.Backend, error)
}

// ErrAll is Run's answer when Keep would remove every binding on the node
// and RefuseAll is set: a caller that cannot see the pods' netns
// paths (run inside a container) would otherwise unbind the whole node.
var ErrAll = errors.New("refusing to remove every binding at once")

// Run reconciles. It holds the rules lock exclusively throughout (see
// store.LockRulesExclusive): from its read of the bindings to its last rule
// change no ADD or DEL is between its store transaction and its rules, so
// "a rule without a binding" is an orphan and "a binding without its rules"
// is damage, never a pod change at work. It keeps going past errors and
// returns them in the report.
func Run(o Options) (Report, error) {
	var rep Report
	if _, err := os.Stat(o.StateDir); errors.Is(err, os.ErrNotExist) {
		return rep, nil // no ADD has run on this node: nothing to reconcile
	}
	lock, err := store.LockRulesExclusive(o.StateDir, o.LockTimeout)
	if err != nil {
		return rep, err
	}
	defer lock.Close()
	if o.Refresh != nil {
		if o.Redirects, err = o.Refresh(); err != nil {
			return rep, err
		}
	}

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
			// A base from nothing (a switch of backends) comes with the
			// live bindings' rules; the rest are restored below.
			repaired, err = rd.EnsureBaseWith(rulesOf(live, rd.Family()))
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
		// Only now, with this backend's base and every live binding's
		// rules in, do the other backend's objects go (a switch of
		// backends on a node with live pods); not while a base of the
		// family records the other, and not after anything failed: a
		// new backend that did not go in whole must not be left alone.
		if o.DryRun || o.records(fam, redirect.Other(rd.Name())) || len(rep.Errors) > 0 {
			continue
		}
		if retired, err := redirect.Retire(rd); err != nil {
			rep.Errors = append(rep.Errors, err)
		} else if retired {
			rep.BaseRepairs = append(rep.BaseRepairs, "removed the "+redirect.Other(rd.Name())+" redirect: the node switched to "+rd.Name())
		}
	}
	if !o.DryRun && len(o.Record) > 0 && len(rep.Errors) == 0 {
		if err := o.record(); err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("record the bases: %w", err))
		}
	}
	return rep, nil
}

// record writes o.Record into the store.
func (o Options) record() error {
	st, err := store.Open(o.StateDir, o.LockTimeout)
	if err != nil {
		return err
	}
	err = st.Update(func(tx *store.Tx) error {
		for _, b := range o.Record {
			if err := tx.RecordBase(b); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	return err
}

// records reports whether one of the redirects of family fam is backend's.
func (o Options) records(fam int, backend string) bool {
	for _, rd := range o.Redirects {
		if rd.Family() == fam && rd.Name() == backend {
			return true
		}
	}
	return false
}

// rulesOf are the rules of the bindings of one family.
func rulesOf(live []store.Binding, fam int) []redirect.Rule {
	var out []redirect.Rule
	for _, b := range live {
		if redirect.Family(b.IP) == fam {
			out = append(out, redirect.RuleFor(b))
		}
	}
	return out
}

// bindings removes the bindings Keep rejects, and those left released by
// a takeover that failed half-way (see plugin's commitBindings: with the
// rules lock held exclusively no takeover is in flight, so their rules are
// orphans and the IP unbound), and returns the rest.
func (o Options) bindings(rep *Report) ([]store.Binding, error) {
	var live []store.Binding
	pick := func(tx *store.Tx) ([]store.Binding, error) {
		live, rep.RemovedBindings = nil, nil
		err := tx.ForEach(func(b store.Binding) error {
			if !b.Released && (o.Keep == nil || o.Keep(b)) {
				live = append(live, b)
			} else {
				rep.RemovedBindings = append(rep.RemovedBindings, b)
			}
			return nil
		})
		// An unreadable record is left in the store: its IP counts as
		// unbound, so the rules of that IP go as orphans, and the next ADD
		// of the IP overwrites it.
		rep.Unreadable = len(tx.Unreadable())
		if err == nil && o.RefuseAll && len(live) == 0 && len(rep.RemovedBindings) > 0 {
			err = fmt.Errorf("%w (%d): none of their pods' network namespaces is visible from here", ErrAll, len(rep.RemovedBindings))
		}
		return rep.RemovedBindings, err
	}
	if o.DryRun {
		err := store.Read(o.StateDir, o.LockTimeout, func(tx *store.Tx) error { _, err := pick(tx); return err })
		return live, err
	}
	// Remove commits only when pick chose something.
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
func (o Options) byFamily() [2]redirect.Backend {
	var out [2]redirect.Backend
	for _, rd := range o.Redirects {
		if f := rd.Family(); out[f] == nil {
			out[f] = rd
		}
	}
	return out
}

// podRules removes the per-pod rules of one family that no binding owns
// and restores the missing rules of live, in one iptables-restore run each
// where it can (a 1,000-pod node after `iptables -F` is repaired in two
// runs, not thousands, so pod changes wait for it briefly).
func (o Options) podRules(rep *Report, rd redirect.Backend, live []store.Binding) error {
	owned, err := rd.ListOwned()
	if err != nil {
		return err
	}
	d := diffPodRules(owned, live)
	rep.RemovedRules = append(rep.RemovedRules, d.orphans...)
	rep.RestoredRules = append(rep.RestoredRules, d.missing...)
	if o.DryRun || d.empty() {
		return nil
	}
	if len(d.orphans) > 0 && rd.DeleteBatch(d.orphans) != nil {
		for _, r := range d.orphans { // piece by piece, each already gone being fine
			if err := rd.Delete(r); err != nil {
				rep.Errors = append(rep.Errors, err)
			}
		}
	}
	var whole []redirect.Rule // bindings with no piece left: added without looking
	for _, b := range d.missing {
		if !d.partial[b.IP] {
			whole = append(whole, redirect.RuleFor(b))
		}
	}
	batched := len(whole) > 0 && rd.AddBatch(whole, false) == nil
	for _, b := range d.missing {
		if batched && !d.partial[b.IP] {
			continue
		}
		if _, err := rd.Add(redirect.RuleFor(b)); err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("restore rules of %s: %w", b.IP, err))
		}
	}
	return nil
}
