package store

import (
	"io"
	"path/filepath"
	"time"
)

// The rules lock keeps the binding store and the per-pod rules in step
// between processes that change them.
//
// ADD and DEL hold it shared from before their store transaction until
// their rules are in or out, so they never wait on each other. A
// reconciliation (CNI GC, `metabindctl gc`, the responder's repair loop)
// holds it exclusively from its read of the bindings until its last rule
// change: no binding it saw can disappear, and no binding can appear, while
// it deletes "rules without a binding" or restores "bindings without rules".
// So it never deletes a fresh ADD's rules nor resurrects a deleted pod's.
//
// Linux flock does not favour writers: a steady stream of overlapping
// shared holders (32 runtimes ADDing at once) could starve a reconciler for
// ever. So every holder first passes a turnstile (rules.turnstile, taken
// exclusively for an instant by pod changes), which a reconciler keeps
// while it waits: new pod changes queue behind it, those in flight finish,
// and it gets the lock. Order: turnstile, rules lock, store gate, never the
// other way round.

func turnstilePath(dir string) string { return filepath.Join(dir, "rules.turnstile") }
func rulesLockPath(dir string) string { return filepath.Join(dir, "rules.lock") }

// LockRulesShared is a pod change's hold on the rules lock.
func LockRulesShared(dir string, timeout time.Duration) (io.Closer, error) {
	return lockRules(dir, false, timeout)
}

// LockRulesExclusive is a reconciliation's hold on the rules lock.
func LockRulesExclusive(dir string, timeout time.Duration) (io.Closer, error) {
	return lockRules(dir, true, timeout)
}

func lockRules(dir string, exclusive bool, timeout time.Duration) (io.Closer, error) {
	deadline := time.Now().Add(timeout)
	turn, err := lockGate(turnstilePath(dir), true, timeout)
	if err != nil {
		return nil, err
	}
	if !exclusive {
		// Passed: the turnstile only orders arrivals.
		g, err := lockGate(rulesLockPath(dir), false, time.Until(deadline))
		turn.unlock()
		if err != nil {
			return nil, err
		}
		return g.f, nil
	}
	defer turn.unlock()
	g, err := lockGate(rulesLockPath(dir), true, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	return g.f, nil
}
