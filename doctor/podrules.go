package doctor

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/metabind/metabind/plugin"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// PodRule is a per-pod rule found in the tables with the binding it belongs
// to; Binding is nil for an orphan (a rule no binding owns).
type PodRule struct {
	Family string         `json:"family"` // IPv4 or IPv6
	Rule   redirect.Owned `json:"rule"`
	// Binding is the binding whose rule this is, as the plugin would
	// install it (attachment, IP, host interface, responder).
	Binding *store.Binding `json:"binding"`
}

// PodRules is the per-pod rules of every family next to the bindings.
type PodRules struct {
	Rules    []PodRule       `json:"rules"`
	Bindings []store.Binding `json:"bindings"` // live ones (a takeover's released binding aside)
	// Missing are the bindings short of a rule: the DNAT, the source
	// check or both.
	Missing    []store.Binding          `json:"missing"`
	Unreadable []store.UnreadableRecord `json:"-"`
}

// Orphans are the rules without a binding.
func (p PodRules) Orphans() []redirect.Owned {
	var out []redirect.Owned
	for _, r := range p.Rules {
		if r.Binding == nil {
			out = append(out, r.Rule)
		}
	}
	return out
}

// ListPodRules reads the bindings and the per-pod rules holding the rules
// lock (see store.LockRulesExclusive), so no pod change is half done in
// what it sees: a difference is damage. A state dir without a store has no
// bindings; its rules, if any, are listed as orphans.
func ListPodRules(stateDir string, timeout time.Duration) (PodRules, error) {
	var p PodRules
	var bases []store.Base
	if _, err := os.Stat(store.DBPath(stateDir)); !errors.Is(err, os.ErrNotExist) {
		lock, err := store.LockRulesExclusive(stateDir, timeout)
		if err != nil {
			return p, fmt.Errorf("rules lock: %w", err)
		}
		defer lock.Close()
		err = store.Read(stateDir, timeout, func(tx *store.Tx) error {
			bases = tx.Bases()
			err := tx.ForEach(func(b store.Binding) error {
				if !b.Released {
					p.Bindings = append(p.Bindings, b)
				}
				return nil
			})
			p.Unreadable = tx.Unreadable()
			return err
		})
		if err != nil {
			return p, err
		}
	}
	for _, fam := range []int{ipv4, ipv6} {
		rd, err := familyRedirect(fam, bases, p.Bindings)
		if err != nil || rd == nil {
			return p, err
		}
		owned, err := rd.ListOwned()
		if err != nil {
			return p, fmt.Errorf("%s: %w", familyName(fam), err)
		}
		p.match(fam, owned)
	}
	return p, nil
}

// familyRedirect lists a family's per-pod rules, which live in fixed chains
// whatever the base: that of a recorded base, or the defaults. IPv6 is
// listed only when something of it is recorded (ip6tables may be missing).
func familyRedirect(fam int, bases []store.Base, bindings []store.Binding) (redirect.Backend, error) {
	for _, b := range bases {
		if redirect.Family(b.Metadata.Addr()) == fam {
			return redirect.ForBase(b)
		}
	}
	if fam == ipv4 {
		return redirect.New(netip.MustParseAddrPort(plugin.DefaultMetadataAddress), netip.MustParseAddrPort(plugin.DefaultResponderAddress))
	}
	for _, b := range bindings {
		if redirect.Family(b.IP) == fam {
			r := netip.MustParseAddrPort(plugin.DefaultResponderAddress6)
			return redirect.New(r, r)
		}
	}
	return nil, nil
}

// The families as redirect.Family numbers them.
const (
	ipv4 = 0
	ipv6 = 1
)

func familyName(fam int) string { return map[int]string{ipv4: "IPv4", ipv6: "IPv6"}[fam] }

// match pairs a family's rules with its bindings (redirect.MatchPodRules).
func (p *PodRules) match(fam int, owned []redirect.Owned) {
	var live []int // indexes in p.Bindings of the family's
	var bindings []store.Binding
	for i, b := range p.Bindings {
		if redirect.Family(b.IP) == fam {
			live = append(live, i)
			bindings = append(bindings, b)
		}
	}
	m := redirect.MatchPodRules(owned, bindings)
	for j, o := range owned {
		r := PodRule{Family: familyName(fam), Rule: o}
		if i := m.Owner[j]; i >= 0 {
			r.Binding = &p.Bindings[live[i]]
		}
		p.Rules = append(p.Rules, r)
	}
	for _, i := range m.Missing {
		p.Missing = append(p.Missing, bindings[i])
	}
}
