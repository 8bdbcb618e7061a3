package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	bolt "go.etcd.io/bbolt"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// skewBinDir is where the previous release's binaries are (make skew-deps
// builds them), or the test stops: a skip here, a failure under CI.
func skewBinDir(t *testing.T) string {
	t.Helper()
	root, _ := filepath.Abs("..")
	dir := envOr("METABIND_SKEW_BIN_DIR", filepath.Join(root, ".cache/skew/0bd6b06"))
	for _, b := range []string{"metabind", "metabind-responder"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			cannotRun(t, fmt.Sprintf("needs the previous release's binaries in %s (METABIND_SKEW_BIN_DIR): run make skew-deps (make test does)", dir))
		}
	}
	return dir
}

// Order and skew: a DaemonSet rolling update stops the old responder, its
// init container installs the new plugin, and the new responder starts; a
// rollback does the reverse. Meanwhile the runtime runs whichever plugin is
// installed, so one store is written by one release and read by the other.
// Every bound pod is served with its own identity whenever a responder
// runs, fails closed while none does, and never gets another's identity.
func TestSkewRollingUpdateAndRollback(t *testing.T) {
	old, cur := skewBinDir(t), binDir
	n := newNode(t, chain{name: "ptp", subnet: "10.197.120.0/24"})
	n.startNodeMetadataServer(t)

	// a. The previous release: its plugin binds A and B, its responder
	// serves them. It writes schema 2 and knows no compatVersion.
	n.usePluginFrom(old)
	responder := n.startResponderFrom(t, old, responderConfig)
	a, b := n.addPod(t, "payments", "api-a"), n.addPod(t, "web", "site-b")
	n.expectServed(t, "a: old plugin, old responder", a, b)
	n.expectSchema(t, "a: old plugin", "2", "")

	// b. The rolling update stops the old responder: no answer at all.
	stopResponder(t, responder)
	n.expectNoAnswer(t, "b: no responder", a, b)

	// c. The new plugin is installed and binds C while no responder runs;
	// the new responder serves what either plugin bound.
	n.usePluginFrom(cur)
	c := n.addPod(t, "payments", "api-c")
	n.expectNoAnswer(t, "c: no responder yet", a, b, c)
	n.expectSchema(t, "c: new plugin", "2", fmt.Sprint(store.CompatVersion))
	responder = n.startResponderFrom(t, cur, responderConfig)
	n.expectServed(t, "c: new responder, pods of both plugins", a, b, c)

	// d. Rollback: the old responder serves all three, the old plugin
	// binds D and removes A (its own) and C (the new plugin's), and keeps
	// the store's versions.
	stopResponder(t, responder)
	n.expectNoAnswer(t, "d: no responder", a, b, c)
	n.usePluginFrom(old)
	responder = n.startResponderFrom(t, old, responderConfig)
	n.expectServed(t, "d: old responder after rollback", a, b, c)
	d := n.addPod(t, "web", "site-d")
	// The previous release programs only iptables, and C's ADD put the
	// node on this release's default, auto (nftables here): D, absent from
	// nftables' maps, fails closed until the admin switches the node back
	// to iptables with this release's metabindctl (docs/OPERATIONS.md),
	// which puts in every live binding's rules, D's among them.
	if n.backend != redirect.BackendIPTables {
		n.expectNoAnswer(t, "d: old plugin's ADD on a node still on nftables", d)
		n.run(t, filepath.Join(cur, "metabindctl"), "--state-dir", n.stateDir, "rules", "backend", redirect.BackendIPTables)
		n.backend = redirect.BackendIPTables // what the checks below read
		if present := n.present(t); !present[redirect.BackendIPTables] || present[redirect.BackendNFTables] {
			t.Fatalf("d: after rules backend iptables the node holds %v", present)
		}
	}
	n.expectServed(t, "d: old plugin's ADD after rollback", a, b, c, d)
	n.delPod(t, a)
	n.delPod(t, c)
	n.expectGone(t, "d: old plugin's DEL", a, c)
	n.expectServed(t, "d: after the DELs", b, d)
	n.expectSchema(t, "d: old plugin after rollback", "2", fmt.Sprint(store.CompatVersion))

	// e. The new responder with the old plugin still installed (the
	// update's other order): the old plugin's ADD and DEL are seen at once.
	stopResponder(t, responder)
	n.startResponderFrom(t, cur, responderConfig)
	e := n.addPod(t, "payments", "api-e")
	n.expectServed(t, "e: new responder, old plugin's ADD", b, d, e)
	n.delPod(t, e)
	n.expectGone(t, "e: old plugin's DEL", e)
	n.expectServed(t, "e: after the DEL", b, d)
	n.expectSchema(t, "e: old plugin", "2", fmt.Sprint(store.CompatVersion))
	if bad := n.inconsistencies(t); len(bad) > 0 {
		t.Errorf("store and rules after the update and the rollback: %v", bad)
	}
}

