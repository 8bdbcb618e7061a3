package redirect

import (
	"errors"
	"fmt"
	"net/netip"
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
type Redirect struct {
	tables    Tables
	metadata  netip.AddrPort
	responder netip.AddrPort
}

// New returns a Redirect that runs iptables (waiting up to 5 s for the
// xtables lock where the backend has one).
func New(metadata, responder netip.AddrPort) (*Redirect, error) {
	ipt, err := iptables.New(iptables.Timeout(5))
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	return NewWithTables(ipt, metadata, responder), nil
}

// NewWithTables returns a Redirect over t.
func NewWithTables(t Tables, metadata, responder netip.AddrPort) *Redirect {
	return &Redirect{tables: t, metadata: metadata, responder: responder}
}

// BaseInstalled is the fast check an ADD makes: two invocations, the nat
// jump and the filter jump, which EnsureBase installs last and first. CHECK
// verifies every piece (CheckBase).
func (r *Redirect) BaseInstalled() (bool, error) {
	natOK, err := r.exists("nat", "PREROUTING", natJumpSpec(r.metadata))
	if err != nil {
		return false, fmt.Errorf("check nat PREROUTING jump: %w", err)
	}
	if !natOK {
		return false, nil
	}
	fwdOK, err := r.exists("filter", "FORWARD", forwardJumpSpec(r.metadata))
	if err != nil {
		return false, fmt.Errorf("check filter FORWARD jump: %w", err)
	}
	return fwdOK, nil
}

// EnsureBase creates the chains, jumps and block rules every pod rule relies
// on; pieces already there are left alone. Callers serialise it (the
// plugin holds the store's lock), so two first ADDs do not both insert.
func (r *Redirect) EnsureBase() error {
	// Block before redirecting: a jump into an empty DNAT chain is harmless,
	// an open path to the real metadata server is not.
	steps := []struct {
		table, chain string
		spec         []string
		jump         bool
	}{
		{"filter", FilterChain, blockSpec, false},
		{"filter", "FORWARD", forwardJumpSpec(r.metadata), true},
		{"filter", "INPUT", inputJumpSpec(r.metadata), true},
		{"filter", "INPUT", directSpec(r.responder), true},
		{"nat", NATChain, nil, false},
		{"nat", "PREROUTING", natJumpSpec(r.metadata), true},
	}
	for _, s := range steps {
		if !s.jump {
			if err := r.ensureChain(s.table, s.chain); err != nil {
				return err
			}
			if s.spec == nil {
				continue
			}
		}
		if _, err := r.ensureRule(s.table, s.chain, s.jump, s.spec); err != nil {
			return err
		}
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

// ensureRule adds spec unless present; jumps go first in the built-in
// chains so that no earlier ACCEPT or DNAT can take metadata traffic.
// It reports whether it added the rule.
func (r *Redirect) ensureRule(table, chain string, first bool, spec []string) (bool, error) {
	ok, err := r.exists(table, chain, spec)
	if err != nil {
		return false, fmt.Errorf("check %s %s: %w", table, chain, err)
	}
	if ok {
		return false, nil
	}
	if first {
		err = r.tables.Insert(table, chain, 1, spec...)
	} else {
		err = r.tables.Append(table, chain, spec...)
	}
	if err != nil {
		return false, fmt.Errorf("add to %s %s: %w", table, chain, err)
	}
	return true, nil
}

// CheckBase reports an error naming the first chain, jump or block rule
// that EnsureBase would have to create.
func (r *Redirect) CheckBase() error {
	for _, s := range []struct {
		table, chain string
		spec         []string
	}{
		{"nat", "PREROUTING", natJumpSpec(r.metadata)},
		{"filter", "FORWARD", forwardJumpSpec(r.metadata)},
		{"filter", "INPUT", inputJumpSpec(r.metadata)},
		{"filter", "INPUT", directSpec(r.responder)},
		{"filter", FilterChain, blockSpec},
	} {
		ok, err := r.exists(s.table, s.chain, s.spec)
		if err != nil {
			return fmt.Errorf("check %s %s: %w", s.table, s.chain, err)
		}
		if !ok {
			return fmt.Errorf("%s %s lacks metabind's rule %q", s.table, s.chain, strings.Join(s.spec, " "))
		}
	}
	return nil
}

// Add installs rule unless it is already there (a retried ADD), and reports
// whether it added it.
func (r *Redirect) Add(rule Rule) (bool, error) {
	added, err := r.ensureRule("nat", NATChain, false, rule.Spec())
	if err != nil {
		return false, fmt.Errorf("redirect %s on %s: %w", rule.IP, rule.HostInterface, err)
	}
	return added, nil
}

// Append installs rule without looking for it first: one invocation, for
// an attachment that had no rule.
func (r *Redirect) Append(rule Rule) error {
	if err := r.tables.Append("nat", NATChain, rule.Spec()...); err != nil {
		return fmt.Errorf("redirect %s on %s: %w", rule.IP, rule.HostInterface, err)
	}
	return nil
}

// Remove deletes rule; a rule that is already gone is not an error.
func (r *Redirect) Remove(rule Rule) error {
	err := r.tables.Delete("nat", NATChain, rule.Spec()...)
	if err == nil || isNotExist(err) {
		return nil
	}
	return fmt.Errorf("remove redirect %s on %s: %w", rule.IP, rule.HostInterface, err)
}

// Has reports whether rule is installed.
func (r *Redirect) Has(rule Rule) (bool, error) {
	return r.exists("nat", NATChain, rule.Spec())
}

// exists checks for a rule. A missing chain, or a jump to a chain that does
// not exist yet, means the rule is not there (nf_tables iptables exits 2 for
// those where legacy iptables exits 1).
func (r *Redirect) exists(table, chain string, spec []string) (bool, error) {
	ok, err := r.tables.Exists(table, chain, spec...)
	if err != nil && isNotExist(err) {
		return false, nil
	}
	return ok, err
}

// RemoveByComment deletes every rule of NATChain whose comment names the
// attachment: the way to clean up when the store no longer knows the rules'
// interfaces and IPs. It returns how many it removed.
func (r *Redirect) RemoveByComment(containerID, ifName string) (int, error) {
	rules, err := r.tables.List("nat", NATChain)
	if err != nil {
		if isNotExist(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("list nat %s: %w", NATChain, err)
	}
	want := Comment(containerID, ifName)
	n := 0
	for _, line := range rules {
		spec, ok := ruleFromListing(line)
		if !ok || commentOf(spec) != want {
			continue
		}
		if err := r.tables.Delete("nat", NATChain, spec...); err != nil && !isNotExist(err) {
			return n, fmt.Errorf("remove %q: %w", line, err)
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

// commentOf returns the --comment value of a rule spec.
func commentOf(spec []string) string {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == "--comment" {
			return spec[i+1]
		}
	}
	return ""
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
