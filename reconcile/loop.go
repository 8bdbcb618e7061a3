package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// RepairInterval is how often the repair loop looks at the rules. A
// firewall reload that flushes INPUT, or a deleted chain, is undone within
// this long plus one repair, with no pod event needed; a pod's lost rule
// (nothing else damaged) within twice this long.
const RepairInterval = 3 * time.Second

// Repairer keeps the node's rules whole from a long-running process (the
// responder), like kube-proxy's sync loop: every interval it compares the
// rules with what the plugin recorded (the bases, see store.Base, and the
// bindings) and, when anything differs, runs a locked reconciliation that
// puts back what is missing and removes rules no binding owns. It never
// removes a binding, except one a failed takeover left released.
//
// Looking takes no lock, so an ADD or DEL at work (binding committed, rules
// not yet in or out) looks like a difference in the per-pod rules; the
// loop acts on one only when the next look finds the same, so a node busy
// with pods is not held up by reconciliations that find nothing to do. A
// damaged base (chains and jumps, which no pod change touches) is repaired
// at once.
type Repairer struct {
	StateDir    string
	LockTimeout time.Duration
	Log         *slog.Logger
	// NewRedirect, if set, makes the redirect of a recorded base whatever
	// backend it records (tests); nil: the recorded backend
	// (redirect.ForBase).
	NewRedirect redirect.Maker
	// OnBases, if set, hears of the recorded bases at every look (the
	// responder checks its listen addresses against them).
	OnBases func([]store.Base)
	// OnRepair, if set, hears of every reconciliation the loop ran, with
	// what it did (metrics).
	OnRepair func(Report)

	made     map[string]redirect.Backend // by store.Base.Key
	lastDiff string                      // the per-pod difference the previous look found
	status   atomic.Pointer[BaseStatus]  // the latest look's audit of the bases
}

// BaseStatus is what one look found of the recorded bases, before any
// repair: a damage it found is reported until a later look finds the base
// whole again (the one after the repair, an interval on).
type BaseStatus struct {
	At    time.Time // when the look ran
	Bases int       // bases recorded in the store
	// Problems are what the audits found wrong (redirect.AuditBase), none
	// when every base is whole.
	Problems []string
	// Err is set when the look could not read the recorded bases or a
	// base's rules: nothing is known of them.
	Err error
}

// LastStatus is the latest look's audit of the bases; ok is false before
// the first look. It takes no lock and runs nothing (a readiness probe's
// view of the rules).
func (r *Repairer) LastStatus() (s BaseStatus, ok bool) {
	p := r.status.Load()
	if p == nil {
		return BaseStatus{}, false
	}
	return *p, true
}

func (r *Repairer) record(s BaseStatus) {
	s.At = time.Now()
	r.status.Store(&s)
}

// Run repairs every interval until ctx is done.
func (r *Repairer) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		r.Once()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once looks, and repairs if needed. It returns the repair's report (the
// zero Report when nothing was done).
func (r *Repairer) Once() Report {
	bases, rds, err := r.redirects()
	if err != nil {
		r.record(BaseStatus{Err: fmt.Errorf("read the recorded bases: %w", err)})
		r.Log.Warn("repair loop: cannot read the recorded bases", "error", err.Error())
		return Report{}
	}
	if r.OnBases != nil {
		r.OnBases(bases)
	}
	if len(rds) == 0 {
		r.record(BaseStatus{})
		return Report{} // no ADD has run on this node: nothing to keep
	}
	baseDamaged, diff := r.look(rds)
	if !baseDamaged && (diff == "" || diff != r.lastDiff) {
		r.lastDiff = diff
		return Report{}
	}
	r.lastDiff = ""
	// The bases are read again under the rules lock: a switch of backends
	// may have changed them while this waited for it.
	rep, err := Run(Options{StateDir: r.StateDir, LockTimeout: r.LockTimeout, Refresh: func() ([]redirect.Backend, error) {
		_, rds, err := r.redirects()
		return rds, err
	}})
	if r.OnRepair != nil {
		r.OnRepair(rep)
	}
	if err != nil {
		r.Log.Warn("repair loop: reconciliation failed", "error", err.Error())
		return rep
	}
	for _, d := range rep.BaseRepairs {
		r.Log.Warn("repaired the base", "damage", d)
	}
	for _, b := range rep.RestoredRules {
		r.Log.Warn("restored a pod's rules", "ip", b.IP.String(), "pod", b.Namespace+"/"+b.Pod, "container", b.ContainerID, "hostInterface", b.HostInterface)
	}
	for _, o := range rep.RemovedRules {
		r.Log.Warn("removed a rule no binding owns", "rule", o.String())
	}
	for _, b := range rep.RemovedBindings {
		r.Log.Warn("removed a binding a failed takeover left released", "ip", b.IP.String(), "container", b.ContainerID)
	}
	for _, err := range rep.Errors {
		r.Log.Warn("repair loop: a repair failed", "error", err.Error())
	}
	return rep
}

