package aws_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/responder/flavour/aws"
	"github.com/metabind/metabind/responder/subject"
)

// TestTokenTTL: PUT /latest/api/token takes a TTL of 1..21600 seconds,
// once, and echoes it; anything else is 400 before the caller is looked
// up.
func TestTokenTTL(t *testing.T) {
	e := newEnv(t, false)
	for _, tc := range []struct {
		ttl    []string // nil: no header
		status int
	}{
		{nil, 400},
		{[]string{""}, 400},
		{[]string{"0"}, 400},
		{[]string{"21601"}, 400},
		{[]string{"-1"}, 400},
		{[]string{"+5"}, 400},
		{[]string{"1.5"}, 400},
		{[]string{"abc"}, 400},
		{[]string{"99999999999999999999"}, 400},
		{[]string{"60", "60"}, 400},
		{[]string{"1"}, 200},
		{[]string{"21600"}, 200},
	} {
		var hdr []string
		for _, v := range tc.ttl {
			hdr = append(hdr, aws.TokenTTLHeader, v)
		}
		before := e.b.lookups()
		w := e.do("PUT", "/latest/api/token", ipA, hdr...)
		if w.Code != tc.status {
			t.Errorf("TTL %q: %d %q, want %d", tc.ttl, w.Code, w.Body, tc.status)
			continue
		}
		if tc.status != 200 {
			if e.b.lookups() != before {
				t.Errorf("TTL %q: caller looked up for a refused request", tc.ttl)
			}
			continue
		}
		if got := w.Header().Get(aws.TokenTTLHeader); got != tc.ttl[0] {
			t.Errorf("TTL %q: echoed %q", tc.ttl, got)
		}
		if ct := w.Header().Get("Content-Type"); ct != "text/plain" {
			t.Errorf("TTL %q: Content-Type %q", tc.ttl, ct)
		}
		if tok := w.Body.String(); !regexp.MustCompile(`^[A-Za-z0-9_-]{40,100}$`).MatchString(tok) {
			t.Errorf("TTL %q: token %q", tc.ttl, tok)
		}
	}
	// The trailing-slash form some clients use (Chef's ohai) works too.
	if w := e.do("PUT", "/latest/api/token/", ipA, aws.TokenTTLHeader, "60"); w.Code != 200 {
		t.Errorf("PUT /latest/api/token/: %d %q", w.Code, w.Body)
	}
}

// TestTokenBinding: a session token is valid from the pod it was minted
// for, until it expires, under the key that minted it: never from another
// pod, from a pod that took over the IP, after expiry, tampered with, or
// under another key. A caller without a pod UID gets none.
func TestTokenBinding(t *testing.T) {
	e := newEnv(t, false)
	const path = "/latest/meta-data/instance-id"
	tokA := e.token(t, ipA, 21600)
	if w := e.get(path, ipA, tokA); w.Code != 200 || w.Body.String() != testNode.InstanceID || w.Header().Get(aws.TokenTTLHeader) != "21600" {
		t.Fatalf("own token: %d %q TTL %q", w.Code, w.Body, w.Header().Get(aws.TokenTTLHeader))
	}
	tampered := []byte(tokA)
	tampered[len(tampered)/2] ^= 1
	other := aws.NewIMDS(e.src, testNode, bytes.Repeat([]byte{8}, aws.KeySize), false)
	other.Now = e.clock
	for name, tc := range map[string]struct{ ip, tok string }{
		"another pod's token": {ipB, tokA},
		"tampered":            {ipA, string(tampered)},
		"garbage":             {ipA, "AQAEAHello=="},
		"no pod UID":          {ipD, tokA},
	} {
		if w := e.get(path, tc.ip, tc.tok); w.Code != 401 {
			t.Errorf("%s: %d %q, want 401", name, w.Code, w.Body)
		}
	}
	if w := e.do("GET", path, ipA, aws.TokenHeader, tokA, aws.TokenHeader, tokA); w.Code != 401 {
		t.Errorf("two token headers: %d, want 401", w.Code)
	}

	// Expiry: valid for exactly its TTL.
	short := e.token(t, ipA, 60)
	e.advance(59 * time.Second)
	if w := e.get(path, ipA, short); w.Code != 200 || w.Header().Get(aws.TokenTTLHeader) != "1" {
		t.Errorf("a second before expiry: %d TTL %q", w.Code, w.Header().Get(aws.TokenTTLHeader))
	}
	e.advance(time.Second)
	if w := e.get(path, ipA, short); w.Code != 401 {
		t.Errorf("expired: %d, want 401", w.Code)
	}
	if w := e.get(path, ipA, tokA); w.Code != 200 {
		t.Errorf("the long token: %d", w.Code)
	}

	// Another key (a restarted responder with a new one): 401, and a new
	// token works.
	h2 := routed(e, other)
	if w := do(h2, "GET", path, ipA, aws.TokenHeader, tokA); w.Code != 401 {
		t.Errorf("another key: %d, want 401", w.Code)
	}
	w := do(h2, "PUT", "/latest/api/token", ipA, aws.TokenTTLHeader, "60")
	if w := do(h2, "GET", path, ipA, aws.TokenHeader, w.Body.String()); w.Code != 200 {
		t.Errorf("another key, its own token: %d", w.Code)
	}

	// IP reuse: the pod that now has A's IP cannot use A's token.
	e.b.bind(ipA, "a2", "uid-a2")
	if w := e.get(path, ipA, tokA); w.Code != 401 {
		t.Errorf("IP taken over: %d, want 401", w.Code)
	}

	// No pod UID: nothing to bind a token to.
	if w := e.do("PUT", "/latest/api/token", ipD, aws.TokenTTLHeader, "60"); w.Code != 404 {
		t.Errorf("PUT without pod UID: %d, want 404", w.Code)
	}
	// No binding at all: 404, as for every flavour.
	if w := e.do("PUT", "/latest/api/token", "10.0.0.99", aws.TokenTTLHeader, "60"); w.Code != 404 {
		t.Errorf("PUT from an unbound IP: %d, want 404", w.Code)
	}
}

