package issuer

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

var testIssuerConfig = Config{URL: "https://metabind.local/node-1", Lifetime: time.Hour}

// clock is an injectable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func openTestIssuer(t *testing.T, dir string, c *clock, log *slog.Logger) *Issuer {
	t.Helper()
	iss, _, err := Open(testIssuerConfig, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	iss.Now = c.now
	return iss
}

func mint(t *testing.T, iss *Issuer) (tok, kid string) {
	t.Helper()
	tok, kid, err := iss.Sign(&jwt.RegisteredClaims{Audience: jwt.ClaimStrings{"aud"}, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}, "JWT")
	if err != nil {
		t.Fatal(err)
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, &jwt.RegisteredClaims{})
	if err != nil || parsed.Header["kid"] != kid {
		t.Fatalf("token header %v (%v), Sign says kid %s", parsed.Header, err, kid)
	}
	return tok, kid
}

func jwksKIDs(t *testing.T, iss *Issuer) []string {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(iss.JWKSJSON(), &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Errorf("JWKS key %s is not public", k.KeyID)
		}
		kids = append(kids, k.KeyID)
	}
	return kids
}

func TestRotateSigningKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	c := &clock{t: time.Now()}
	iss := openTestIssuer(t, dir, c, nil)
	before, kid0 := mint(t, iss)

	rot, err := RotateSigningKey(dir, c.now())
	if err != nil {
		t.Fatal(err)
	}
	if rot.Retired != kid0 || rot.Current == kid0 || rot.Current == "" || len(rot.Pruned) != 0 {
		t.Fatalf("rotation = %+v, old kid %s", rot, kid0)
	}
	if want := c.now().UTC().Truncate(time.Second).Add(time.Hour + 5*time.Minute); !rot.PublishedUntil.Equal(want) {
		t.Errorf("published until %v, want %v", rot.PublishedUntil, want)
	}

	// Files: the retired key's public half only, 0600 in a 0700 directory;
	// the new current key 0600.
	retiredFile := filepath.Join(dir, RetiredKeysDir, kid0+".pem")
	for p, want := range map[string]os.FileMode{RetiredKeysPath(dir): 0o700, retiredFile: 0o600, SigningKeyPath(dir): 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
	}
	data, _ := os.ReadFile(retiredFile)
	if !bytes.Contains(data, []byte("BEGIN PUBLIC KEY")) || bytes.Contains(data, []byte("PRIVATE")) || !bytes.Contains(data, []byte("Retired-At: ")) {
		t.Errorf("retired key file:\n%s", data)
	}

	// The running issuer notices within a second, without a signal.
	if _, kid := mint(t, iss); kid != kid0 {
		t.Errorf("signed with %s before the next check, want %s", kid, kid0)
	}
	c.add(keyCheckInterval)
	after, kid1 := mint(t, iss)
	if kid1 != rot.Current || iss.KeyID() != rot.Current {
		t.Errorf("after the check: signed with %s, want the new key %s", kid1, rot.Current)
	}

	// Both tokens verify against the served JWKS, here and after a restart.
	for name, jwks := range map[string][]byte{"running": iss.JWKSJSON(), "restarted": openTestIssuer(t, dir, c, nil).JWKSJSON()} {
		for _, tok := range []string{before, after} {
			verify(t, jwks, tok, "JWT", jwt.WithAudience("aud"))
		}
		if n := strings.Count(string(jwks), `"kid"`); n != 2 {
			t.Errorf("%s: JWKS has %d keys, want 2: %s", name, n, jwks)
		}
	}
	if kids := jwksKIDs(t, iss); len(kids) != 2 || kids[0] != rot.Current || kids[1] != kid0 {
		t.Errorf("JWKS kids = %v, want current %s then retired %s", kids, rot.Current, kid0)
	}

	// The retired key stays until its window ends, then leaves the JWKS.
	c.add(RetiredKeyPublication - keyCheckInterval - time.Second)
	if kids := jwksKIDs(t, iss); len(kids) != 2 {
		t.Errorf("a second before the window ends: JWKS kids = %v, want both", kids)
	}
	c.add(2 * time.Second)
	if kids := jwksKIDs(t, iss); len(kids) != 1 || kids[0] != rot.Current {
		t.Errorf("after the window: JWKS kids = %v, want only %s", kids, rot.Current)
	}
	if kids := jwksKIDs(t, openTestIssuer(t, dir, c, nil)); len(kids) != 1 {
		t.Errorf("restarted after the window: JWKS kids = %v", kids)
	}

	// The next rotation deletes the expired file and retires the current key.
	rot2, err := RotateSigningKey(dir, c.now())
	if err != nil {
		t.Fatal(err)
	}
	if rot2.Retired != rot.Current || len(rot2.Pruned) != 1 || rot2.Pruned[0] != kid0 {
		t.Errorf("second rotation = %+v", rot2)
	}
	if _, err := os.Stat(retiredFile); !os.IsNotExist(err) {
		t.Errorf("expired retired key still on disk: %v", err)
	}
	c.add(keyCheckInterval)
	if kids := jwksKIDs(t, iss); len(kids) != 2 || kids[0] != rot2.Current || kids[1] != rot.Current {
		t.Errorf("after the second rotation: JWKS kids = %v", kids)
	}
}

