package reconcile

import (
	"context"
	"log/slog"
	"time"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// RepairInterval is how often the repair loop looks at the rules. A
// firewall reload that flushes INPUT, or a deleted chain, is undone within
// this long plus one repair, with no pod event needed.
const RepairInterval = 3 * time.Second

// Repairer keeps the node's rules whole from a long-running process (the
// responder), like kube-proxy's sync loop: every interval it compares the
// rules with what the plugin recorded (the bases, see store.Base, and the
// bindings) and, when anything differs, runs a locked reconciliation that
// puts back what is missing and removes rules no binding owns. It never
// removes a binding.
type Repairer struct {
	StateDir    string
	LockTimeout time.Duration
	Log         *slog.Logger
	// NewRedirect makes the redirect of a recorded base (redirect.New).
	NewRedirect redirect.Maker

	made map[store.Base]*redirect.Redirect
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
// zero Report when everything was in place).
func (r *Repairer) Once() Report {
	rds, err := r.redirects()
	if err != nil {
		r.Log.Warn("repair loop: cannot read the recorded bases", "error", err.Error())
		return Report{}
	}
	if len(rds) == 0 {
		return Report{} // no ADD has run on this node: nothing to keep
	}
	// Looking needs no lock; a difference may be an ADD or DEL at work,
	// which the locked run below waits for.
	if whole, err := r.looksWhole(rds); err != nil {
		r.Log.Warn("repair loop: cannot read the rules", "error", err.Error())
		return Report{}
	} else if whole {
		return Report{}
	}
	rep, err := Run(Options{StateDir: r.StateDir, LockTimeout: r.LockTimeout, Redirects: rds})
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
	for _, err := range rep.Errors {
		r.Log.Warn("repair loop: a repair failed", "error", err.Error())
	}
	return rep
}

// looksWhole reports whether every base is whole and the per-pod rules
// are exactly the bindings'.
func (r *Repairer) looksWhole(rds []*redirect.Redirect) (bool, error) {
	var want [2]map[string]bool
	for f := range want {
		want[f] = map[string]bool{}
	}
	err := store.Read(r.StateDir, r.LockTimeout, func(tx *store.Tx) error {
		return tx.ForEach(func(b store.Binding) error {
			for _, o := range []string{"nat", "filter"} {
				want[redirect.Family(b.IP)][o+" "+b.ContainerID+"/"+b.IfName+" "+b.IP.String()+" "+b.HostInterface] = true
			}
			return nil
		})
	})
	if err != nil {
		return false, err
	}
	listed := [2]bool{}
	for _, rd := range rds {
		if problems, err := rd.AuditBase(); err != nil || len(problems) > 0 {
			return false, err
		}
		f := rd.Family()
		if listed[f] {
			continue
		}
		listed[f] = true
		owned, err := rd.ListOwned()
		if err != nil {
			return false, err
		}
		if len(owned) != len(want[f]) {
			return false, nil
		}
		for _, o := range owned {
			if !want[f][o.Table+" "+o.ContainerID+"/"+o.IfName+" "+o.IP.String()+" "+o.Interface] {
				return false, nil
			}
		}
	}
	return true, nil
}

// redirects are those of the recorded bases, made once each.
func (r *Repairer) redirects() ([]*redirect.Redirect, error) {
	bases, err := store.ReadBases(r.StateDir, r.LockTimeout)
	if err != nil {
		return nil, err
	}
	if r.made == nil {
		r.made = map[store.Base]*redirect.Redirect{}
	}
	var out []*redirect.Redirect
	for _, b := range bases {
		k := store.Base{Metadata: b.Metadata, Responder: b.Responder, Backend: b.Backend}
		rd := r.made[k]
		if rd == nil {
			if rd, err = r.NewRedirect(b.Metadata, b.Responder); err != nil {
				return nil, err
			}
			r.made[k] = rd
		}
		out = append(out, rd)
	}
	return out, nil
}
