package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

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
		{[]string{"keys"}, "want 'list', 'rotate' or 'jwks'"},
		{[]string{"keys", "shred"}, "unknown verb"},
		{[]string{"keys", "rotate", "now"}, "takes no arguments"},
		{[]string{"keys", "list", "-o", "yaml"}, "want table or json"},
		{[]string{"keys", "list"}, "no such file"}, // no key yet
		{[]string{"keys", "jwks"}, "no such file"}, // no key yet, and none is made
		{[]string{"keys", "jwks", "now"}, "takes no arguments"},
		{[]string{"keys", "jwks", "-o", "json"}, "usage"},
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

// TestKeysJWKS: keys jwks prints what the responder serves at
// /openid/v1/jwks: the current key first, then the retired keys while
// they are published, each with only the fields a GCP workload identity
// provider accepts; tokens the issuer signs verify against it.
func TestKeysJWKS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	keys := func(now time.Time, args ...string) (string, string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := runKeys(dir, args, &out, &errOut, now)
		return out.String(), errOut.String(), err
	}
	// jwks runs keys jwks at now and returns the printed set and its kids.
	jwks := func(now time.Time) (jose.JSONWebKeySet, []string) {
		t.Helper()
		out, errOut, err := keys(now, "jwks")
		if err != nil || errOut != "" {
			t.Fatalf("keys jwks: %v %q", err, errOut)
		}
		if !strings.HasSuffix(out, "}\n") || strings.Count(out, "\n") != 1 {
			t.Errorf("keys jwks prints %q, want one line of JSON", out)
		}
		var raw struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal([]byte(out), &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range raw.Keys {
			var fields []string
			for f := range k {
				fields = append(fields, f)
			}
			slices.Sort(fields)
			if want := []string{"alg", "crv", "kid", "kty", "use", "x", "y"}; !slices.Equal(fields, want) {
				t.Errorf("JWK fields %q, want %q", fields, want)
			}
			if k["alg"] != "ES256" || k["use"] != "sig" || k["kty"] != "EC" || k["crv"] != "P-256" {
				t.Errorf("JWK %v", k)
			}
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal([]byte(out), &set); err != nil {
			t.Fatal(err)
		}
		var kids []string
		for _, k := range set.Keys {
			kids = append(kids, k.KeyID)
		}
		return set, kids
	}
	// responderJWKS is the document an issuer opened on dir serves at now.
	responderJWKS := func(now time.Time) (*issuer.Issuer, string) {
		t.Helper()
		iss, _, err := issuer.Open(issuer.Config{URL: "https://metabind.local/node-1", Lifetime: time.Hour}, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		iss.Now = func() time.Time { return now }
		return iss, string(iss.JWKSJSON()) + "\n"
	}

	// No key yet: an error, and no key is made.
	if _, _, err := keys(t0, "jwks"); err == nil {
		t.Error("keys jwks without a signing key: no error")
	}
	if _, err := os.Stat(issuer.SigningKeyPath(dir)); !os.IsNotExist(err) {
		t.Fatalf("keys jwks made a signing key: %v", err)
	}
	out, _, err := keys(t0, "rotate")
	if err != nil {
		t.Fatal(err)
	}
	kid0 := regexp.MustCompile(`[A-Za-z0-9_-]{43}`).FindString(out)
	if _, kids := jwks(t0); !slices.Equal(kids, []string{kid0}) {
		t.Fatalf("JWKS kids %q, want %q", kids, kid0)
	}

	// After a rotation: the new key first, the retired one still there.
	if _, _, err := keys(t0, "rotate"); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Minute)
	set, kids := jwks(now)
	if len(kids) != 2 || kids[1] != kid0 || kids[0] == kid0 {
		t.Fatalf("JWKS kids after rotation %q, want [new %s]", kids, kid0)
	}
	iss, served := responderJWKS(now)
	if out, _, _ := keys(now, "jwks"); out != served {
		t.Errorf("keys jwks\n%s differs from what the responder serves\n%s", out, served)
	}
	tok, kid, err := iss.Sign(jwt.RegisteredClaims{Subject: "system:serviceaccount:ns:ksa"}, "JWT")
	if err != nil || kid != kids[0] {
		t.Fatalf("sign: %v, kid %q", err, kid)
	}
	if _, err := jwt.Parse(tok, func(tok *jwt.Token) (any, error) {
		keys := set.Key(tok.Header["kid"].(string))
		if len(keys) != 1 {
			return nil, errors.New("kid not in the printed JWKS")
		}
		return keys[0].Key, nil
	}, jwt.WithValidMethods([]string{"ES256"})); err != nil {
		t.Errorf("a token of the current key does not verify against the printed JWKS: %v", err)
	}

	// An unreadable retired key file is left out, with a warning.
	if err := os.WriteFile(filepath.Join(issuer.RetiredKeysPath(dir), "junk.pem"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := keys(now, "jwks")
	if err != nil || out != served || !strings.Contains(errOut, "warning: not in the JWKS:") {
		t.Errorf("with a junk retired key: %v, %q, stderr %q", err, out, errOut)
	}
	os.Remove(filepath.Join(issuer.RetiredKeysPath(dir), "junk.pem"))

	// Once its publication ends, the retired key is gone.
	later := t0.Add(issuer.RetiredKeyPublication + time.Second)
	if _, kids := jwks(later); len(kids) != 1 || kids[0] == kid0 {
		t.Errorf("JWKS kids after the publication window %q", kids)
	}
}
