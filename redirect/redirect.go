package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Tables is the part of go-iptables that redirect uses; tests substitute a
// recorder.
type Tables interface {
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	List(table, chain string) ([]string, error)
	NewChain(table, chain string) error
}

var _ Tables = (*iptables.IPTables)(nil)

// Redirect installs and removes metabind's rules for one metadata address.
//
// It has two ways to iptables. The hot path, a pod's ADD and DEL, is one
// iptables-restore run (batch.go): every invocation costs milliseconds, and
// go-iptables runs `iptables --version` before its first command and one
// process per rule. Repairs that must be atomic (jumps re-placed on top)
// and bulk repairs (a pod's rules after a flush, orphans) are
// iptables-restore runs too. Everything else (audits, CHECK, single rules)
// goes through go-iptables, created only when first needed.
type Redirect struct {
	family   int            // 0: IPv4, 1: IPv6
	metadata netip.AddrPort // what its base redirects
	extra    []netip.AddrPort
	tables   Tables
	restore  func(batch string) error // nil: no batches, rule by rule
	base     []piece
	// AfterPiece, if set, is called after each per-pod piece is added or
	// removed one by one: the crash tests' checkpoint between a rule's two
	// pieces.
	AfterPiece func()
}

// New returns a Redirect that runs iptables, or ip6tables for an IPv6
// metadata address (waiting up to 5 s for the xtables lock where the
// backend has one). It runs nothing yet. extra are the addresses of the
// same family redirected like metadata (container credentials).
func New(metadata, responder netip.AddrPort, extra ...netip.AddrPort) (*Redirect, error) {
	family := iptables.ProtocolIPv4
	if metadata.Addr().Is6() {
		family = iptables.ProtocolIPv6
	}
	r := NewWithTables(&lazyTables{family: family}, metadata, responder, extra...)
	r.restore = restoreWith(family)
	return r, nil
}

// NewWithTables returns a Redirect over t, without batches.
func NewWithTables(t Tables, metadata, responder netip.AddrPort, extra ...netip.AddrPort) *Redirect {
	extra = slices.Clone(extra)
	return &Redirect{
		family: Family(metadata.Addr()), metadata: metadata, extra: extra, tables: t,
		base: base(append([]netip.AddrPort{metadata}, extra...), responder),
	}
}

// Family is 0 for IPv4 and 1 for IPv6.
func (r *Redirect) Family() int { return r.family }

// Metadata is the metadata address the base redirects.
func (r *Redirect) Metadata() netip.AddrPort { return r.metadata }

// Extra are the other addresses the base redirects like the metadata
// address.
func (r *Redirect) Extra() []netip.AddrPort { return slices.Clone(r.extra) }

// Ready runs iptables once, to tell whether it works at all (STATUS).
func (r *Redirect) Ready() error {
	if lt, ok := r.tables.(*lazyTables); ok {
		_, err := lt.get()
		return err
	}
	return nil
}

func (r *Redirect) ensureChain(table, chain string) error {
	err := r.tables.NewChain(table, chain)
	if err == nil || isExists(err) {
		return nil
	}
	return fmt.Errorf("create %s %s: %w", table, chain, err)
}

// ensure adds p unless present, and reports whether it added it.
func (r *Redirect) ensure(p piece) (bool, error) {
	ok, err := r.exists(p)
	if err != nil || ok {
		return false, err
	}
	return true, r.put(p)
}

// put adds p without looking for it first.
func (r *Redirect) put(p piece) error {
	var err error
	if p.first {
		err = r.tables.Insert(p.table, p.chain, 1, p.spec...)
	} else {
		err = r.tables.Append(p.table, p.chain, p.spec...)
	}
	if err != nil {
		return fmt.Errorf("add to %s %s: %w", p.table, p.chain, err)
	}
	return nil
}

// exists checks for a rule. A missing chain, or a jump to a chain that does
// not exist yet, means the rule is not there (nf_tables iptables exits 2 for
// those where legacy iptables exits 1).
func (r *Redirect) exists(p piece) (bool, error) {
	ok, err := r.tables.Exists(p.table, p.chain, p.spec...)
	if err != nil && isNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check %s %s: %w", p.table, p.chain, err)
	}
	return ok, nil
}

// Add installs rule's pieces that are missing (a retried ADD), and reports
// whether it added any.
func (r *Redirect) Add(rule Rule) (bool, error) {
	added := false
	for _, p := range rule.pieces() {
		ok, err := r.ensure(p)
		if err != nil {
			return added, fmt.Errorf("redirect %s on %s: %w", rule.IP, rule.HostInterface, err)
		}
		added = added || ok
		r.afterPiece()
	}
	return added, nil
}

func (r *Redirect) afterPiece() {
	if r.AfterPiece != nil {
		r.AfterPiece()
	}
}

// Remove deletes rule, the DNAT first; pieces already gone are not an
// error.
func (r *Redirect) Remove(rule Rule) error {
	pieces := rule.pieces()
	for i := len(pieces) - 1; i >= 0; i-- {
		p := pieces[i]
		if err := r.tables.Delete(p.table, p.chain, p.spec...); err != nil && !isNotExist(err) {
			return fmt.Errorf("remove redirect %s on %s from %s: %w", rule.IP, rule.HostInterface, p.chain, err)
		}
		r.afterPiece()
	}
	return nil
}