// look reports whether any base is damaged, and the per-pod rules'
// difference from the bindings ("" when none). A base or family it cannot
// read is logged and skipped: one broken ip6tables does not stop IPv4's
// repairs.
func (r *Repairer) look(rds []redirect.Backend) (baseDamaged bool, diff string) {
	status := BaseStatus{Bases: len(rds)}
	defer func() { r.record(status) }()
	var live [2][]store.Binding
	err := store.Read(r.StateDir, r.LockTimeout, func(tx *store.Tx) error {
		return tx.ForEach(func(b store.Binding) error {
			if b.Released {
				baseDamaged = true // a failed takeover to clean up
			} else {
				live[redirect.Family(b.IP)] = append(live[redirect.Family(b.IP)], b)
			}
			return nil
		})
	})
	if err != nil {
		status.Err = fmt.Errorf("read the bindings: %w", err)
		r.Log.Warn("repair loop: cannot read the bindings", "error", err.Error())
		return false, ""
	}
	var diffs []string
	listed := [2]bool{}
	for _, rd := range rds {
		problems, err := rd.AuditBase()
		if err != nil {
			status.Err = fmt.Errorf("read the rules of %s: %w", rd.Metadata(), err)
			r.Log.Warn("repair loop: cannot read the rules", "metadata", rd.Metadata().String(), "error", err.Error())
			continue
		}
		baseDamaged = baseDamaged || len(problems) > 0
		status.Problems = append(status.Problems, problems...)
		f := rd.Family()
		if listed[f] {
			continue
		}
		listed[f] = true
		owned, err := rd.ListOwned()
		if err != nil {
			r.Log.Warn("repair loop: cannot read the rules", "metadata", rd.Metadata().String(), "error", err.Error())
			continue
		}
		if d := diffPodRules(owned, live[f]); !d.empty() {
			diffs = append(diffs, d.signature())
		}
	}
	return baseDamaged, strings.Join(diffs, "\n")
}

// redirects are those of the recorded bases, made once each.
func (r *Repairer) redirects() ([]store.Base, []redirect.Backend, error) {
	bases, err := store.ReadBases(r.StateDir, r.LockTimeout)
	if err != nil {
		return nil, nil, err
	}
	if r.made == nil {
		r.made = map[string]redirect.Backend{}
	}
	var out []redirect.Backend
	for _, b := range bases {
		k := b.Key()
		rd := r.made[k]
		if rd == nil {
			if r.NewRedirect != nil {
				rd, err = r.NewRedirect(b.Metadata, b.Responder, b.Extra...)
			} else {
				rd, err = redirect.ForBase(b)
			}
			if err != nil {
				return nil, nil, err
			}
			r.made[k] = rd
		}
		out = append(out, rd)
	}
	return bases, out, nil
}
