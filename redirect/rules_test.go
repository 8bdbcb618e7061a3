package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

var (
	metadata  = netip.MustParseAddrPort("169.254.169.254:80")
	responder = netip.MustParseAddrPort("169.254.169.252:988")
	ccaddr    = netip.MustParseAddrPort("169.254.170.23:80")
)

func TestRuleSpec(t *testing.T) {
	r := Rule{HostInterface: "veth12", IP: netip.MustParseAddr("10.1.0.5"), Responder: responder, ContainerID: "abc", IfName: "eth0"}
	want := []string{"-i", "veth12", "-s", "10.1.0.5/32", "-p", "tcp", "-m", "comment", "--comment", "metabind:abc/eth0",
		"-j", "DNAT", "--to-destination", "169.254.169.252:988"}
	if got := r.Spec(); !reflect.DeepEqual(got, want) {
		t.Fatalf("ptp rule:\n got %q\nwant %q", got, want)
	}
	r.Bridged = true
	got := r.Spec()
	if !reflect.DeepEqual(got[:4], []string{"-m", "physdev", "--physdev-in", "veth12"}) || contains(got, "-i") {
		t.Fatalf("bridge port rule must match the port with physdev, not -i: %q", got)
	}
}

func TestSourceSpecMatchesLikeTheDNAT(t *testing.T) {
	r := Rule{HostInterface: "veth12", Bridged: true, IP: netip.MustParseAddr("10.1.0.5"), Responder: responder, ContainerID: "abc", IfName: "eth0"}
	src, dnat := r.SourceSpec(), r.Spec()
	if !reflect.DeepEqual(src[:6], dnat[:6]) || src[len(src)-1] != "ACCEPT" {
		t.Fatalf("source check %q must match the same port and address as the DNAT %q and ACCEPT", src, dnat)
	}
	p := r.pieces()
	if p[0].chain != SourceChain || !p[0].first || p[1].chain != NATChain {
		t.Fatalf("pieces: %+v; the source check goes first, above its chain's final REJECT", p)
	}
}

func TestBaseSelectsOnlyMetadataAndResponderTraffic(t *testing.T) {
	var jumps []string
	for _, p := range base([]netip.AddrPort{metadata}, responder) {
		if p.spec != nil && (p.chain == "PREROUTING" || p.chain == "INPUT" || p.chain == "FORWARD") {
			if !p.first {
				t.Errorf("jump in %s must go first: %q", p.chain, p.spec)
			}
			jumps = append(jumps, p.chain+" "+strings.Join(p.spec, " "))
		}
	}
	want := []string{
		"FORWARD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 ",
		"INPUT -d 169.254.169.254/32 ! -i lo -p tcp -m tcp --dport 80 ",
		"INPUT -d 169.254.169.252/32 ! -i lo -p tcp -m tcp --dport 988 ", // the guard: REJECT
		"INPUT -d 169.254.169.252/32 ! -i lo -p tcp -m tcp --dport 988 ", // the jump to SourceChain
		"PREROUTING -d 169.254.169.254/32 -p tcp -m tcp --dport 80 ",
	}
	if len(jumps) != len(want) {
		t.Fatalf("jumps %q", jumps)
	}
	for i := range want {
		if !strings.HasPrefix(jumps[i], want[i]) {
			t.Errorf("jump %d = %q, want prefix %q", i, jumps[i], want[i])
		}
	}
}

// fakeTables records calls and keeps rules in memory.
type fakeTables struct {
	rules map[string][]string // "table/chain" -> joined specs
	calls []string
}

func newFake() *fakeTables { return &fakeTables{rules: map[string][]string{}} }

func (f *fakeTables) key(t, c string) string { return t + "/" + c }

func (f *fakeTables) Exists(t, c string, spec ...string) (bool, error) {
	f.calls = append(f.calls, "check "+c)
	return contains(f.rules[f.key(t, c)], strings.Join(spec, " ")), nil
}
func (f *fakeTables) Insert(t, c string, _ int, spec ...string) error {
	f.calls = append(f.calls, "insert "+c)
	f.rules[f.key(t, c)] = append([]string{strings.Join(spec, " ")}, f.rules[f.key(t, c)]...)
	return nil
}
func (f *fakeTables) Append(t, c string, spec ...string) error {
	f.calls = append(f.calls, "append "+c)
	f.rules[f.key(t, c)] = append(f.rules[f.key(t, c)], strings.Join(spec, " "))
	return nil
}
func (f *fakeTables) Delete(t, c string, spec ...string) error {
	f.calls = append(f.calls, "delete "+c)
	rs, s := f.rules[f.key(t, c)], strings.Join(spec, " ")
	for i, r := range rs {
		if r == s {
			f.rules[f.key(t, c)] = append(rs[:i:i], rs[i+1:]...)
			return nil
		}
	}
	return notExist()
}
func (f *fakeTables) List(t, c string) ([]string, error) {
	f.calls = append(f.calls, "list "+c)
	var out []string
	for _, r := range f.rules[f.key(t, c)] {
		// iptables-nft quotes comments in listings.
		r = strings.Replace(r, "--comment "+CommentPrefix, `--comment "`+CommentPrefix, 1)
		if i := strings.Index(r, `--comment "`); i >= 0 {
			if j := strings.Index(r[i+len(`--comment "`):], " "); j >= 0 {
				k := i + len(`--comment "`) + j
				r = r[:k] + `"` + r[k:]
			}
		}
		out = append(out, fmt.Sprintf("-A %s %s", c, r))
	}
	return out, nil
}
func (f *fakeTables) NewChain(t, c string) error {
	f.calls = append(f.calls, "new "+c)
	return nil
}