// TestTokenRequired: without IMDSv1 a GET without a token is 401 before
// the caller is looked up; with it, the GET is answered; a bad token is
// 401 either way, as on EC2.
func TestTokenRequired(t *testing.T) {
	const path = "/latest/meta-data/placement/region"
	v2 := newEnv(t, false)
	for _, p := range []string{path, "/latest/meta-data/nothing", "/latest/"} {
		before := v2.b.lookups()
		if w := v2.get(p, ipA, ""); w.Code != 401 || v2.b.lookups() != before {
			t.Errorf("IMDSv2 only, no token, %s: %d (looked up %v), want 401 unlooked", p, w.Code, v2.b.lookups() != before)
		}
	}
	v1 := newEnv(t, true)
	if w := v1.get(path, ipA, ""); w.Code != 200 || w.Body.String() != "eu-west-3" {
		t.Errorf("IMDSv1, no token: %d %q", w.Code, w.Body)
	}
	if w := v1.get("/latest/meta-data/iam/security-credentials/reader", ipA, ""); w.Code != 200 {
		t.Errorf("IMDSv1 credentials, no token: %d %q", w.Code, w.Body)
	}
	if w := v1.get(path, ipA, "bogus"); w.Code != 401 {
		t.Errorf("IMDSv1, bad token: %d, want 401", w.Code)
	}
	if w := v1.get(path, ipB, v1.token(t, ipA, 60)); w.Code != 401 {
		t.Errorf("IMDSv1, another pod's token: %d, want 401", w.Code)
	}
}

// TestIMDSMethods: GET and PUT only, PUT only for a token and a token only
// by PUT; a PUT with a body is refused by the server.
func TestIMDSMethods(t *testing.T) {
	e := newEnv(t, true)
	for _, tc := range []struct {
		method, target string
		status         int
		allow          string
	}{
		{"POST", "/latest/meta-data/", 405, "GET, PUT"},
		{"DELETE", "/latest/api/token", 405, "GET, PUT"},
		{"HEAD", "/latest/meta-data/", 405, "GET, PUT"},
		{"PATCH", "/latest/meta-data/instance-id", 405, "GET, PUT"},
		{"GET", "/latest/api/token", 405, "PUT"},
		{"PUT", "/latest/meta-data/", 405, "GET"},
		{"PUT", "/latest/meta-data/iam/security-credentials/reader", 405, "GET"},
	} {
		w := e.do(tc.method, tc.target, ipA, aws.TokenTTLHeader, "60")
		if w.Code != tc.status || w.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want %d %q", tc.method, tc.target, w.Code, w.Header().Get("Allow"), tc.status, tc.allow)
		}
	}
	r := httptest.NewRequest("PUT", "/latest/api/token", strings.NewReader("x"))
	r.RemoteAddr = ipA + ":40000"
	r.Header.Set(aws.TokenTTLHeader, "60")
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	if w.Code != 400 {
		t.Errorf("PUT with a body: %d, want 400", w.Code)
	}
}