// Has reports whether every piece of rule is installed.
func (r *Redirect) Has(rule Rule) (bool, error) {
	for _, p := range rule.pieces() {
		ok, err := r.exists(p)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// RemoveByComment deletes every per-pod rule whose comment names the
// attachment: the way to clean up when the store no longer knows the rules'
// interfaces and IPs. It returns how many it removed.
func (r *Redirect) RemoveByComment(containerID, ifName string) (int, error) {
	owned, err := r.ListOwned()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, o := range owned {
		if o.ContainerID != containerID || o.IfName != ifName {
			continue
		}
		if err := r.Delete(o); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// ruleFromListing turns a line of `iptables -S CHAIN` ("-A CHAIN args...")
// back into a rule spec. Our own rules hold no word with a space (the
// comment has none), but iptables-nft quotes comments anyway, so splitting
// on white space and dropping the quotes is exact for them.
func ruleFromListing(line string) ([]string, bool) {
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "-A" {
		return nil, false
	}
	spec := f[2:]
	for i, w := range spec {
		if len(w) >= 2 && w[0] == '"' && w[len(w)-1] == '"' {
			spec[i] = w[1 : len(w)-1]
		}
	}
	return spec, true
}

// quotedListing is ruleFromListing for rules whose comments hold spaces
// (the base's): a word in double quotes is one word.
func quotedListing(line string) ([]string, bool) {
	var words []string
	var w strings.Builder
	quoted, any := false, false
	for _, c := range line {
		switch {
		case c == '"':
			quoted, any = !quoted, true
		case c == ' ' && !quoted:
			if any {
				words = append(words, w.String())
			}
			w.Reset()
			any = false
		default:
			w.WriteRune(c)
			any = true
		}
	}
	if any {
		words = append(words, w.String())
	}
	if len(words) < 3 || words[0] != "-A" {
		return nil, false
	}
	return words[2:], true
}

// isNotExist reports a missing rule or chain (*iptables.Error has the
// method; so does the tests' recorder).
func isNotExist(err error) bool {
	var e interface{ IsNotExist() bool }
	return errors.As(err, &e) && e.IsNotExist()
}

func isExists(err error) bool {
	var e *iptables.Error
	return errors.As(err, &e) && e.ExitStatus() == 1 && strings.Contains(e.Error(), "exists")
}

// Name is the backend's name as store.Base records it.
func (r *Redirect) Name() string { return BackendIPTables }

// SetAfterPiece sets the crash tests' checkpoint (AfterPiece).
func (r *Redirect) SetAfterPiece(f func()) { r.AfterPiece = f }

// Present reports whether any of metabind's chains exists in this
// family's tables.
func (r *Redirect) Present() (bool, error) {
	for _, tc := range [][2]string{{"nat", NATChain}, {"filter", SourceChain}, {"filter", FilterChain}} {
		_, ok, err := r.listRules(tc[0], tc[1])
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

// RemoveAll removes every rule of metabind's from the built-in chains
// (the jumps and the REJECT of every base, found by their comments), then
// metabind's chains with their per-pod rules: in one iptables-restore run
// (each table commits whole), or else one by one, each REJECT before the
// jump above it, so that no moment has a REJECT without the source check
// in front of it.
func (r *Redirect) RemoveAll() error {
	var b batch
	var rejects, jumps [][3]string // table, chain, listing
	for _, tc := range [][2]string{{"nat", "PREROUTING"}, {"filter", "INPUT"}, {"filter", "FORWARD"}} {
		lines, err := r.tables.List(tc[0], tc[1])
		if err != nil && !isNotExist(err) && !chainInMissingTable(err) {
			return fmt.Errorf("list %s %s: %w", tc[0], tc[1], err)
		}
		for _, l := range lines {
			if !strings.HasPrefix(l, "-A ") || !isMetabinds(strings.ReplaceAll(l, `"`, "")) {
				continue
			}
			rest := strings.TrimPrefix(l, "-A "+tc[1]+" ")
			if tc[0] == "nat" {
				b.nat = append(b.nat, "-D "+tc[1]+" "+rest)
			} else {
				b.filter = append(b.filter, "-D "+tc[1]+" "+rest)
			}
			if strings.Contains(l, "-j REJECT") {
				rejects = append(rejects, [3]string{tc[0], tc[1], l})
			} else {
				jumps = append(jumps, [3]string{tc[0], tc[1], l})
			}
		}
	}
	chains := [][2]string{{"nat", NATChain}, {"filter", SourceChain}, {"filter", FilterChain}}
	for _, tc := range chains {
		if _, ok, err := r.listRules(tc[0], tc[1]); err != nil {
			return err
		} else if ok {
			if tc[0] == "nat" {
				b.nat = append(b.nat, "-F "+tc[1], "-X "+tc[1])
			} else {
				b.filter = append(b.filter, "-F "+tc[1], "-X "+tc[1])
			}
		}
	}
	if r.restore != nil && b.String() != "" && r.restore(b.String()) == nil {
		return nil
	}
	for _, x := range append(rejects, jumps...) {
		spec, ok := quotedListing(x[2])
		if !ok {
			continue
		}
		if err := r.tables.Delete(x[0], x[1], spec...); err != nil && !isNotExist(err) {
			return fmt.Errorf("remove %s from %s %s: %w", x[2], x[0], x[1], err)
		}
	}
	for _, tc := range chains {
		if err := r.clearAndDeleteChain(tc[0], tc[1]); err != nil {
			return err
		}
	}
	return nil
}

// clearAndDeleteChain removes a chain of metabind's with its rules; a
// missing one is fine.
func (r *Redirect) clearAndDeleteChain(table, chain string) error {
	_, ok, err := r.listRules(table, chain)
	if err != nil || !ok {
		return err
	}
	d, ok := r.tables.(interface {
		ClearAndDeleteChain(table, chain string) error
	})
	if !ok {
		return fmt.Errorf("delete %s %s: not supported by %T", table, chain, r.tables)
	}
	if err := d.ClearAndDeleteChain(table, chain); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete %s %s: %w", table, chain, err)
	}
	return nil
}