func TestRotateWithoutKeyCreatesOne(t *testing.T) {
	dir := t.TempDir()
	rot, err := RotateSigningKey(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := LoadSigningKey(SigningKeyPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if kid, _ := KeyID(&key.PublicKey); rot.Current != kid || rot.Retired != "" {
		t.Errorf("rotation = %+v, key on disk %s", rot, kid)
	}
}

// TestConcurrentRotationsLoseNoKey: rotations serialise on the lock, so
// every key that was ever current ends up current or retired; interleaved
// rotations would replace a key nobody retired.
func TestConcurrentRotationsLoseNoKey(t *testing.T) {
	dir := t.TempDir()
	first, err := RotateSigningKey(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	rots := make(chan *Rotation, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			r, err := RotateSigningKey(dir, time.Now())
			if err != nil {
				t.Error(err)
				return
			}
			rots <- r
		})
	}
	wg.Wait()
	close(rots)
	everCurrent := map[string]bool{first.Current: true}
	for r := range rots {
		everCurrent[r.Current] = true
	}
	keys, err := ListKeys(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	onDisk := map[string]string{}
	for _, k := range keys {
		onDisk[k.KID] = k.Status
	}
	if len(onDisk) != n+1 || len(everCurrent) != n+1 {
		t.Errorf("%d keys on disk, %d ever current, want %d: %v", len(onDisk), len(everCurrent), n+1, keys)
	}
	for kid := range everCurrent {
		if s := onDisk[kid]; s != KeyCurrent && s != KeyRetired {
			t.Errorf("key %s was current and is now %q", kid, s)
		}
	}
}

// TestKeyFileChecks: retired key files must pass the same checks as the
// signing key; one that does not is never published (tokens it signed stop
// verifying, which fails closed) and is reported.
func TestKeyFileChecks(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKID, _ := KeyID(&otherKey.PublicKey)
	good, _ := encodeRetiredKey(&otherKey.PublicKey, now)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(otherKey)
	handMoved := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"Retired-At": now.Format(time.RFC3339)}, Bytes: pkcs8})
	noHeader := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})

	for _, tc := range []struct {
		name      string
		file      string
		data      []byte
		mode      os.FileMode
		dirMode   os.FileMode
		uid       int // chown to it when set (root only)
		published bool
		problem   string
	}{
		{name: "good", file: otherKID + ".pem", data: good, mode: 0o600, published: true},
		{name: "private key moved by hand", file: otherKID + ".pem", data: handMoved, mode: 0o600, published: true},
		{name: "group readable", file: otherKID + ".pem", data: good, mode: 0o640, problem: "chmod 600"},
		{name: "world writable directory", file: otherKID + ".pem", data: good, mode: 0o600, dirMode: 0o777, problem: "chmod 700"},
		{name: "another owner", file: otherKID + ".pem", data: good, mode: 0o600, uid: 65534, problem: "chown"},
		{name: "wrong name", file: "someone-else.pem", data: good, mode: 0o600, problem: "its name must be " + otherKID + ".pem"},
		{name: "no retirement time", file: otherKID + ".pem", data: noHeader, mode: 0o600, problem: "Retired-At"},
		{name: "not PEM", file: otherKID + ".pem", data: []byte("hello"), mode: 0o600, problem: "no PEM block"},
		{name: "temporary file ignored", file: ".key-123.tmp", data: []byte("junk"), mode: 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.uid != 0 && os.Geteuid() != 0 {
				if os.Getenv("CI") == "true" {
					t.Fatal("needs root to chown")
				}
				t.Skip("needs root to chown")
			}
			dir := t.TempDir()
			if _, _, err := LoadSigningKey(SigningKeyPath(dir)); err != nil {
				t.Fatal(err)
			}
			rdir := RetiredKeysPath(dir)
			os.Mkdir(rdir, 0o700)
			p := filepath.Join(rdir, tc.file)
			if err := os.WriteFile(p, tc.data, tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, tc.mode)
			if tc.dirMode != 0 {
				os.Chmod(rdir, tc.dirMode)
			}
			if tc.uid != 0 {
				os.Chown(p, tc.uid, tc.uid)
			}
			var logBuf bytes.Buffer
			iss := openTestIssuer(t, dir, &clock{t: now}, slog.New(slog.NewTextHandler(&logBuf, nil)))
			kids := jwksKIDs(t, iss)
			if published := len(kids) == 2 && kids[1] == otherKID; published != tc.published {
				t.Errorf("published = %v (kids %v), want %v", published, kids, tc.published)
			}
			if tc.problem != "" && !strings.Contains(logBuf.String(), tc.problem) {
				t.Errorf("log does not say %q:\n%s", tc.problem, logBuf.String())
			}
			if tc.problem == "" && logBuf.Len() > 0 {
				t.Errorf("unexpected log:\n%s", logBuf.String())
			}
			keys, err := ListKeys(dir, now)
			if err != nil {
				t.Fatal(err)
			}
			invalid := 0
			for _, k := range keys {
				if k.Status == KeyInvalid {
					invalid++
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.problem != ""]; invalid != want {
				t.Errorf("keys list shows %d invalid keys, want %d: %+v", invalid, want, keys)
			}
		})
	}
}

// TestReloadFailureKeepsSigning: a current key file the issuer must refuse
// (here: group readable) does not stop it; it keeps its keys and says why,
// and picks the file up once it is fixed.
func TestReloadFailureKeepsSigning(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Now()}
	var logBuf bytes.Buffer
	iss := openTestIssuer(t, dir, c, slog.New(slog.NewTextHandler(&logBuf, nil)))
	kid0 := iss.KeyID()

	rot, err := RotateSigningKey(dir, c.now())
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(SigningKeyPath(dir), 0o644)
	c.add(keyCheckInterval)
	if _, kid := mint(t, iss); kid != kid0 {
		t.Errorf("signed with %s, want the previous key %s", kid, kid0)
	}
	if !strings.Contains(logBuf.String(), "cannot reload the signing keys") || !strings.Contains(logBuf.String(), "chmod 600") {
		t.Errorf("log:\n%s", logBuf.String())
	}

	os.Chmod(SigningKeyPath(dir), 0o600)
	c.add(keyCheckInterval)
	if _, kid := mint(t, iss); kid != rot.Current {
		t.Errorf("after the fix: signed with %s, want %s", kid, rot.Current)
	}
}
