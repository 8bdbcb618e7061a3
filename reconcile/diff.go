package reconcile

import (
	"net/netip"
	"sort"
	"strings"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// podRuleDiff is how a family's per-pod rules differ from its bindings:
// the one definition of "this rule is that binding's", shared by the
// repair loop's look and the locked reconciliation.
type podRuleDiff struct {
	orphans []redirect.Owned // rules no live binding owns
	missing []store.Binding  // live bindings short of their rules
	partial map[netip.Addr]bool
}

func (d podRuleDiff) empty() bool { return len(d.orphans) == 0 && len(d.missing) == 0 }

// signature identifies a diff, so the repair loop can tell damage that
// stays from a pod change at work.
func (d podRuleDiff) signature() string {
	var parts []string
	for _, o := range d.orphans {
		parts = append(parts, "-"+o.String())
	}
	for _, b := range d.missing {
		parts = append(parts, "+"+b.ContainerID+"/"+b.IfName+"/"+b.IP.String())
	}
	sort.Strings(parts)
	return strings.Join(parts, "\n")
}

// diffPodRules compares the rules found in one family's chains with the
// live bindings of that family (redirect.MatchPodRules).
func diffPodRules(owned []redirect.Owned, live []store.Binding) podRuleDiff {
	m := redirect.MatchPodRules(owned, live)
	var d podRuleDiff
	for j, o := range owned {
		if m.Owner[j] < 0 {
			d.orphans = append(d.orphans, o)
		}
	}
	for _, i := range m.Missing {
		d.missing = append(d.missing, live[i])
		if m.Partial[i] {
			if d.partial == nil {
				d.partial = map[netip.Addr]bool{}
			}
			d.partial[live[i].IP] = true
		}
	}
	return d
}
