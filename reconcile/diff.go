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

type attachmentIP struct {
	containerID, ifName string
	ip                  netip.Addr
}

// diffPodRules compares the rules found in one family's chains with the
// live bindings of that family. A binding has its rules when both pieces
// are there exactly as it would install them (interface, responder);
// duplicates count as present, not as orphans.
func diffPodRules(owned []redirect.Owned, live []store.Binding) podRuleDiff {
	byKey := make(map[attachmentIP]int, len(live))
	for i, b := range live {
		byKey[attachmentIP{b.ContainerID, b.IfName, b.IP}] = i
	}
	present := make([][2]bool, len(live)) // nat, filter
	var d podRuleDiff
	for _, o := range owned {
		i, ok := byKey[attachmentIP{o.ContainerID, o.IfName, o.IP}]
		if !ok || !o.Is(redirect.RuleFor(live[i])) {
			d.orphans = append(d.orphans, o)
			continue
		}
		present[i][map[bool]int{true: 0, false: 1}[o.Chain == redirect.NATChain]] = true
	}
	for i, b := range live {
		switch p := present[i]; {
		case p[0] && p[1]:
		case p[0] || p[1]:
			if d.partial == nil {
				d.partial = map[netip.Addr]bool{}
			}
			d.partial[b.IP] = true
			fallthrough
		default:
			d.missing = append(d.missing, b)
		}
	}
	return d
}