// TestIMDSHeaders: every IMDS response, whatever its status, carries
// Server: EC2ws and none of GCE's headers, which the other paths keep; an
// X-Forwarded-For header is refused (403) on every route.
func TestIMDSHeaders(t *testing.T) {
	e := newEnv(t, false)
	tok := e.token(t, ipA, 60)
	type req struct {
		method, target, ip string
		hdr                []string
		status             int
	}
	reqs := []req{
		{"PUT", "/latest/api/token", ipA, []string{aws.TokenTTLHeader, "60"}, 200},
		{"PUT", "/latest/api/token", ipA, nil, 400},
		{"PUT", "/latest/api/token", ipA, []string{aws.TokenTTLHeader, "60", "X-Forwarded-For", "192.0.2.1"}, 403},
		{"GET", "/latest/meta-data/", ipA, []string{aws.TokenHeader, tok, "X-Forwarded-For", "192.0.2.1"}, 403},
		{"GET", "/latest/meta-data/", ipA, []string{"Forwarded", "for=192.0.2.1"}, 403},
		{"GET", "/latest/meta-data/", ipA, []string{aws.TokenHeader, tok}, 200},
		{"GET", "/latest/meta-data/", ipA, nil, 401},
		{"GET", "/latest/meta-data/nothing", ipA, []string{aws.TokenHeader, tok}, 404},
		{"POST", "/latest/meta-data/", ipA, nil, 405},
		{"GET", "/latest/meta-data/", "10.0.0.99", []string{aws.TokenHeader, tok}, 404},
	}
	for _, r := range reqs {
		w := e.do(r.method, r.target, r.ip, r.hdr...)
		name := fmt.Sprintf("%s %s %v", r.method, r.target, r.hdr)
		if w.Code != r.status {
			t.Errorf("%s: %d %q, want %d", name, w.Code, w.Body, r.status)
		}
		if w.Header().Get("Server") != aws.ServerName || w.Header().Get("Metadata-Flavor") != "" {
			t.Errorf("%s: headers %v", name, w.Header())
		}
	}
	e.src.set(subject.ErrUnavailable)
	if w := e.get("/latest/meta-data/iam/security-credentials/reader", ipA, tok); w.Code != 503 || w.Header().Get("Server") != aws.ServerName {
		t.Errorf("503: %d %v", w.Code, w.Header())
	}
	// Paths of no AWS route keep the default (GCE's) header.
	if w := e.do("GET", "/computeMetadata/v1/", ipA); w.Header().Get("Metadata-Flavor") != "Google" {
		t.Errorf("GCE path lost its header: %v", w.Header())
	}
}

// TestIMDSMetadata: the static tree, as EC2 lists and answers it (text,
// no trailing newline), for a caller with a role and one without;
// everything else is 404.
func TestIMDSMetadata(t *testing.T) {
	e := newEnv(t, false)
	tokA, tokC := e.token(t, ipA, 600), e.token(t, ipC, 600)
	for _, tc := range []struct {
		path, ip, body string
		status         int
	}{
		{"/latest", ipA, "dynamic\nmeta-data", 200},
		{"/latest/", ipA, "dynamic\nmeta-data", 200},
		{"/latest/meta-data/", ipA, "iam/\ninstance-id\ninstance-type\nplacement/", 200},
		{"/latest/meta-data", ipA, "iam/\ninstance-id\ninstance-type\nplacement/", 200},
		{"/latest/meta-data/", ipC, "instance-id\ninstance-type\nplacement/", 200},
		{"/latest/meta-data/placement/", ipA, "availability-zone\nregion", 200},
		{"/latest/meta-data/placement/region", ipA, "eu-west-3", 200},
		{"/latest/meta-data/placement/availability-zone", ipC, "eu-west-3a", 200},
		{"/latest/meta-data/instance-id", ipA, "i-0123456789abcdef0", 200},
		{"/latest/meta-data/instance-type", ipA, "m6i.large", 200},
		{"/latest/meta-data/iam/", ipA, "info\nsecurity-credentials/", 200},
		{"/latest/dynamic/", ipA, "instance-identity/", 200},
		{"/latest/dynamic/instance-identity/", ipA, "document", 200},
		{"/latest/meta-data/instance-id/", ipA, "", 404},
		{"/latest/meta-data/ami-id", ipA, "", 404},
		{"/latest/meta-data/placement/zone", ipA, "", 404},
		{"/latest/meta-data/iam/foo", ipA, "", 404},
		{"/latest/meta-data/iam/info/", ipA, "", 404},
		{"/latest/user-data", ipA, "", 404},
		{"/latest/api", ipA, "", 404},
		{"/latestX", ipA, "", 404},
		{"/latest/dynamic/instance-identity/signature", ipA, "", 404},
	} {
		tok := tokA
		if tc.ip == ipC {
			tok = tokC
		}
		w := e.get(tc.path, tc.ip, tok)
		if w.Code != tc.status || (tc.status == 200 && w.Body.String() != tc.body) {
			t.Errorf("%s from %s: %d %q, want %d %q", tc.path, tc.ip, w.Code, w.Body, tc.status, tc.body)
		}
		if tc.status == 200 && w.Header().Get("Content-Type") != "text/plain" {
			t.Errorf("%s: Content-Type %q", tc.path, w.Header().Get("Content-Type"))
		}
	}
	w := e.get("/latest/dynamic/instance-identity/document", ipA, tokA)
	var doc map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &doc); w.Code != 200 || err != nil {
		t.Fatalf("document: %d %q %v", w.Code, w.Body, err)
	}
	for k, v := range map[string]string{
		"accountId": "444455556666", "availabilityZone": "eu-west-3a", "instanceId": "i-0123456789abcdef0",
		"instanceType": "m6i.large", "region": "eu-west-3", "version": "2017-09-30",
	} {
		if doc[k] != v {
			t.Errorf("document %s = %q, want %q (%s)", k, doc[k], v, w.Body)
		}
	}
	if doc["architecture"] == "" {
		t.Errorf("document without architecture: %s", w.Body)
	}
	if n := e.src.callCount(); n != 0 {
		t.Errorf("the static tree asked the source %d times", n)
	}
}

