package redirect

import (
	"errors"
	"fmt"
	"strings"
)

// The base is damaged in three ways: a firewall reload flushes a built-in
// chain (INPUT, FORWARD, PREROUTING) or a whole table, someone deletes one
// of metabind's chains, or another agent (Calico, a host firewall) inserts
// rules at the top of a built-in chain. The last is as bad as the others:
// an ACCEPT above metabind's block lets an unbound pod reach the node's
// real metadata server. AuditBase finds all three by listing the chains;
// EnsureBase puts back what is missing and re-places the jumps on top.

// damage is what an audit found.
type damage struct {
	problems []string
	// replace names the built-in chains ("table chain") whose metabind
	// rules must be put back on top, in order.
	replace map[string]bool
	// present counts the listed copies of each base rule.
	present map[string]int
	// missing names metabind's chains that do not exist.
	missing map[string]bool
}

// AuditBase lists what is wrong with the chains, jumps and block rules, in
// words an operator can act on; none means the base is whole. It only
// reads: one `iptables -S` per chain involved.
func (r *Redirect) AuditBase() ([]string, error) {
	d, err := r.audit()
	return d.problems, err
}

// CheckBase reports the first thing AuditBase finds, as an error.
func (r *Redirect) CheckBase() error {
	problems, err := r.AuditBase()
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return errors.New(problems[0])
	}
	return nil
}

func (r *Redirect) audit() (damage, error) {
	d := damage{replace: map[string]bool{}, present: map[string]int{}, missing: map[string]bool{}}
	listed := map[string][]string{}
	exists := map[string]bool{}
	list := func(table, chain string) ([]string, error) {
		k := table + " " + chain
		if _, ok := exists[k]; ok {
			return listed[k], nil
		}
		lines, ok, err := r.listRules(table, chain)
		listed[k], exists[k] = lines, ok
		return lines, err
	}
	for _, p := range r.base {
		lines, err := list(p.table, p.chain)
		if err != nil {
			return d, err
		}
		if p.spec == nil {
			if !exists[p.table+" "+p.chain] {
				d.missing[p.chain] = true
				d.problems = append(d.problems, fmt.Sprintf("%s chain %s is missing", p.table, p.chain))
			}
			continue
		}
		n := count(lines, p.listed())
		d.present[p.listed()] = n
		if n == 0 {
			d.problems = append(d.problems, fmt.Sprintf("%s %s lacks metabind's rule %q", p.table, p.chain, strings.Join(p.spec, " ")))
		}
	}
	// A jump missing from a built-in chain (a flushed chain, a base that
	// gained a redirected address on upgrade) is only added: inserted on
	// top, it leaves the jumps that are there in place, so a bound pod is
	// never refused nor an unbound one let through meanwhile.
	// The jumps must stand on top of their built-in chains, with nothing
	// but metabind's own rules above them, and the jump to the source
	// check above the REJECT that follows it. Nothing more is required of
	// their order: another base of the same family (a second network, a
	// changed responderAddress) shares the chain and its block jump, and
	// two bases that each insisted on a total order would re-place each
	// other for ever.
	for _, k := range firstChains(r.base) {
		lines := listed[k]
		ok := true
		last := -1
		for _, p := range r.base {
			if p.spec != nil && p.first && p.table+" "+p.chain == k {
				last = max(last, index(lines, p.listed()))
			}
		}
		for i := 0; i < last && ok; i++ {
			if !isMetabinds(lines[i]) {
				ok = false
				d.problems = append(d.problems, fmt.Sprintf("%s: %q stands above metabind's jumps", k, lines[i]))
			}
		}
		if jump, guard := index(lines, r.sourceJump().listed()), index(lines, r.guard().listed()); k == "filter INPUT" && jump >= 0 && guard >= 0 && guard < jump {
			ok = false
			d.problems = append(d.problems, fmt.Sprintf("%s: the REJECT stands above the jump to %s", k, SourceChain))
		}
		// A missing jump is inserted on top, above the jumps that are there
		// (see EnsureBase): harmless for all but the REJECT, which must not
		// go above a jump to the source check that is still listed.
		if k == "filter INPUT" && d.present[r.guard().listed()] == 0 && d.present[r.sourceJump().listed()] > 0 {
			ok = false
		}
		if !ok {
			d.replace[k] = true
		}
	}
	return d, nil
}

// EnsureBase creates the chains, jumps and block rules every pod rule
// relies on, and puts metabind's jumps back on top of their built-in
// chains when anything stands above them or one is missing. It returns what
// it found wrong (nothing when the base was whole, in which case it changed
// nothing). Callers serialise it (the plugin's set-up lock, the rules lock).
func (r *Redirect) EnsureBase() ([]string, error) { return r.EnsureBaseWith(nil) }

