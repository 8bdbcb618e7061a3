package redirect

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
)

// nftDamage is what an audit of the nftables base found.
type nftDamage struct {
	problems    []string
	freshTable  bool // the ip/ip6 table is missing: a base from nothing
	sets        []*nftables.Set
	chains      []*nftables.Chain
	rules       []nftRule
	foreign     []*nftables.Rule // rules in metabind's chains that are not metabind's
	flushSource bool             // the source chain holds something else: rebuild it
}

// AuditBase lists what is missing or wrong in metabind's tables: tables,
// sets, chains (with their hooks and priorities), this base's rules, the
// source chain, and rules of someone else's inside metabind's chains. It
// reads only (netlink dumps).
func (n *NFT) AuditBase() ([]string, error) {
	d, err := n.audit()
	return d.problems, err
}

// CheckBase reports the first thing AuditBase finds, as an error.
func (n *NFT) CheckBase() error {
	problems, err := n.AuditBase()
	if err == nil && len(problems) > 0 {
		err = fmt.Errorf("%s", problems[0])
	}
	return err
}

func (n *NFT) audit() (nftDamage, error) {
	var d nftDamage
	have, err := n.tables()
	if err != nil {
		return d, err
	}
	d.freshTable = !have[0]
	c, err := n.dial()
	if err != nil {
		return d, err
	}
	for i, t := range []*nftables.Table{n.ipTable(), n.bridgeTable()} {
		if !have[i] {
			d.problems = append(d.problems, fmt.Sprintf("nftables table %s %s is missing", familyName(t.Family), t.Name))
		}
	}
	existingSets := map[string]bool{}
	for i, t := range []*nftables.Table{n.ipTable(), n.bridgeTable()} {
		if !have[i] {
			continue
		}
		sets, err := c.GetSets(t)
		if err != nil {
			return d, fmt.Errorf("nftables: list sets of %s: %w", t.Name, err)
		}
		for _, s := range sets {
			existingSets[t.Name+" "+s.Name] = true
		}
	}
	for _, s := range n.sets() {
		if !existingSets[s.Table.Name+" "+s.Name] {
			d.sets = append(d.sets, s)
			if have[0] && s.Table.Family != nftables.TableFamilyBridge || have[1] && s.Table.Family == nftables.TableFamilyBridge {
				d.problems = append(d.problems, fmt.Sprintf("nftables set %s in table %s is missing", s.Name, s.Table.Name))
			}
		}
	}
	existing := map[string]*nftables.Chain{}
	for _, fam := range []nftables.TableFamily{n.f.table, nftables.TableFamilyBridge} {
		chains, err := c.ListChainsOfTableFamily(fam)
		if err != nil {
			return d, fmt.Errorf("nftables: list chains: %w", err)
		}
		for _, ch := range chains {
			existing[ch.Table.Name+" "+ch.Name] = ch
		}
	}
	listed := map[string][]*nftables.Rule{}
	for _, want := range n.chains() {
		k := want.Table.Name + " " + want.Name
		got, ok := existing[k]
		if !ok {
			d.chains = append(d.chains, want)
			d.problems = append(d.problems, fmt.Sprintf("nftables chain %s in table %s is missing", want.Name, want.Table.Name))
			continue
		}
		if want.Hooknum != nil && (got.Hooknum == nil || *got.Hooknum != *want.Hooknum || got.Priority == nil || *got.Priority != *want.Priority || got.Type != want.Type) {
			d.problems = append(d.problems, fmt.Sprintf("nftables chain %s in table %s has another type, hook or priority than metabind's", want.Name, want.Table.Name))
		}
		rules, err := c.GetRules(want.Table, want)
		if err != nil {
			return d, fmt.Errorf("nftables: list %s: %w", k, err)
		}
		listed[want.Table.Name+" "+want.Name] = rules
		for _, r := range rules {
			if !strings.HasPrefix(comment(r), "metabind:") {
				d.foreign = append(d.foreign, r)
				d.problems = append(d.problems, fmt.Sprintf("nftables chain %s in table %s holds a rule that is not metabind's (handle %d)", want.Name, want.Table.Name, r.Handle))
			}
		}
	}
	var sourceWant, sourceGot []string
	for _, r := range n.rules() {
		ch := n.chain(r.bridge, r.chain)
		rules := listed[ch.Table.Name+" "+ch.Name]
		if r.chain == nftSource && !r.bridge {
			sourceWant = append(sourceWant, r.comment)
			continue
		}
		if !slices.ContainsFunc(rules, func(x *nftables.Rule) bool { return comment(x) == r.comment }) {
			d.rules = append(d.rules, r)
			if _, ok := existing[ch.Table.Name+" "+ch.Name]; ok {
				d.problems = append(d.problems, fmt.Sprintf("nftables chain %s in table %s lacks metabind's rule %q", r.chain, ch.Table.Name, r.comment))
			}
		}
	}
	for _, r := range listed[NFTTable+" "+nftSource] {
		sourceGot = append(sourceGot, comment(r))
	}
	if _, ok := existing[NFTTable+" "+nftSource]; ok && !slices.Equal(sourceGot, sourceWant) {
		d.flushSource = true
		d.problems = append(d.problems, fmt.Sprintf("nftables chain %s in table %s holds %q, not metabind's source check", nftSource, NFTTable, sourceGot))
	}
	if _, ok := existing[NFTTable+" "+nftSource]; !ok {
		d.flushSource = true
	}
	return d, nil
}