type notExistError struct{}

func (notExistError) Error() string    { return "Bad rule (does a matching rule exist in that chain?)." }
func (notExistError) IsNotExist() bool { return true }

func notExist() error { return notExistError{} }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestEnsureBaseRepairsWhatIsMissingAndOnlyThat(t *testing.T) {
	f := newFake()
	r := NewWithTables(f, metadata, responder)
	if problems, err := r.AuditBase(); err != nil || len(problems) == 0 {
		t.Fatalf("AuditBase on an empty node = %q, %v; want every rule missing", problems, err)
	}
	if _, err := r.EnsureBase(); err != nil {
		t.Fatal(err)
	}
	if err := r.CheckBase(); err != nil {
		t.Fatalf("CheckBase after EnsureBase: %v", err)
	}
	jumpAboveGuard := func() bool {
		input := f.rules["filter/INPUT"]
		jump, guard := -1, -1
		for i, rule := range input {
			if strings.HasSuffix(rule, "-j "+SourceChain) {
				jump = i
			}
			if strings.Contains(rule, "not a bound pod") {
				guard = i
			}
		}
		return jump >= 0 && guard > jump
	}
	if !jumpAboveGuard() {
		t.Fatalf("INPUT after EnsureBase: %q; the jump to %s must come before its REJECT", f.rules["filter/INPUT"], SourceChain)
	}
	// A lost guard is put back below the jump, not above it.
	var guard piece
	for _, p := range base([]netip.AddrPort{metadata}, responder) {
		if p.chain == "INPUT" && p.spec[len(p.spec)-1] == "tcp-reset" {
			guard = p
		}
	}
	if err := f.Delete(guard.table, guard.chain, guard.spec...); err != nil {
		t.Fatalf("remove the guard: %v", err)
	}
	if repaired, err := r.EnsureBase(); err != nil || !jumpAboveGuard() || len(repaired) != 1 {
		t.Fatalf("INPUT after repairing the guard: %q, %v (found %q)", f.rules["filter/INPUT"], err, repaired)
	}
	// Another agent's ACCEPT on top of INPUT shadows the block: the jumps
	// go back on top.
	f.rules["filter/INPUT"] = append([]string{"-i cali+ -j ACCEPT"}, f.rules["filter/INPUT"]...)
	if problems, _ := r.AuditBase(); len(problems) != 1 || !strings.Contains(problems[0], "stands above") {
		t.Fatalf("AuditBase with a foreign rule on top = %q", problems)
	}
	if _, err := r.EnsureBase(); err != nil {
		t.Fatal(err)
	}
	if in := f.rules["filter/INPUT"]; in[len(in)-1] != "-i cali+ -j ACCEPT" || !jumpAboveGuard() {
		t.Fatalf("INPUT after the repair: %q; metabind's rules must be above the foreign ACCEPT", in)
	}
	f.calls = nil
	if repaired, err := r.EnsureBase(); err != nil || len(repaired) != 0 {
		t.Fatalf("EnsureBase on a whole base = %q, %v", repaired, err)
	}
	for _, c := range f.calls {
		if !strings.HasPrefix(c, "list") {
			t.Fatalf("EnsureBase on an installed base changed something: %q", f.calls)
		}
	}
}

func TestAddRemoveAndRemoveByComment(t *testing.T) {
	f := newFake()
	r := NewWithTables(f, metadata, responder)
	a := Rule{HostInterface: "veth1", IP: netip.MustParseAddr("10.1.0.5"), Responder: responder, ContainerID: "abc", IfName: "eth0"}
	b := Rule{HostInterface: "veth2", IP: netip.MustParseAddr("10.1.0.6"), Responder: responder, ContainerID: "abcd", IfName: "eth0"}
	for _, rule := range []Rule{a, a, b} {
		if _, err := r.Add(rule); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.rules["nat/"+NATChain]); n != 2 {
		t.Fatalf("a retried Add duplicated the rule: %d rules", n)
	}
	if err := r.Remove(a); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(a); err != nil {
		t.Fatalf("removing a removed rule: %v", err)
	}
	if _, err := r.Add(a); err != nil {
		t.Fatal(err)
	}
	// "abc" must not match "abcd"'s rule.
	n, err := r.RemoveByComment("abc", "eth0")
	if err != nil || n != 2 {
		t.Fatalf("RemoveByComment = %d, %v; want 2 (the DNAT and the source check)", n, err)
	}
	if has, _ := r.Has(a); has {
		t.Fatal("RemoveByComment left a's rules")
	}
	if has, _ := r.Has(b); !has {
		t.Fatal("RemoveByComment removed another container's rule")
	}
}