// Both releases accept the configuration this one ships: responder.yaml is
// one ConfigMap for both DaemonSet revisions (a rollback does not roll it
// back), and the plugin's netconf stays in the conflist until an installer
// rewrites it. A key added to either that the previous release does not
// know (both parse strictly) fails here rather than in a rollback.
func TestSkewShippedConfig(t *testing.T) {
	old := skewBinDir(t)
	n := newNode(t, chain{name: "ptp", subnet: "10.197.121.0/24"})
	root, _ := filepath.Abs("..")
	responderYAML, err := os.ReadFile(filepath.Join(root, "conf/responder.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := libcni.ConfListFromFile(filepath.Join(root, "conf/10-metabind.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range shipped.Plugins {
		if p.Network.Type != "metabind" {
			continue
		}
		var keys map[string]any
		if err := json.Unmarshal(p.Bytes, &keys); err != nil {
			t.Fatal(err)
		}
		keys["stateDir"], keys["logFile"] = n.stateDir, n.logFile // where this node keeps them
		n.list = withMetabindKeys(t, n.list, keys)
	}
	for _, dir := range []string{old, binDir} {
		stopResponder(t, n.startResponderFrom(t, dir, string(responderYAML)))
		n.usePluginFrom(dir)
		n.delPod(t, n.addPod(t, "payments", "api-1"))
	}
}

// stopResponder stops a responder as the kubelet does (SIGTERM) and waits
// for it to exit.
func stopResponder(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stop responder: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("responder still running 10 s after SIGTERM")
	}
}

// expectServed checks that each pod's real clients get its own identity: the
// email its namespace is granted, and an ID token naming the pod itself.
func (n *node) expectServed(t *testing.T, step string, pods ...*pod) {
	t.Helper()
	for _, p := range pods {
		want := identityOf[p.namespace]
		got, err := p.sdk(t)
		if err != nil {
			t.Errorf("%s: %s/%s not served: %v", step, p.namespace, p.name, err)
			continue
		}
		if got.Email != want.email {
			t.Errorf("%s: %s/%s sees email %q, want %q", step, p.namespace, p.name, got.Email, want.email)
		}
		claims, err := verify(got.IDToken, p.jwks(t), defaultAudience)
		if err != nil {
			t.Errorf("%s: %s's ID token does not verify: %v", step, p.name, err)
			continue
		}
		checkClaims(t, p, claims, want.sa, want.email)
	}
}

// expectNoAnswer checks that nothing answers the pods' metadata requests.
func (n *node) expectNoAnswer(t *testing.T, step string, pods ...*pod) {
	t.Helper()
	for _, p := range pods {
		if code, body, err := p.metadataGet(emailPath); err == nil {
			t.Errorf("%s: %s was answered %d %q, want no answer", step, p.name, code, body)
		}
	}
}

// expectGone checks that DEL removed the pods' bindings and rules, and that
// nothing answers them any more.
func (n *node) expectGone(t *testing.T, step string, pods ...*pod) {
	t.Helper()
	rules := n.natRules(t)
	for _, p := range pods {
		if b, ok := bindingOf(t, n, p.ip); ok && b.ContainerID == p.rt.ContainerID {
			t.Errorf("%s: %s's binding is left: %+v", step, p.name, b)
		}
		if strings.Contains(rules, p.rt.ContainerID) {
			t.Errorf("%s: %s's rules are left:\n%s", step, p.name, rules)
		}
		if code, body, err := p.metadataGet(emailPath); err == nil && code == 200 {
			t.Errorf("%s: deleted pod %s was answered %q", step, p.name, body)
		}
	}
}

// expectSchema reads the store's versions as stored, the keys every
// release reads: schemaVersion, and compatVersion ("" for none).
func (n *node) expectSchema(t *testing.T, step, version, compat string) {
	t.Helper()
	db, err := bolt.Open(store.DBPath(n.stateDir), 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("%s: open store: %v", step, err)
	}
	defer db.Close()
	var v, c string
	db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket([]byte("meta")); meta != nil {
			v, c = string(meta.Get([]byte("schemaVersion"))), string(meta.Get([]byte("compatVersion")))
		}
		return nil
	})
	if v != version || c != compat {
		t.Errorf("%s: store is schema %q compat %q, want %q compat %q", step, v, c, version, compat)
	}
}