// TestIMDSNodeFieldsUnset: a node field the config leaves empty is not
// served, listed or put in the document.
func TestIMDSNodeFieldsUnset(t *testing.T) {
	e := newEnv(t, true)
	f := aws.NewIMDS(e.src, aws.Node{Region: "eu-west-3"}, testKey, true)
	h := routed(e, f)
	for path, want := range map[string]string{
		"/latest/meta-data/":           "iam/\nplacement/",
		"/latest/meta-data/placement/": "region",
	} {
		if w := do(h, "GET", path, ipA); w.Code != 200 || w.Body.String() != want {
			t.Errorf("%s: %d %q, want %q", path, w.Code, w.Body, want)
		}
	}
	for _, path := range []string{"/latest/meta-data/instance-id", "/latest/meta-data/instance-type", "/latest/meta-data/placement/availability-zone"} {
		if w := do(h, "GET", path, ipA); w.Code != 404 {
			t.Errorf("%s: %d, want 404", path, w.Code)
		}
	}
	w := do(h, "GET", "/latest/dynamic/instance-identity/document", ipA)
	if strings.Contains(w.Body.String(), "instanceId") || !strings.Contains(w.Body.String(), `"region": "eu-west-3"`) {
		t.Errorf("document: %s", w.Body)
	}
}

