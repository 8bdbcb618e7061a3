package integration

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Rotating the signing key while the responder serves: new tokens carry the
// new key ID, and a token minted before the rotation still verifies against
// the JWKS the responder serves.
func TestKeyRotationWithoutDowntime(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.19.0/24"})
	n.startResponder(t, responderConfig)
	p := n.addPod(t, "payments", "api-1")
	const idPath = "/computeMetadata/v1/instance/service-accounts/default/identity?audience=" + defaultAudience

	_, before, err := p.metadataGet(idPath)
	if err != nil {
		t.Fatal(err)
	}
	oldKid := kidOf(t, before)
	n.run(t, filepath.Join(binDir, "metabindctl"), "--state-dir", n.stateDir, "keys", "rotate")

	deadline := time.Now().Add(5 * time.Second)
	for {
		code, after, err := p.metadataGet(idPath)
		if err != nil || code != 200 {
			t.Fatalf("during rotation: %d %v (the responder must keep serving)", code, err)
		}
		if kidOf(t, after) != oldKid {
			if _, err := verify(after, p.jwks(t), defaultAudience); err != nil {
				t.Fatalf("token with the new key does not verify: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the responder still signs with the old key 5 s after the rotation")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := verify(before, p.jwks(t), defaultAudience); err != nil {
		t.Fatalf("a token minted before the rotation no longer verifies: %v", err)
	}
}

func kidOf(t *testing.T, token string) string {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		t.Fatalf("not a JWT: %v", err)
	}
	kid, _ := tok.Header["kid"].(string)
	return kid
}
