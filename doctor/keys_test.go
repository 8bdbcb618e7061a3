package doctor

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/metabind/metabind/responder/issuer"
)

func TestCheckKeys(t *testing.T) {
	n := testNode(t)
	wantStatus(t, checkKeys(context.Background(), n), Warn, "no signing key")

	key := issuer.SigningKeyPath(n.StateDir)
	writeFile(t, key, "key", 0o600)
	retired := filepath.Join(issuer.RetiredKeysPath(n.StateDir), "kid1.pem")
	writeFile(t, retired, "pub", 0o400)
	os.Chmod(filepath.Dir(retired), 0o700)
	if os.Geteuid() != 0 {
		wantStatus(t, checkKeys(context.Background(), n), Fail, "not root")
		t.Skip("the rest needs files owned by root")
	}
	wantStatus(t, checkKeys(context.Background(), n), OK, "3 key files and directories: mode 0600")

	os.Chmod(key, 0o644)
	r := checkKeys(context.Background(), n)
	wantStatus(t, r, Fail, key+" has mode 0644")
	if r.Fix != "chmod 600 "+key {
		t.Errorf("fix %q, want chmod 600 %s", r.Fix, key)
	}
	os.Chmod(key, 0o600)
	os.Chmod(filepath.Dir(retired), 0o755)
	if r := checkKeys(context.Background(), n); r.Fix != "chmod 700 "+filepath.Dir(retired) {
		t.Errorf("retired keys' dir 0755: fix %q", r.Fix)
	}
	os.Chmod(filepath.Dir(retired), 0o700)
	os.Chown(retired, 1234, 0)
	wantStatus(t, checkKeys(context.Background(), n), Fail, retired+" belongs to uid 1234, not root")
}