// EnsureBase creates or repairs the base (one transaction).
func (n *NFT) EnsureBase() ([]string, error) { return n.EnsureBaseWith(nil) }

// EnsureBaseWith puts back everything AuditBase finds missing and removes
// foreign rules from metabind's chains, in one transaction: the kernel
// applies it whole or not at all, so there is no moment with the DNAT and
// without the source check or the block. When the ip/ip6 table was missing
// (a node's first base, or one switching from iptables), seed's elements
// go in with it.
func (n *NFT) EnsureBaseWith(seed []Rule) ([]string, error) {
	d, err := n.audit()
	if err != nil || len(d.problems) == 0 {
		return nil, err
	}
	c, err := n.dial()
	if err != nil {
		return d.problems, err
	}
	c.AddTable(n.ipTable())
	c.AddTable(n.bridgeTable())
	for _, s := range d.sets {
		if err := c.AddSet(s, nil); err != nil {
			return d.problems, err
		}
	}
	for _, ch := range d.chains {
		c.AddChain(ch)
	}
	if d.freshTable && len(seed) > 0 {
		// Tables, sets and empty chains first (an empty chain does
		// nothing), then the seed's elements, then the rules at once: the
		// base takes effect with every seed element in place.
		if err := c.Flush(); err != nil {
			return d.problems, fmt.Errorf("nftables: install base: %w", err)
		}
		if err := n.apply(seed, false); err != nil {
			return d.problems, fmt.Errorf("nftables: seed the base: %w", err)
		}
		if c, err = n.dial(); err != nil {
			return d.problems, err
		}
	}
	for _, r := range d.foreign {
		if err := c.DelRule(r); err != nil {
			return d.problems, err
		}
	}
	if d.flushSource {
		c.FlushChain(n.chain(false, nftSource))
	}
	for _, r := range n.rules() {
		if r.chain == nftSource && !r.bridge {
			if !d.flushSource {
				continue
			}
		} else if !slices.ContainsFunc(d.rules, func(x nftRule) bool { return x.comment == r.comment && x.bridge == r.bridge }) {
			continue
		}
		c.AddRule(&nftables.Rule{Table: n.chain(r.bridge, r.chain).Table, Chain: n.chain(r.bridge, r.chain), Exprs: r.exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment)})
	}
	if err := c.Flush(); err != nil {
		return d.problems, fmt.Errorf("nftables: install base: %w", err)
	}
	return d.problems, nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return "inet"
}
