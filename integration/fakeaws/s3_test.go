package fakeaws_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// TestS3Refuses: only a request signed by aws-sdk-go-v2 with live keys the
// fake STS issued, their session token, for s3 in the fake's region, now,
// and unchanged since; each refusal with S3's status and code.
func TestS3Refuses(t *testing.T) {
	e := newEnv(t)
	e.fake.Trust(roleARN, ksaSub)
	e.fake.Trust(otherRole, otherSub)
	creds := sdkCreds(e.assume(t, roleARN, ksaSub))
	other := sdkCreds(e.assume(t, otherRole, otherSub))
	now := e.clock.Now()
	listing := "/" + bucket + "?list-type=2"
	get := func() *http.Request { return e.s3Request(t, http.MethodGet, listing, nil) }
	signed := func() *http.Request { return sign(t, get(), creds, "s3", region, now) }
	with := func(change func(*sdkaws.Credentials)) sdkaws.Credentials {
		c := creds
		change(&c)
		return c
	}

	for _, tc := range []struct {
		name       string
		req        func() *http.Request
		wantStatus int
		wantCode   string
	}{
		{"signed", signed, 200, ""},
		{"unsigned", get, 403, "AccessDenied"},
		{"a key it did not issue", func() *http.Request {
			return sign(t, get(), with(func(c *sdkaws.Credentials) { c.AccessKeyID = "ASIAAAAAAAAAAAAAAAAA" }), "s3", region, now)
		}, 403, "InvalidAccessKeyId"},
		{"a long-term key", func() *http.Request {
			return sign(t, get(), sdkaws.Credentials{AccessKeyID: "AKIAIOSFODNN7EXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}, "s3", region, now)
		}, 403, "InvalidAccessKeyId"},
		{"wrong secret", func() *http.Request {
			return sign(t, get(), with(func(c *sdkaws.Credentials) { c.SecretAccessKey = other.SecretAccessKey }), "s3", region, now)
		}, 403, "SignatureDoesNotMatch"},
		{"no session token", func() *http.Request {
			return sign(t, get(), with(func(c *sdkaws.Credentials) { c.SessionToken = "" }), "s3", region, now)
		}, 403, "InvalidAccessKeyId"},
		{"another session's token", func() *http.Request {
			return sign(t, get(), with(func(c *sdkaws.Credentials) { c.SessionToken = other.SessionToken }), "s3", region, now)
		}, 400, "InvalidToken"},
		{"token changed after signing", func() *http.Request {
			r := signed()
			r.Header.Set("X-Amz-Security-Token", other.SessionToken)
			return r
		}, 400, "InvalidToken"},
		{"another region", func() *http.Request { return sign(t, get(), creds, "s3", "us-east-1", now) }, 400, "AuthorizationHeaderMalformed"},
		{"another service", func() *http.Request { return sign(t, get(), creds, "sts", region, now) }, 400, "AuthorizationHeaderMalformed"},
		{"signed 20 minutes ago", func() *http.Request { return sign(t, get(), creds, "s3", region, now.Add(-20*time.Minute)) }, 403, "RequestTimeTooSkewed"},
		{"signed 20 minutes ahead", func() *http.Request { return sign(t, get(), creds, "s3", region, now.Add(20*time.Minute)) }, 403, "RequestTimeTooSkewed"},
		{"signed 10 minutes ago", func() *http.Request { return sign(t, get(), creds, "s3", region, now.Add(-10*time.Minute)) }, 200, ""},
		{"query changed after signing", func() *http.Request {
			r := signed()
			r.URL.RawQuery += "&prefix=x"
			return r
		}, 403, "SignatureDoesNotMatch"},
		{"bucket changed after signing", func() *http.Request {
			r := signed()
			r.URL.Path = "/other-bucket"
			return r
		}, 403, "SignatureDoesNotMatch"},
		{"method changed after signing", func() *http.Request {
			r := signed()
			r.Method = http.MethodDelete
			return r
		}, 403, "SignatureDoesNotMatch"},
		{"payload hash changed after signing", func() *http.Request {
			r := signed()
			r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
			return r
		}, 403, "SignatureDoesNotMatch"},
		{"date changed after signing", func() *http.Request {
			r := signed()
			r.Header.Set("X-Amz-Date", now.Add(time.Second).UTC().Format("20060102T150405Z"))
			return r
		}, 403, "SignatureDoesNotMatch"},
		{"an x-amz header added after signing", func() *http.Request {
			r := signed()
			r.Header.Set("X-Amz-Request-Payer", "requester")
			return r
		}, 403, "AccessDenied"},
		{"no payload hash", func() *http.Request {
			r := get()
			r.Header.Del("X-Amz-Content-Sha256")
			return sign(t, r, creds, "s3", region, now)
		}, 400, "InvalidRequest"},
		{"payload hash of another body", func() *http.Request {
			r := e.s3Request(t, http.MethodGet, listing, []byte("body"))
			r.Header.Set("X-Amz-Content-Sha256", strings.Repeat("0", 64))
			return sign(t, r, creds, "s3", region, now)
		}, 400, "XAmzContentSHA256Mismatch"},
		{"no date", func() *http.Request {
			r := signed()
			r.Header.Del("X-Amz-Date")
			return r
		}, 403, "AccessDenied"},
		{"credential date of another day", func() *http.Request {
			r := signed()
			auth := r.Header.Get("Authorization")
			day := now.UTC().Format("20060102")
			r.Header.Set("Authorization", strings.Replace(auth, "/"+day+"/", "/"+now.UTC().Add(-24*time.Hour).Format("20060102")+"/", 1))
			return r
		}, 400, "AuthorizationHeaderMalformed"},
		{"a bearer token", func() *http.Request {
			r := get()
			r.Header.Set("Authorization", "Bearer "+creds.SessionToken)
			return r
		}, 400, "InvalidArgument"},
		{"a presigned URL", func() *http.Request {
			r := get()
			q := r.URL.Query()
			q.Set("X-Amz-Expires", "300")
			r.URL.RawQuery = q.Encode()
			u, _, err := v4.NewSigner().PresignHTTP(t.Context(), creds, r, "UNSIGNED-PAYLOAD", "s3", region, now)
			if err != nil {
				t.Fatal(err)
			}
			p, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}, 403, "AccessDenied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.fake.Calls()
			status, code, body := e.do(t, tc.req())
			if status != tc.wantStatus || code != tc.wantCode {
				t.Fatalf("%d %q, want %d %q\n%s", status, code, tc.wantStatus, tc.wantCode, body)
			}
			denied := 0
			if status != 200 {
				denied = 1
			}
			if after := e.fake.Calls(); after.S3 != before.S3+1 || after.Denied != before.Denied+denied {
				t.Fatalf("calls %+v after %+v", after, before)
			}
		})
	}

	// Expired credentials: refused from their Expiration on, even signed
	// at the time.
	e.clock.Advance(time.Hour)
	req := sign(t, get(), creds, "s3", region, e.clock.Now())
	if status, code, _ := e.do(t, req); status != 400 || code != "ExpiredToken" {
		t.Fatalf("expired: %d %s", status, code)
	}
}

// TestS3Requests: what the SDK's S3 client sends for a few calls, with
// paths and queries that need encoding; all authenticated first.
func TestS3Requests(t *testing.T) {
	e := newEnv(t)
	e.fake.Trust(roleARN, ksaSub)
	creds := sdkCreds(e.assume(t, roleARN, ksaSub))
	now := e.clock.Now()
	for _, tc := range []struct {
		name, method, target string
		wantStatus           int
		wantCode             string
	}{
		{"ListObjectsV2", http.MethodGet, "/" + bucket + "?list-type=2", 200, ""},
		{"ListObjectsV2 with a prefix to encode", http.MethodGet, "/" + bucket + "?" +
			url.Values{"list-type": {"2"}, "prefix": {"a b/c+d~é*"}, "delimiter": {"/"}, "max-keys": {"10"}}.Encode(), 200, ""},
		{"ListObjects", http.MethodGet, "/" + bucket + "?encoding-type=url", 200, ""},
		{"a bare query key", http.MethodGet, "/" + bucket + "?location", 200, ""},
		{"HeadBucket", http.MethodHead, "/" + bucket, 200, ""},
		{"trailing slash", http.MethodGet, "/" + bucket + "/", 200, ""},
		{"GetObject", http.MethodGet, "/" + bucket + "/hello.txt", 200, ""},
		{"HeadObject", http.MethodHead, "/" + bucket + "/hello.txt", 200, ""},
		{"another key", http.MethodGet, "/" + bucket + "/hello.txt.bak", 404, "NoSuchKey"},
		{"a key to encode", http.MethodGet, "/" + bucket + "/a%20b%2Bc/%C3%A9~", 404, "NoSuchKey"},
		{"not a bucket name", http.MethodGet, "/Test_Bucket", 404, "NoSuchBucket"},
		{"PUT", http.MethodPut, "/" + bucket, 405, "MethodNotAllowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := sign(t, e.s3Request(t, tc.method, tc.target, nil), creds, "s3", region, now)
			status, code, body := e.do(t, req)
			if status != tc.wantStatus || code != tc.wantCode {
				t.Fatalf("%d %q, want %d %q\n%s", status, code, tc.wantStatus, tc.wantCode, body)
			}
			if tc.name == "GetObject" && string(body) != "hello from fakeaws\n" {
				t.Fatalf("object %q", body)
			}
		})
	}
	// Signed headers' values trimmed and their inner spaces squeezed, a
	// repeated header's values joined, as the SDK's signer does.
	req := e.s3Request(t, http.MethodGet, "/"+bucket+"?list-type=2", nil)
	req.Header.Set("X-Amz-Meta-Note", "  a   b  c ")
	req.Header.Add("X-Custom", "one")
	req.Header.Add("X-Custom", " two  too")
	if status, code, body := e.do(t, sign(t, req, creds, "s3", region, now)); status != 200 {
		t.Fatalf("headers to canonicalize: %d %s\n%s", status, code, body)
	}
	if !strings.Contains(req.Header.Get("Authorization"), "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-note;x-amz-security-token;x-custom,") {
		t.Fatalf("signed %s", req.Header.Get("Authorization"))
	}
	// Unsigned, the same requests are all AccessDenied.
	if status, code, _ := e.do(t, e.s3Request(t, http.MethodGet, "/"+bucket+"/hello.txt", nil)); status != 403 || code != "AccessDenied" {
		t.Fatalf("unsigned key: %d %s", status, code)
	}
}
