package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/metabind/metabind/store"
	bolt "go.etcd.io/bbolt"
)

// plantGarbage damages one binding record the way a bad disk or a bug would.
func plantGarbage(t *testing.T, dir, key string) {
	t.Helper()
	db, err := bolt.Open(store.DBPath(dir), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("bindings")).Put([]byte(key), []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
}

// One unreadable record: list shows every other binding and warns on
// stderr (JSON output stays a plain list); get names the damage.
func TestBindingsListSkipsAnUnreadableRecord(t *testing.T) {
	dir := seed(t)
	plantGarbage(t, dir, "10.1.2.3")
	ctl := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(append([]string{"--state-dir", dir, "bindings"}, args...), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	wantWarning := "metabindctl: warning: 1 binding record could not be read and is skipped (see docs/OPERATIONS.md):\n" +
		"  10.1.2.3: bad JSON: invalid character 'n' looking for beginning of object key string\n"

	out, errOut, err := ctl("list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 2 || !strings.HasPrefix(lines[1], "10.1.0.5 ") || errOut != wantWarning {
		t.Errorf("list: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}

	out, errOut, err = ctl("list", "-o", "json")
	var list []store.Binding
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Pod != "api-1" || errOut != wantWarning {
		t.Errorf("list -o json: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}

	if out, errOut, err = ctl("get", "10.1.0.5"); err != nil || !strings.Contains(out, "api-1") || errOut != "" {
		t.Errorf("get of a readable binding: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	_, _, err = ctl("get", "10.1.2.3")
	if err == nil || !strings.Contains(err.Error(), "the binding record of 10.1.2.3 could not be read") {
		t.Errorf("get of the unreadable record: %v", err)
	}
}
