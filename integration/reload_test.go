package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The responder's configuration changes live, on SIGHUP and when the file
// changes, without a restart: a pod's keep-alive connection stays up and
// gets the new configuration's answers, its cached token survives a change
// of the rate limit and is replaced when its identity changes, and an
// invalid file leaves the configuration in force.
func TestConfigReloadLive(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.99.0/24"})
	cmd := n.startResponder(t, responderConfig)
	logPath := filepath.Join(n.dir, fmt.Sprintf("responder-%d.log", n.responders))
	p := n.addPod(t, "payments", "api-1")

	// One client, its connections kept alive, counting them.
	client := nsHTTPClient(p.ns, nil)
	tr := client.Transport.(*http.Transport)
	tr.DisableKeepAlives = false
	var dials atomic.Int32
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dial(ctx, network, addr)
	}
	defer tr.CloseIdleConnections()
	ask := func(path string) string {
		t.Helper()
		code, body, err := get(client, "http://"+metadataIP+"/computeMetadata/v1/instance/service-accounts/default/"+path)
		if err != nil || code != http.StatusOK {
			t.Fatalf("%s: %d %q %v", path, code, body, err)
		}
		return body
	}
	const oldEmail, newEmail = "api@test-project.iam.gserviceaccount.com", "api-v2@test-project.iam.gserviceaccount.com"
	const token = "identity?audience=https://reload.example"
	if got := ask("email"); got != oldEmail {
		t.Fatalf("email %q", got)
	}
	first := ask(token)

	// Written whole, as a ConfigMap update is.
	write := func(content string) {
		t.Helper()
		tmp := filepath.Join(n.dir, "responder.yaml.tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(n.dir, "responder.yaml")); err != nil {
			t.Fatal(err)
		}
	}
	waitLog := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if b, _ := os.ReadFile(logPath); strings.Contains(string(b), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the responder did not log %s within 10s", want)
			}
		}
	}

	write(responderConfig + "limits: {burst: 500}\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(`"changed":["limits"],"tokenCacheKept":true`)
	if ask(token) != first {
		t.Fatal("a rate limit reload dropped the pod's cached token")
	}

	// No signal: the file's change is enough.
	write(strings.Replace(responderConfig, oldEmail, newEmail, 1))
	waitLog(`"changed":["limits","identities"],"tokenCacheKept":true,"podsWithChangedIdentity":1`)
	if got := ask("email"); got != newEmail {
		t.Fatalf("after the reload the pod's email is %q, want %q", got, newEmail)
	}
	if ask(token) == first {
		t.Fatal("the pod's identity changed but it got its old identity's token")
	}

	write(responderConfig + "identities: []\n") // a key twice: invalid
	waitLog(`configuration not reloaded: it is not valid`)
	if got := ask("email"); got != newEmail {
		t.Fatalf("an invalid file changed the answers: %q", got)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections: a reload dropped the keep-alive one", n)
	}
	b, _ := os.ReadFile(logPath)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"component":"reload"`) {
			t.Log(l)
		}
	}
}
