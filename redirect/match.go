package redirect

import (
	"net/netip"

	"github.com/metabind/metabind/store"
)

// PodRuleMatch pairs the per-pod rules found in a family's chains with the
// bindings of that family: the one definition of "this rule is that
// binding's", shared by the reconciliation, the repair loop and
// metabindctl's doctor and rules list.
type PodRuleMatch struct {
	// Owner[i] is the index in live of the binding owned[i] belongs to,
	// -1 for an orphan (no live binding would install that rule).
	Owner []int
	// Missing are the indexes of the bindings short of a rule (the DNAT,
	// the source check or both); Partial says which of them have one of
	// the two.
	Missing []int
	Partial map[int]bool
}

type attachmentIP struct {
	containerID, ifName string
	ip                  netip.Addr
}

// MatchPodRules compares one family's rules with its live bindings. A rule
// is a binding's when it is exactly the piece the plugin would install for
// it (attachment, IP, interface, responder); a binding has its rules when
// both pieces are there. Duplicates count as present, not as orphans.
func MatchPodRules(owned []Owned, live []store.Binding) PodRuleMatch {
	byKey := make(map[attachmentIP]int, len(live))
	for i, b := range live {
		byKey[attachmentIP{b.ContainerID, b.IfName, b.IP}] = i
	}
	m := PodRuleMatch{Owner: make([]int, len(owned))}
	present := make([][2]bool, len(live)) // nat, filter
	for j, o := range owned {
		i, ok := byKey[attachmentIP{o.ContainerID, o.IfName, o.IP}]
		if !ok || !o.Is(RuleFor(live[i])) {
			m.Owner[j] = -1
			continue
		}
		m.Owner[j] = i
		if o.Chain == NATChain {
			present[i][0] = true
		} else {
			present[i][1] = true
		}
	}
	for i := range live {
		switch p := present[i]; {
		case p[0] && p[1]:
		case p[0] || p[1]:
			if m.Partial == nil {
				m.Partial = map[int]bool{}
			}
			m.Partial[i] = true
			fallthrough
		default:
			m.Missing = append(m.Missing, i)
		}
	}
	return m
}
