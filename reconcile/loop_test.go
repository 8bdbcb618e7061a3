package reconcile

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// blankTables has every chain, empty, and forgets what is written to it:
// every audit finds the whole base missing. listErr, if set, is every
// listing's error.
type blankTables struct{ listErr error }

func (blankTables) Exists(string, string, ...string) (bool, error) { return false, nil }
func (blankTables) Insert(string, string, int, ...string) error    { return nil }
func (blankTables) Append(string, string, ...string) error         { return nil }
func (blankTables) Delete(string, string, ...string) error         { return nil }
func (b blankTables) List(string, string) ([]string, error)        { return nil, b.listErr }
func (blankTables) NewChain(string, string) error                  { return nil }

// The repair loop records what each look found of the bases, before its
// repair, for a readiness probe to read without running iptables.
func TestRepairerRecordsTheLatestLook(t *testing.T) {
	dir := t.TempDir()
	var tables blankTables
	r := &Repairer{StateDir: dir, LockTimeout: time.Second, Log: slog.New(slog.DiscardHandler),
		NewRedirect: func(m, resp netip.AddrPort, extra ...netip.AddrPort) (redirect.Backend, error) {
			return redirect.NewWithTables(&tables, m, resp, extra...), nil
		}}
	if _, ok := r.LastStatus(); ok {
		t.Fatal("a status before the first look")
	}

	r.Once()
	if s, ok := r.LastStatus(); !ok || s.Bases != 0 || len(s.Problems) != 0 || s.Err != nil || s.At.IsZero() {
		t.Fatalf("no base recorded: %+v %v, want a clean status of 0 bases", s, ok)
	}

	st, err := store.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(func(tx *store.Tx) error {
		return tx.RecordBase(store.Base{Metadata: netip.MustParseAddrPort("169.254.169.254:80"),
			Responder: netip.MustParseAddrPort("169.254.169.252:988"), Backend: "iptables"})
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	r.Once()
	if s, _ := r.LastStatus(); s.Bases != 1 || len(s.Problems) == 0 || s.Err != nil {
		t.Fatalf("a base with nothing installed: %+v, want its problems", s)
	}

	tables.listErr = errors.New("iptables: permission denied")
	r.Once()
	if s, _ := r.LastStatus(); s.Err == nil {
		t.Fatalf("rules that cannot be listed: %+v, want an error", s)
	}
}