// EnsureBaseWith is EnsureBase that, when metabind's chains were missing
// (a node's first base, or one switching from nftables), adds seed's
// per-pod rules to the new chains before any jump leads to them.
func (r *Redirect) EnsureBaseWith(seed []Rule) ([]string, error) {
	d, err := r.audit()
	if err != nil || len(d.problems) == 0 {
		return nil, err
	}
	fresh := d.missing[NATChain] && d.missing[SourceChain]
	for _, p := range r.base {
		if p.spec == nil {
			if err := r.ensureChain(p.table, p.chain); err != nil {
				return d.problems, err
			}
		} else if !p.first && d.present[p.listed()] == 0 {
			if err := r.put(p); err != nil {
				return d.problems, err
			}
		}
	}
	if fresh && len(seed) > 0 {
		if err := r.AddBatch(seed, false); err != nil {
			for _, rule := range seed {
				if _, err := r.Add(rule); err != nil {
					return d.problems, err
				}
			}
		}
	}
	if r.restore != nil {
		if b := r.jumpBatch(d); b.String() != "" {
			return d.problems, r.restore(b.String())
		}
		return d.problems, nil
	}
	for _, k := range firstChains(r.base) {
		for _, p := range r.base {
			if !p.first || p.table+" "+p.chain != k {
				continue
			}
			if d.replace[k] {
				for n := d.present[p.listed()]; n > 0; n-- {
					if err := r.tables.Delete(p.table, p.chain, p.spec...); err != nil && !isNotExist(err) {
						return d.problems, fmt.Errorf("re-place %s: %w", k, err)
					}
				}
			} else if d.present[p.listed()] > 0 {
				continue
			}
			if err := r.put(p); err != nil {
				return d.problems, err
			}
		}
	}
	return d.problems, nil
}

// jumpBatch puts the jumps right, in one iptables-restore run: in a
// damaged chain it deletes every listed copy of them and inserts them on
// top; elsewhere it inserts the missing ones on top. Each table commits
// whole, so there is no moment without the block or the source check. If
// the chains changed since the audit, the run fails and changes nothing;
// the next repair tries again.
func (r *Redirect) jumpBatch(d damage) batch {
	var b batch
	for _, p := range r.base {
		if !p.first {
			continue
		}
		if d.replace[p.table+" "+p.chain] {
			for n := d.present[p.listed()]; n > 0; n-- {
				b.line(p.table, "-D", p.chain, p.spec)
			}
		} else if d.present[p.listed()] > 0 {
			continue
		}
		b.line(p.table, "-I", p.chain+" 1", p.spec)
	}
	return b
}

// listRules returns a chain's rules as `iptables -S` prints them, without
// quotes; ok is false when the chain does not exist.
func (r *Redirect) listRules(table, chain string) (rules []string, ok bool, err error) {
	lines, err := r.tables.List(table, chain)
	if err != nil {
		if isNotExist(err) || chainInMissingTable(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("list %s %s: %w", table, chain, err)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, strings.ReplaceAll(l, `"`, ""))
		}
	}
	return rules, true, nil
}

// listed is the piece as `iptables -S` prints it, quotes removed. Base
// specs are written in iptables' own order (see jumpSpec) and hold no
// quote, so the two compare word for word.
func (p piece) listed() string {
	return "-A " + p.chain + " " + strings.Join(p.spec, " ")
}

// isMetabinds tells metabind's own rules from everyone else's by their
// comments: a base rule's (see base) or a per-pod rule's
// ("metabind:<containerID>/<ifname>", no space).
func isMetabinds(listed string) bool {
	_, after, ok := strings.Cut(listed, "--comment ")
	if !ok {
		return false
	}
	if rest, ok := strings.CutPrefix(after, CommentPrefix); ok && rest != "" && rest[0] != ' ' {
		return true
	}
	for _, c := range baseComments {
		if strings.HasPrefix(after, c+" ") {
			return true
		}
	}
	return false
}

// sourceJump and guard are the INPUT rules that must stay in this order.
func (r *Redirect) sourceJump() piece { return r.findBase("-j", SourceChain) }
func (r *Redirect) guard() piece      { return r.findBase("--comment", commentGuard) }

func (r *Redirect) findBase(flag, value string) piece {
	for _, p := range r.base {
		if p.chain == "INPUT" && containsPair(p.spec, flag, value) {
			return p
		}
	}
	return piece{}
}

// firstChains are the built-in chains that hold jumps ("table chain"), in
// base order.
func firstChains(base []piece) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range base {
		k := p.table + " " + p.chain
		if p.spec != nil && p.first && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func index(lines []string, s string) int {
	for i, l := range lines {
		if l == s {
			return i
		}
	}
	return -1
}

func count(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if l == s {
			n++
		}
	}
	return n
}
