package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metabind/metabind/responder"
	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/store"
)

const reloadConfig = `
project: {id: demo-project, numericId: "123456789012"}
node: {name: node-1, zone: us-central1-a}
issuer: {url: https://metabind.local/node-1}
identities:
  - {namespace: payments, serviceAccount: api}
`

type noBindings struct{}

func (noBindings) Lookup(netip.Addr) (store.Binding, bool, error)  { return store.Binding{}, false, nil }
func (noBindings) Bindings() (map[netip.Addr]store.Binding, error) { return nil, nil }

// configMap lays out dir as a ConfigMap volume does, responder.yaml a
// symlink into ..data, and each update swaps ..data atomically.
type configMap struct {
	dir string
	n   int
}

func (c *configMap) update(t *testing.T, content string) {
	t.Helper()
	c.n++
	version := filepath.Join(c.dir, "..v"+string(rune('0'+c.n)))
	if err := os.Mkdir(version, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(version, "responder.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if c.n == 1 {
		if err := os.Symlink("..data/responder.yaml", filepath.Join(c.dir, "responder.yaml")); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The configuration file, updated as Kubernetes updates a ConfigMap, is
// reloaded when it changes and on SIGHUP; an invalid one, or one that
// changes what needs a restart, is logged and the configuration in force
// stays.
func TestConfigReload(t *testing.T) {
	cm := &configMap{dir: t.TempDir()}
	cm.update(t, reloadConfig)
	path := filepath.Join(cm.dir, "responder.yaml")
	cfg, err := responder.LoadNodeConfig(path, "")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := issuer.New(cfg.Issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	live, err := responder.NewLive(cfg, noBindings{}, iss, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A file: the test reads it while the watch writes.
	logs, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	logged := func(s string) func() bool {
		return func() bool { b, _ := os.ReadFile(logs.Name()); return strings.Contains(string(b), s) }
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal, 1)
	w := newConfigWatch(configFile{path: path}, live, slog.New(slog.NewJSONHandler(logs, nil)))
	go w.run(ctx, hup, 10*time.Millisecond)

	first := live.Current()
	cm.update(t, reloadConfig+"limits: {burst: -1}\n")
	waitFor(t, "the invalid file's error", logged(`"msg":"configuration not reloaded: it is not valid; keeping the one in force"`))
	if !logged("limits.burst")() || live.Current() != first {
		t.Fatal("an invalid file replaced the responder, or its error is not logged")
	}

	cm.update(t, reloadConfig+"limits: {burst: 7}\nlog: {requests: none}\n")
	waitFor(t, "the reload", func() bool { return live.Current() != first })
	waitFor(t, "its log line", logged(`"changed":["limits","log"],"tokenCacheKept":true`))

	hup <- syscall.SIGHUP
	waitFor(t, "SIGHUP's reload", logged(`"msg":"configuration reloaded: nothing changed","trigger":"SIGHUP"`))

	second := live.Current()
	cm.update(t, strings.Replace(reloadConfig, "metabind.local", "other.example", 1))
	waitFor(t, "the restart error", logged(`"msg":"configuration not reloaded: restart needed"`))
	if live.Current() != second {
		t.Fatal("an issuer change replaced the responder")
	}
}
