package aws_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/responder/subject"
)

// TestContainerCredentials: GET /v1/credentials answers the caller's role
// credentials as the EKS Pod Identity agent does, AccountId only when
// known; the one path only, any query; no GCE header.
func TestContainerCredentials(t *testing.T) {
	e := newEnv(t, false)
	w := e.do("GET", "/v1/credentials", ipA)
	want := `{"AccessKeyId":"ASIAAAAA","SecretAccessKey":"secret-AAAA","Token":"session-AAAA","AccountId":"111122223333","Expiration":"2026-12-01T10:55:00Z"}`
	if w.Code != 200 || w.Body.String() != want {
		t.Errorf("A: %d %s\nwant %s", w.Code, w.Body, want)
	}
	if w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Metadata-Flavor") != "" || w.Header().Get("Server") != "" {
		t.Errorf("headers: %v", w.Header())
	}
	w = e.do("GET", "/v1/credentials?x=1", ipB)
	var b map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &b); w.Code != 200 || err != nil || b["AccessKeyId"] != "ASIABBBB" {
		t.Errorf("B: %d %s %v", w.Code, w.Body, err)
	}
	if _, ok := b["AccountId"]; ok {
		t.Errorf("B: AccountId without an account: %s", w.Body)
	}
	for _, p := range []string{"/v1/credentials/", "/v1/credentialsX", "/v1/credentials/x"} {
		if w := e.do("GET", p, ipA); w.Code != 404 {
			t.Errorf("%s: %d, want 404", p, w.Code)
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		if w := e.do(m, "/v1/credentials", ipA); w.Code != 405 || w.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d Allow %q", m, w.Code, w.Header().Get("Allow"))
		}
	}
	if w := e.do("GET", "/v1/credentials", ipA, "X-Forwarded-For", "192.0.2.1"); w.Code != 403 || w.Header().Get("Metadata-Flavor") != "" {
		t.Errorf("X-Forwarded-For: %d %v", w.Code, w.Header())
	}
	if w := e.do("GET", "/v1/credentials", "10.0.0.99"); w.Code != 404 {
		t.Errorf("unbound caller: %d, want 404", w.Code)
	}
}

// TestContainerAuthorization: an Authorization header is optional; when
// sent it must be a session token of the caller's pod, or one Authorize
// accepts, else 403.
func TestContainerAuthorization(t *testing.T) {
	e := newEnv(t, false)
	tokA, tokB := e.token(t, ipA, 60), e.token(t, ipB, 600)
	for _, tc := range []struct {
		name   string
		ip     string
		hdr    []string
		status int
	}{
		{"none", ipA, nil, 200},
		{"own session token", ipA, []string{"Authorization", tokA}, 200},
		{"another pod's token", ipA, []string{"Authorization", tokB}, 403},
		{"garbage", ipA, []string{"Authorization", "Bearer x"}, 403},
		{"empty", ipA, []string{"Authorization", ""}, 403},
		{"twice", ipA, []string{"Authorization", tokA, "Authorization", tokA}, 403},
		{"pod without UID", ipD, []string{"Authorization", tokA}, 403},
		{"no role, own token", ipC, []string{"Authorization", e.token(t, ipC, 60)}, 404},
	} {
		if w := e.do("GET", "/v1/credentials", tc.ip, tc.hdr...); w.Code != tc.status {
			t.Errorf("%s: %d %q, want %d", tc.name, w.Code, w.Body, tc.status)
		}
	}
	calls := e.src.callCount()
	if w := e.do("GET", "/v1/credentials", ipA, "Authorization", tokB); w.Code != 403 || e.src.callCount() != calls {
		t.Errorf("a refused header still asked the source")
	}
	e.advance(60 * time.Second)
	if w := e.do("GET", "/v1/credentials", ipA, "Authorization", tokA); w.Code != 403 {
		t.Errorf("expired token: %d, want 403", w.Code)
	}

	// Authorize: the pod's own service account token, say.
	e.ctr.Authorize = func(_ context.Context, s subject.Subject, tok string) bool {
		return tok == "ksa-token-of-"+s.PodUID
	}
	for _, tc := range []struct {
		ip, tok string
		status  int
	}{
		{ipA, "ksa-token-of-uid-a", 200},
		{ipB, "ksa-token-of-uid-a", 403},
		{ipB, tokB, 200},
	} {
		if w := e.do("GET", "/v1/credentials", tc.ip, "Authorization", tc.tok); w.Code != tc.status {
			t.Errorf("Authorize, %s from %s: %d, want %d", tc.tok, tc.ip, w.Code, tc.status)
		}
	}
}

// TestContainerErrors: no role is 404 without asking for credentials; an
// unavailable source is 500 with its message (as the EKS agent answers),
// logged; a refusal is its code and reason.
func TestContainerErrors(t *testing.T) {
	e := newEnv(t, false)
	if w := e.do("GET", "/v1/credentials", ipC); w.Code != 404 || e.src.callCount() != 0 {
		t.Errorf("no role: %d, %d source calls", w.Code, e.src.callCount())
	}
	for _, tc := range []struct {
		err    error
		status int
		body   string
	}{
		{fmt.Errorf("sts.eu-west-3.amazonaws.com unreachable: %w", subject.ErrUnavailable), 500,
			"sts.eu-west-3.amazonaws.com unreachable: identity not available yet\n"},
		{&subject.Refused{Code: 403, Reason: "AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity"}, 403,
			"AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity\n"},
		{subject.ErrNoIdentity, 404, "no identity for this pod\n"},
		{errors.New("source on fire"), 500, "internal error\n"},
	} {
		e.log.Reset()
		e.src.set(tc.err)
		w := e.do("GET", "/v1/credentials", ipA)
		if w.Code != tc.status || w.Body.String() != tc.body {
			t.Errorf("%v: %d %q, want %d %q", tc.err, w.Code, w.Body, tc.status, tc.body)
		}
		if tc.status == 500 && !strings.Contains(e.log.String(), "level=ERROR") {
			t.Errorf("%v: not logged as an error:\n%s", tc.err, e.log)
		}
	}
}
