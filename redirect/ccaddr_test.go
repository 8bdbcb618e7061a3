package redirect

import (
	"net/netip"
	"strings"
	"testing"
)

// A container credentials address gets the metadata address's jumps, the
// same rules with its destination, and nothing else changes.
func TestBaseRedirectsEveryAddressLikeMetadata(t *testing.T) {
	plain := base([]netip.AddrPort{metadata}, responder)
	both := base([]netip.AddrPort{metadata, ccaddr}, responder)
	var added []string
	for _, p := range both {
		if !containsPiece(plain, p) {
			added = append(added, p.chain+" "+strings.Join(p.spec, " "))
		}
	}
	want := []string{
		"FORWARD -d 169.254.170.23/32 -p tcp -m tcp --dport 80 -m comment --comment " + commentBlockJump + " -j " + FilterChain,
		"INPUT -d 169.254.170.23/32 ! -i lo -p tcp -m tcp --dport 80 -m comment --comment " + commentBlockJump + " -j " + FilterChain,
		"PREROUTING -d 169.254.170.23/32 -p tcp -m tcp --dport 80 -m comment --comment " + commentRedirectJmp + " -j " + NATChain,
	}
	if strings.Join(added, "\n") != strings.Join(want, "\n") {
		t.Fatalf("pieces added for the extra address:\n%s\nwant\n%s", strings.Join(added, "\n"), strings.Join(want, "\n"))
	}
	for _, p := range plain {
		if !containsPiece(both, p) {
			t.Errorf("piece %+v lost", p)
		}
	}
	for _, p := range both {
		if p.spec != nil && p.first && !isMetabinds(p.listed()) {
			t.Errorf("jump %q is not recognisably metabind's", p.listed())
		}
	}
}

func containsPiece(ps []piece, q piece) bool {
	for _, p := range ps {
		if p.table == q.table && p.chain == q.chain && strings.Join(p.spec, " ") == strings.Join(q.spec, " ") {
			return true
		}
	}
	return false
}

// A node upgraded to a netconf with containerCredentialsAddress keeps its
// base: the audit names only the new jumps and the repair only inserts
// them, deleting nothing, so no bound pod is refused and no unbound one let
// through meanwhile. The old base stays whole, so the two never fight.
func TestUpgradeOnlyAddsTheNewJumps(t *testing.T) {
	f := newFake()
	old := NewWithTables(f, metadata, responder)
	if _, err := old.EnsureBase(); err != nil {
		t.Fatal(err)
	}
	// A foreign rule below metabind's jumps is none of the audit's business.
	f.rules["filter/INPUT"] = append(f.rules["filter/INPUT"], "-i cali+ -j ACCEPT")
	before := map[string][]string{}
	for k, v := range f.rules {
		before[k] = append([]string(nil), v...)
	}
	r := NewWithTables(f, metadata, responder, ccaddr)
	problems, err := r.AuditBase()
	if err != nil || len(problems) != 3 {
		t.Fatalf("audit of the old base = %q, %v; want the three new jumps", problems, err)
	}
	for _, p := range problems {
		if !strings.Contains(p, "169.254.170.23/32") || !strings.Contains(p, "lacks metabind's rule") {
			t.Errorf("problem %q is not a missing jump of the new address", p)
		}
	}
	f.calls = nil
	if _, err := r.EnsureBase(); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.calls {
		if strings.HasPrefix(c, "delete") || strings.HasPrefix(c, "append") {
			t.Fatalf("upgrade did more than insert: %q", f.calls)
		}
	}
	for k, v := range before {
		got := f.rules[k]
		if len(got) < len(v) || strings.Join(got[len(got)-len(v):], "\n") != strings.Join(v, "\n") {
			t.Errorf("%s: the old rules moved: %q, was %q", k, got, v)
		}
	}
	if err := r.CheckBase(); err != nil {
		t.Fatalf("after the upgrade: %v", err)
	}
	if err := old.CheckBase(); err != nil {
		t.Fatalf("the old base after the upgrade: %v", err)
	}

	// With iptables-restore, the same upgrade is one run of inserts.
	f2 := newFake()
	if _, err := NewWithTables(f2, metadata, responder).EnsureBase(); err != nil {
		t.Fatal(err)
	}
	r2 := NewWithTables(f2, metadata, responder, ccaddr)
	var got string
	r2.restore = func(b string) error { got = b; return nil }
	if _, err := r2.EnsureBase(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "-D ") || strings.Count(got, "-I ") != 3 || strings.Count(got, "169.254.170.23/32") != 3 {
		t.Fatalf("upgrade batch:\n%s", got)
	}
}

// A flushed PREROUTING loses both jumps; a foreign rule above them all
// re-places the lot.
func TestRepairWithTwoAddresses(t *testing.T) {
	f := newFake()
	r := NewWithTables(f, metadata, responder, ccaddr)
	if _, err := r.EnsureBase(); err != nil {
		t.Fatal(err)
	}
	delete(f.rules, "nat/PREROUTING")
	if problems, _ := r.AuditBase(); len(problems) != 2 {
		t.Fatalf("audit after a flush of PREROUTING = %q", problems)
	}
	if _, err := r.EnsureBase(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.rules["nat/PREROUTING"]); n != 2 {
		t.Fatalf("PREROUTING after the repair: %q", f.rules["nat/PREROUTING"])
	}
	f.rules["filter/FORWARD"] = append([]string{"-j ACCEPT"}, f.rules["filter/FORWARD"]...)
	if problems, _ := r.AuditBase(); len(problems) != 1 || !strings.Contains(problems[0], "stands above") {
		t.Fatalf("audit with a foreign rule on top of FORWARD = %q", problems)
	}
	if _, err := r.EnsureBase(); err != nil {
		t.Fatal(err)
	}
	if fw := f.rules["filter/FORWARD"]; len(fw) != 3 || fw[2] != "-j ACCEPT" {
		t.Fatalf("FORWARD after the repair: %q", fw)
	}
	if err := r.CheckBase(); err != nil {
		t.Fatal(err)
	}
}
