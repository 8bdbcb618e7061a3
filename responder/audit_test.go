package responder

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestAuditLog: every token issued has one "token issued" line naming the
// caller, pod, identity, kind, audience, jti and expiry, and no log line
// holds a token or any part of its signature.
func TestAuditLog(t *testing.T) {
	var buf bytes.Buffer
	h, iss := newTestHandler(t, slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	const sa = "/computeMetadata/v1/instance/service-accounts"

	type issued struct {
		token, kind, ip, pod, uid, sa, email, aud string
	}
	var tokens []issued
	for _, tc := range []struct {
		target, ip, kind, pod, sa, email, aud string
	}{
		{sa + "/default/token", apiIP, "access", "api-1", "api", apiEmail, iss.URL()},
		{sa + "/" + apiEmail + "/token?scopes=https://www.googleapis.com/auth/userinfo.email", apiIP, "access", "api-1", "api", apiEmail, iss.URL()},
		{sa + "/default/identity?audience=https://aud.example/x&format=full", apiIP, "id", "api-1", "api", apiEmail, "https://aud.example/x"},
		{sa + "/default/identity?audience=sts.amazonaws.com", workerIP, "id", "worker-1", "worker", wiEmail, "sts.amazonaws.com"},
		{sa + "/default/token", workerIP, "access", "worker-1", "worker", wiEmail, iss.URL()},
	} {
		rec := do(t, h, "GET", tc.target, tc.ip, flavor)
		if rec.Code != 200 {
			t.Fatalf("%s: status %d", tc.target, rec.Code)
		}
		tok := rec.Body.String()
		if tc.kind == "access" {
			var resp tokenResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			tok = resp.AccessToken
		}
		tokens = append(tokens, issued{tok, tc.kind, tc.ip, tc.pod, "uid-" + tc.pod, tc.sa, tc.email, tc.aud})
	}
	// Requests that issue nothing log no audit line.
	do(t, h, "GET", sa+"/default/identity", apiIP, flavor) // no audience
	do(t, h, "GET", sa+"/default/token", otherIP, flavor)  // no identity
	do(t, h, "GET", sa+"/default/token", noUIDIP, flavor)  // no pod UID
	do(t, h, "GET", "/computeMetadata/v1/", apiIP, flavor) // not a token
	do(t, h, "GET", "/openid/v1/jwks", unboundIP, map[string]string{})

	type auditLine struct {
		Time           time.Time `json:"time"`
		Msg            string    `json:"msg"`
		Caller         string    `json:"caller"`
		Namespace      string    `json:"namespace"`
		Pod            string    `json:"pod"`
		PodUID         string    `json:"podUID"`
		ServiceAccount string    `json:"serviceAccount"`
		Email          string    `json:"email"`
		Kind           string    `json:"kind"`
		Audience       string    `json:"audience"`
		JTI            string    `json:"jti"`
		Expiry         time.Time `json:"expiry"`
		KID            string    `json:"kid"`
	}
	var audits []auditLine
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for _, l := range lines {
		var a auditLine
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if a.Msg == "token issued" {
			audits = append(audits, a)
		}
	}
	if len(audits) != len(tokens) {
		t.Fatalf("%d audit lines for %d tokens:\n%s", len(audits), len(tokens), buf.String())
	}
	for i, tok := range tokens {
		check := verify
		if tok.kind == "access" {
			check = verifyAccess
		}
		c := check(t, iss.JWKSJSON(), tok.token, jwt.WithAudience(tok.aud))
		want := auditLine{
			Time: audits[i].Time, Msg: "token issued", Caller: tok.ip, Namespace: "payments", Pod: tok.pod, PodUID: tok.uid,
			ServiceAccount: tok.sa, Email: tok.email, Kind: tok.kind, Audience: tok.aud, JTI: c.ID, Expiry: c.ExpiresAt.Time.UTC(), KID: iss.KeyID(),
		}
		got := audits[i]
		got.Expiry = got.Expiry.UTC()
		if got != want || got.Time.IsZero() || c.ID == "" {
			t.Errorf("audit line %d:\n got %+v\nwant %+v", i, got, want)
		}
		if c.Kubernetes.Pod.UID != tok.uid {
			t.Errorf("%s token: kubernetes.io.pod.uid = %q, want %q", tok.kind, c.Kubernetes.Pod.UID, tok.uid)
		}

		// Neither the token, nor its signature, nor its signing input.
		parts := strings.Split(tok.token, ".")
		for _, secret := range []string{tok.token, parts[2], parts[2][:16], parts[0] + "." + parts[1]} {
			for _, l := range lines {
				if strings.Contains(l, secret) {
					t.Errorf("log line holds token material %q: %s", secret, l)
				}
			}
		}
	}
}

// TestTokensNeedPodUID: a binding without a pod UID gets no token of
// either kind (a token must name its pod), though it still reads metadata.
func TestTokensNeedPodUID(t *testing.T) {
	h, _ := newTestHandler(t, nil)
	const sa = "/computeMetadata/v1/instance/service-accounts"
	for _, tc := range []struct {
		target string
		status int
	}{
		{sa + "/default/token", 404},
		{sa + "/" + apiEmail + "/token", 404},
		{sa + "/default/identity?audience=a", 404},
		{sa + "/" + apiEmail + "/identity?audience=a&format=full", 404},
		{sa + "/default/email", 200},
		{"/computeMetadata/v1/project/project-id", 200},
	} {
		if rec := do(t, h, "GET", tc.target, noUIDIP, flavor); rec.Code != tc.status {
			t.Errorf("%s without pod UID: status %d, want %d", tc.target, rec.Code, tc.status)
		}
	}
}