// TestIMDSCredentials: the role name, alone and without newline; the
// credentials in EC2's shape and order; iam/info; another role's name or
// a trailing slash is 404. Each pod gets its own role's keys.
func TestIMDSCredentials(t *testing.T) {
	e := newEnv(t, false)
	tokA, tokB := e.token(t, ipA, 600), e.token(t, ipB, 600)
	if w := e.get("/latest/meta-data/iam/security-credentials/", ipA, tokA); w.Code != 200 || w.Body.String() != "reader" {
		t.Errorf("role name: %d %q", w.Code, w.Body)
	}
	if w := e.get("/latest/meta-data/iam/security-credentials", ipB, tokB); w.Code != 200 || w.Body.String() != "writer" {
		t.Errorf("role name of B: %d %q", w.Code, w.Body)
	}
	w := e.get("/latest/meta-data/iam/security-credentials/reader", ipA, tokA)
	want := `{
  "Code": "Success",
  "LastUpdated": "2026-12-01T09:55:00Z",
  "Type": "AWS-HMAC",
  "AccessKeyId": "ASIAAAAA",
  "SecretAccessKey": "secret-AAAA",
  "Token": "session-AAAA",
  "Expiration": "2026-12-01T10:55:00Z"
}`
	if w.Code != 200 || w.Body.String() != want {
		t.Errorf("credentials: %d\n%s\nwant\n%s", w.Code, w.Body, want)
	}
	if w.Header().Get("Content-Type") != "text/plain" || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("credentials headers: %v", w.Header())
	}
	if w := e.get("/latest/meta-data/iam/security-credentials/writer", ipB, tokB); w.Code != 200 || !strings.Contains(w.Body.String(), `"AccessKeyId": "ASIABBBB"`) {
		t.Errorf("B's credentials: %d %s", w.Code, w.Body)
	}
	for _, tc := range []struct{ path, ip, tok string }{
		{"/latest/meta-data/iam/security-credentials/writer", ipA, tokA},
		{"/latest/meta-data/iam/security-credentials/reader", ipB, tokB},
		{"/latest/meta-data/iam/security-credentials/reader/", ipA, tokA},
		{"/latest/meta-data/iam/security-credentials/app", ipA, tokA},
		{"/latest/meta-data/iam/security-credentials/reader/x", ipA, tokA},
	} {
		if w := e.get(tc.path, tc.ip, tc.tok); w.Code != 404 {
			t.Errorf("%s from %s: %d %q, want 404", tc.path, tc.ip, w.Code, w.Body)
		}
	}

	w = e.get("/latest/meta-data/iam/info", ipA, tokA)
	var info map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &info); w.Code != 200 || err != nil {
		t.Fatalf("iam/info: %d %q %v", w.Code, w.Body, err)
	}
	if info["Code"] != "Success" || info["LastUpdated"] != "2026-12-01T09:55:00Z" ||
		info["InstanceProfileArn"] != "arn:aws:iam::111122223333:instance-profile/app/reader" ||
		!regexp.MustCompile(`^AIPA[A-Z2-7]{17}$`).MatchString(info["InstanceProfileId"]) || len(info) != 4 {
		t.Errorf("iam/info: %s", w.Body)
	}
	wB := e.get("/latest/meta-data/iam/info", ipB, tokB)
	var infoB map[string]string
	json.Unmarshal(wB.Body.Bytes(), &infoB)
	if infoB["InstanceProfileId"] == info["InstanceProfileId"] || infoB["InstanceProfileArn"] != "arn:aws:iam::111122223333:instance-profile/writer" {
		t.Errorf("iam/info of B: %s", wB.Body)
	}
}

// TestIMDSNoRole: a caller without a role has no iam/ tree at all, and
// the source is never asked for credentials.
func TestIMDSNoRole(t *testing.T) {
	e := newEnv(t, false)
	tok := e.token(t, ipC, 600)
	for _, p := range []string{
		"/latest/meta-data/iam", "/latest/meta-data/iam/", "/latest/meta-data/iam/info",
		"/latest/meta-data/iam/security-credentials/", "/latest/meta-data/iam/security-credentials/reader",
		"/latest/meta-data/iam/security-credentials/writer",
	} {
		if w := e.get(p, ipC, tok); w.Code != 404 {
			t.Errorf("%s: %d %q, want 404", p, w.Code, w.Body)
		}
	}
	if n := e.src.callCount(); n != 0 {
		t.Errorf("source asked %d times for a caller without a role", n)
	}
}

// TestIMDSCredentialErrors: what the credential paths answer for each
// error of the source.
func TestIMDSCredentialErrors(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		body       string
		retryAfter string
	}{
		{fmt.Errorf("sts: connection refused: %w", subject.ErrUnavailable), 503, "identity not available yet\n", "1"},
		{&subject.Refused{Code: 403, Reason: "AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity"}, 403,
			"AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity\n", ""},
		{subject.ErrNoIdentity, 404, "no identity for this pod\n", ""},
		{errors.New("source on fire"), 500, "internal error\n", ""},
	} {
		e := newEnv(t, false)
		tok := e.token(t, ipA, 600)
		e.src.set(tc.err)
		for _, p := range []string{"/latest/meta-data/iam/security-credentials/reader", "/latest/meta-data/iam/info"} {
			w := e.get(p, ipA, tok)
			if w.Code != tc.status || w.Body.String() != tc.body || w.Header().Get("Retry-After") != tc.retryAfter {
				t.Errorf("%v, %s: %d %q Retry-After %q; want %d %q %q", tc.err, p, w.Code, w.Body, w.Header().Get("Retry-After"), tc.status, tc.body, tc.retryAfter)
			}
		}
		// The role name needs no credentials.
		if w := e.get("/latest/meta-data/iam/security-credentials/", ipA, tok); w.Code != 200 {
			t.Errorf("%v: role name %d", tc.err, w.Code)
		}
	}
}

// TestKeySize: a key of the wrong size is a programming error.
func TestKeySize(t *testing.T) {
	for name, f := range map[string]func(){
		"NewIMDS":      func() { aws.NewIMDS(newFakeSource(), testNode, make([]byte, 16), false) },
		"NewContainer": func() { aws.NewContainer(newFakeSource(), nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s took a bad key", name)
				}
			}()
			f()
		}()
	}
}
