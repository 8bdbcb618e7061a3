package installer

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// rechainDeadline is the promise: metabind is back within 2 s of a change.
const rechainDeadline = 2 * time.Second

// waitFor polls cond until it holds or the deadline passes, and returns how
// long it took.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Since(start) > rechainDeadline {
			t.Fatalf("%s: not within %v", what, rechainDeadline)
		}
		<-tick.C
	}
	return time.Since(start)
}

func chained(path string) func() bool {
	return func() bool {
		data, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		c, err := parseConflist(data)
		return err == nil && len(c.plugins) > 0 && isMetabind(c.plugins[len(c.plugins)-1])
	}
}

// TestWatchRechains runs Watch on a node and does to it what CNI agents and
// admins do: Calico's install-cni replacing its conflist by rename, an
// in-place rewrite, a new lexically first config, the binary deleted.
func TestWatchRechains(t *testing.T) {
	o := newNode(t)
	o.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	calico := filepath.Join(o.ConfDir, "10-calico.conflist")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, o) }()

	// Watch starts before the primary CNI has written its config.
	writeFile(t, calico, testdata(t, "10-calico.conflist"), 0o644)
	t.Logf("first config: chained after %v", waitFor(t, "first config", chained(calico)))

	// Calico's install-cni: write a temp file, rename it over the conflist.
	tmp := filepath.Join(o.ConfDir, "calico.conflist.tmp")
	writeFile(t, tmp, testdata(t, "10-calico.conflist"), 0o644)
	if err := os.Rename(tmp, calico); err != nil {
		t.Fatal(err)
	}
	t.Logf("rename over: re-chained after %v", waitFor(t, "rename over", chained(calico)))

	// An in-place rewrite (truncate and write).
	writeFile(t, calico, testdata(t, "10-calico.conflist"), 0o644)
	t.Logf("in-place rewrite: re-chained after %v", waitFor(t, "in-place rewrite", chained(calico)))

	// A new config that sorts first becomes the runtime's: chain it.
	first := filepath.Join(o.ConfDir, "05-flannel.conflist")
	writeFile(t, first, testdata(t, "10-flannel.conflist"), 0o644)
	t.Logf("new first config: chained after %v", waitFor(t, "new first config", chained(first)))

	// The binary deleted: copied again.
	bin := filepath.Join(o.BinDir, "metabind")
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("binary deleted: copied again after %v", waitFor(t, "binary deleted", func() bool {
		_, err := os.Stat(bin)
		return err == nil
	}))

	if got := pluginTypes(t, calico); !slices.Equal(got, []string{"calico", "bandwidth", "portmap", "metabind"}) {
		t.Errorf("calico: %q", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch: %v", err)
		}
	case <-time.After(rechainDeadline):
		t.Error("Watch did not return after its context ended")
	}
}

// TestWatchRefusesABadPluginConf at once rather than logging forever.
func TestWatchRefusesABadPluginConf(t *testing.T) {
	o := newNode(t)
	o.PluginConf = []byte(`{"type":"bridge"}`)
	if err := Watch(context.Background(), o); err == nil {
		t.Fatal("no error")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
