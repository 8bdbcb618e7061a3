package redirect

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// ErrBatch means a batch did not apply (nothing of it did: iptables-restore
// commits each table atomically, and a batch that fails in its first table
// never reaches the second). The caller falls back to the rule-by-rule path.
var ErrBatch = errors.New("iptables-restore batch refused")

// restoreWith returns the runner of iptables-restore (or ip6tables-restore)
// in --noflush mode: it applies the batch's commands to the tables as they
// are.
func restoreWith(family iptables.Protocol) func(string) error {
	bin := "iptables-restore"
	if family == iptables.ProtocolIPv6 {
		bin = "ip6tables-restore"
	}
	return func(batch string) error {
		cmd := exec.Command(bin, "--noflush", "--wait", "5")
		cmd.Stdin = strings.NewReader(batch)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%w: %s: %v: %s", ErrBatch, bin, err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
}

// AddBatch installs rules in one iptables-restore run. With verify, the
// same run proves the base is whole: every jump and block rule is deleted
// and put back in place (a delete that finds nothing fails the whole
// batch), which also keeps the jumps first in their built-in chains. A
// delete makes iptables read the rules of the tables it touches, so a
// verifying batch costs more on a node with many pods; without verify the
// batch only inserts and appends, whatever the node holds, and still fails
// if a chain is missing. It returns ErrBatch (wrapped) when the batch did
// not apply, e.g. on a node whose base is not set up yet.
func (r *Redirect) AddBatch(rules []Rule, verify bool) error {
	if r.restore == nil {
		return fmt.Errorf("%w: no iptables-restore on this Redirect", ErrBatch)
	}
	var b batch
	for _, p := range r.base {
		if p.spec == nil || !verify {
			continue
		}
		b.line(p.table, "-D", p.chain, p.spec)
		if p.first {
			b.line(p.table, "-I", p.chain+" 1", p.spec)
		} else {
			b.line(p.table, "-A", p.chain, p.spec)
		}
	}
	for _, rule := range rules {
		for _, p := range rule.pieces() {
			if p.first {
				b.line(p.table, "-I", p.chain+" 1", p.spec)
			} else {
				b.line(p.table, "-A", p.chain, p.spec)
			}
		}
	}
	return r.restore(b.String())
}

// RemoveBatch deletes rules in one iptables-restore run. It returns
// ErrBatch (wrapped) when the batch did not apply, e.g. because a piece is
// already gone; the caller then removes piece by piece.
func (r *Redirect) RemoveBatch(rules []Rule) error {
	if r.restore == nil {
		return fmt.Errorf("%w: no iptables-restore on this Redirect", ErrBatch)
	}
	var b batch
	for _, rule := range rules {
		pieces := rule.pieces()
		for i := len(pieces) - 1; i >= 0; i-- {
			b.line(pieces[i].table, "-D", pieces[i].chain, pieces[i].spec)
		}
	}
	return r.restore(b.String())
}

// batch is iptables-restore input: commands grouped by table, filter
// first (the source checks go in before the DNATs that need them, and out
// after).
type batch struct {
	filter, nat []string
}

func (b *batch) line(table, op, chain string, spec []string) {
	words := make([]string, 0, len(spec)+2)
	words = append(words, op, chain)
	for _, w := range spec {
		words = append(words, quote(w))
	}
	l := strings.Join(words, " ")
	if table == "nat" {
		b.nat = append(b.nat, l)
	} else {
		b.filter = append(b.filter, l)
	}
}

func (b *batch) String() string {
	var s strings.Builder
	for _, t := range []struct {
		name  string
		lines []string
	}{{"filter", b.filter}, {"nat", b.nat}} {
		if len(t.lines) == 0 {
			continue
		}
		s.WriteString("*" + t.name + "\n")
		for _, l := range t.lines {
			s.WriteString(l + "\n")
		}
		s.WriteString("COMMIT\n")
	}
	return s.String()
}

// quote writes a word as iptables-restore reads it: in double quotes when
// it holds a space. metabind's own words never hold a quote.
func quote(w string) string {
	if strings.ContainsAny(w, " \t") {
		return `"` + w + `"`
	}
	return w
}
