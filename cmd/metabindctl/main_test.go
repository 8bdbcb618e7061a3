package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/store"
)

func seed(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.Update(func(tx *store.Tx) error {
		return tx.Put(store.Binding{
			IP: netip.MustParseAddr("10.1.0.5"), ContainerID: "0123456789abcdef0123", IfName: "eth0", HostInterface: "veth1",
			Namespace: "payments", Pod: "api-1", PodUID: "uid-1", Created: time.Now().Add(-3 * time.Hour),
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBindingsListAndGet(t *testing.T) {
	dir := seed(t)
	var out, errOut bytes.Buffer
	if err := run([]string{"--state-dir", dir, "bindings", "list"}, &out, &errOut); err != nil {
		t.Fatal(err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "IP") ||
		!strings.Contains(lines[1], "payments") || !strings.Contains(lines[1], "0123456789abc ") || !strings.HasSuffix(lines[1], "3h") {
		t.Fatalf("table:\n%s", out.String())
	}
	out.Reset()
	if err := run([]string{"--state-dir", dir, "bindings", "get", "10.1.0.5", "-o", "json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var b store.Binding
	if err := json.Unmarshal(out.Bytes(), &b); err != nil || b.Pod != "api-1" {
		t.Fatalf("get -o json: %v %s", err, out.String())
	}
}

func TestBadInputIsRefusedClearly(t *testing.T) {
	dir := seed(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bindings", "get", "not-an-ip"}, "bindings get"},
		{[]string{"bindings", "get", "10.9.9.9"}, "no binding for 10.9.9.9"},
		{[]string{"bindings", "list", "-o", "yaml"}, "want table or json"},
		{[]string{"bindings", "frobnicate"}, "unknown verb"},
	} {
		var out, errOut bytes.Buffer
		err := run(append([]string{"--state-dir", dir}, tc.args...), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	var out, errOut bytes.Buffer
	if err := run([]string{"--state-dir", dir, "nope"}, &out, &errOut); err == nil || !strings.Contains(errOut.String(), "unknown command") {
		t.Errorf("unknown command: %v %q", err, errOut.String())
	}
}

func TestEmptyStateDirListsNothing(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"--state-dir", t.TempDir(), "bindings", "list", "-o", "json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out.String()) != "[]" {
		t.Fatalf("empty store as json: %q", out.String())
	}
}
