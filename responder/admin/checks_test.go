package admin

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/reconcile"
)

type fakeView struct{ err error }

func (v fakeView) Len() (int, error) { return 0, v.err }

type fakeLoop struct {
	s  reconcile.BaseStatus
	ok bool
}

func (l fakeLoop) LastStatus() (reconcile.BaseStatus, bool) { return l.s, l.ok }

// Each check passes in the good case and fails, saying why, in each bad
// one.
func TestChecks(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name  string
		check Check
		want  string // the result's line
	}{
		{"store readable", StoreCheck(fakeView{}), "[+]store ok"},
		{"store unreadable", StoreCheck(fakeView{errors.New("timeout waiting for the lock")}),
			"[-]store failed: the binding store cannot be read: timeout waiting for the lock"},

		{"rules whole", RulesCheck(fakeLoop{reconcile.BaseStatus{At: now, Bases: 2}, true}, time.Minute), "[+]rules ok"},
		{"no bases yet", RulesCheck(fakeLoop{reconcile.BaseStatus{At: now}, true}, time.Minute), "[+]rules ok: no bases recorded yet"},
		{"not audited yet", RulesCheck(fakeLoop{}, time.Minute), "[-]rules failed: the repair loop has not audited the rules yet"},
		{"audit too old", RulesCheck(fakeLoop{reconcile.BaseStatus{At: now.Add(-time.Hour), Bases: 1}, true}, time.Minute),
			"[-]rules failed: the repair loop last audited the rules 1h0m0s ago"},
		{"audit failed", RulesCheck(fakeLoop{reconcile.BaseStatus{At: now, Bases: 1, Err: errors.New("exit status 4")}, true}, time.Minute),
			"[-]rules failed: cannot audit the rules: exit status 4"},
		{"one problem", RulesCheck(fakeLoop{reconcile.BaseStatus{At: now, Bases: 1, Problems: []string{"filter chain METABIND-SOURCE is missing"}}, true}, time.Minute),
			"[-]rules failed: filter chain METABIND-SOURCE is missing"},
		{"problems", RulesCheck(fakeLoop{reconcile.BaseStatus{At: now, Bases: 1, Problems: []string{"a", "b", "c"}}, true}, time.Minute),
			"[-]rules failed: a (and 2 more problems)"},

		{"informer synced", KubernetesCheck(func() bool { return true }), "[+]kubernetes ok"},
		{"informer not synced", KubernetesCheck(func() bool { return false }),
			"[-]kubernetes failed: the pod informer has not listed this node's pods yet"},

		{"key loaded", SigningKeyCheck(func() string { return "kid-1" }), "[+]signing-key ok"},
		{"no key", SigningKeyCheck(func() string { return "" }), "[-]signing-key failed: no signing key loaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			results, ready := RunChecks([]Check{tc.check})
			if got := results[0].String(); got != tc.want || ready == strings.HasPrefix(tc.want, "[-]") {
				t.Errorf("%q (ready %v), want %q", got, ready, tc.want)
			}
		})
	}
}
