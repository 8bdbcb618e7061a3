package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/responder/issuer"
)

func TestKeysRotateAndList(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	keys := func(now time.Time, args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := runKeys(dir, args, &out, &errOut, now)
		return out.String(), errOut.String(), err
	}
	kidRE := regexp.MustCompile(`[A-Za-z0-9_-]{43}`)

	// No key yet: rotate creates one.
	out, _, err := keys(t0, "rotate")
	if err != nil || !strings.HasPrefix(out, "no signing key yet; created ") {
		t.Fatalf("first rotate: %v %q", err, out)
	}
	kid0 := kidRE.FindString(out)

	out, _, err = keys(t0, "rotate")
	if err != nil {
		t.Fatal(err)
	}
	want := "retired " + kid0 + ": in the JWKS until 2030-01-02T04:09:05Z\nsigning key is now "
	if !strings.HasPrefix(out, want) {
		t.Fatalf("rotate output %q, want it to start with %q", out, want)
	}
	kid1 := kidRE.FindString(strings.TrimPrefix(out, want))

	out, _, err = keys(t0.Add(time.Minute), "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^KID\s+STATUS\s+RETIRED AT\s+PUBLISHED UNTIL$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^`+kid1+`\s+current\s+-\s+-$`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^`+kid0+`\s+retired\s+2030-01-02T03:04:05Z\s+2030-01-02T04:09:05Z$`).MatchString(lines[2]) {
		t.Fatalf("keys list:\n%s", out)
	}

	// After the window: expired in the list, deleted by the next rotation.
	later := t0.Add(issuer.RetiredKeyPublication + time.Second)
	out, _, err = keys(later, "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var infos []issuer.KeyInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 2 || infos[1].KID != kid0 || infos[1].Status != issuer.KeyExpired {
		t.Fatalf("keys list -o json: %v %s", err, out)
	}
	out, _, err = keys(later, "rotate")
	if err != nil || !strings.Contains(out, "deleted "+kid0+": no longer published\n") || !strings.Contains(out, "retired "+kid1) {
		t.Fatalf("third rotate: %v %q", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, issuer.RetiredKeysDir, kid0+".pem")); !os.IsNotExist(err) {
		t.Errorf("expired key file: %v", err)
	}
}

func TestKeysErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"keys"}, "want 'list' or 'rotate'"},
		{[]string{"keys", "shred"}, "unknown verb"},
		{[]string{"keys", "rotate", "now"}, "takes no arguments"},
		{[]string{"keys", "list", "-o", "yaml"}, "want table or json"},
		{[]string{"keys", "list"}, "no such file"}, // no key yet
	} {
		var out, errOut bytes.Buffer
		err := run(append([]string{"--state-dir", dir}, tc.args...), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}

	// A key file others can read is refused, and nothing is rotated.
	var out, errOut bytes.Buffer
	if err := run([]string{"--state-dir", dir, "keys", "rotate"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	os.Chmod(issuer.SigningKeyPath(dir), 0o644)
	err := run([]string{"--state-dir", dir, "keys", "rotate"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("rotate with an open key file: %v", err)
	}
	if _, err := os.Stat(issuer.RetiredKeysPath(dir)); !os.IsNotExist(err) {
		t.Errorf("retired-keys created by a refused rotation: %v", err)
	}
}