func TestAddBatchProvesTheBaseAndAddsThePod(t *testing.T) {
	var got string
	r := NewWithTables(newFake(), metadata, responder)
	r.restore = func(b string) error { got = b; return nil }
	rule := Rule{HostInterface: "veth1", IP: netip.MustParseAddr("10.1.0.5"), Responder: responder, ContainerID: "abc", IfName: "eth0"}
	if err := r.AddBatch([]Rule{rule}, true); err != nil {
		t.Fatal(err)
	}
	filter, nat, ok := strings.Cut(got, "COMMIT\n*nat\n")
	if !ok || !strings.HasPrefix(filter, "*filter\n") || !strings.HasSuffix(nat, "COMMIT\n") {
		t.Fatalf("batch is not filter then nat:\n%s", got)
	}
	// Every jump is deleted and put back first in its chain: a missing one
	// fails the whole batch.
	for _, chain := range []string{"FORWARD", "INPUT"} {
		if strings.Count(filter, "-D "+chain+" ") != strings.Count(filter, "-I "+chain+" 1 ") || !strings.Contains(filter, "-D "+chain+" ") {
			t.Errorf("%s jumps are not proved and re-placed:\n%s", chain, filter)
		}
	}
	if !strings.Contains(nat, "-D PREROUTING ") || !strings.Contains(nat, "-I PREROUTING 1 ") {
		t.Errorf("nat jump not proved:\n%s", nat)
	}
	if !strings.Contains(filter, `--comment "metabind: block unclaimed metadata traffic"`) {
		t.Errorf("comments with spaces must be quoted:\n%s", filter)
	}
	if !strings.Contains(filter, "-I "+SourceChain+" 1 "+strings.Join(rule.SourceSpec(), " ")) ||
		!strings.Contains(nat, "-A "+NATChain+" "+strings.Join(rule.Spec(), " ")) {
		t.Errorf("pod rules missing:\n%s", got)
	}
	if err := r.AddBatch([]Rule{rule}, false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "-D ") || strings.Contains(got, "PREROUTING") {
		t.Errorf("a batch that does not verify must only add the pod's rules:\n%s", got)
	}
	if err := r.RemoveBatch([]Rule{rule}); err != nil {
		t.Fatal(err)
	}
	if got != "*filter\n-D "+SourceChain+" "+strings.Join(rule.SourceSpec(), " ")+"\nCOMMIT\n*nat\n-D "+NATChain+" "+strings.Join(rule.Spec(), " ")+"\nCOMMIT\n" {
		t.Errorf("remove batch:\n%s", got)
	}
}

// iptables-nft lists a chain in a table it has not made yet as
// "incompatible": for ListOwned (DEL and GC before a node's first ADD) that
// is no rules, not an error.
type missingTables struct{ *fakeTables }

func (missingTables) List(string, string) ([]string, error) {
	return nil, errors.New("running [iptables -t nat -S METABIND-DNAT]: exit status 1: iptables v1.8.9 (nf_tables): chain `METABIND-DNAT' in table `nat' is incompatible, use 'nft' tool.")
}

func TestListOwnedBeforeTheFirstADD(t *testing.T) {
	r := NewWithTables(missingTables{newFake()}, metadata, responder)
	if owned, err := r.ListOwned(); err != nil || len(owned) != 0 {
		t.Fatalf("ListOwned on a fresh node = %v, %v", owned, err)
	}
	if n, err := r.RemoveByComment("abc", "eth0"); err != nil || n != 0 {
		t.Fatalf("RemoveByComment on a fresh node = %d, %v", n, err)
	}
}

// Two bases of one family (a second network, a changed responderAddress)
// share INPUT and its block jump: each repair must leave the other whole,
// or they would re-place each other for ever.
func TestTwoBasesOfOneFamilyConverge(t *testing.T) {
	f := newFake()
	a := NewWithTables(f, metadata, responder)
	b := NewWithTables(f, metadata, netip.MustParseAddrPort("169.254.169.251:988"))
	for round := 0; round < 3; round++ {
		for name, r := range map[string]*Redirect{"a": a, "b": b} {
			repaired, err := r.EnsureBase()
			if err != nil {
				t.Fatal(err)
			}
			if round > 0 && len(repaired) > 0 {
				t.Fatalf("round %d: base %s repaired again: %q\nINPUT: %q", round, name, repaired, f.rules["filter/INPUT"])
			}
		}
	}
	// A rule commented like metabind's but not one of them is foreign.
	f.rules["filter/INPUT"] = append([]string{"-i eth1 -m comment --comment metabind-allow -j ACCEPT"}, f.rules["filter/INPUT"]...)
	if problems, _ := a.AuditBase(); len(problems) != 1 || !strings.Contains(problems[0], "stands above") {
		t.Fatalf("audit with a look-alike comment on top = %q", problems)
	}
}
