package admin

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func pass(name string) Check {
	return Check{Name: name, Run: func() (string, error) { return "", nil }}
}

func fail(name, why string) Check {
	return Check{Name: name, Run: func() (string, error) { return "", errors.New(why) }}
}

func noted(name, note string) Check {
	return Check{Name: name, Run: func() (string, error) { return note, nil }}
}

func get(t *testing.T, srv *httptest.Server, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// /readyz lists every check, passing or not, as kube-apiserver's
// /readyz?verbose does, and answers 200 only when all pass.
func TestReadyzShapes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		checks []Check
		code   int
		body   string
	}{
		{"all pass", []Check{pass("store"), noted("rules", "no bases recorded yet"), pass("signing-key")}, http.StatusOK,
			"[+]store ok\n[+]rules ok: no bases recorded yet\n[+]signing-key ok\nreadyz check passed\n"},
		{"one fails", []Check{pass("store"), fail("rules", "filter INPUT lacks metabind's rule"), pass("signing-key")}, http.StatusServiceUnavailable,
			"[+]store ok\n[-]rules failed: filter INPUT lacks metabind's rule\n[+]signing-key ok\nreadyz check failed\n"},
		{"all fail", []Check{fail("store", "locked"), fail("kubernetes", "not synced")}, http.StatusServiceUnavailable,
			"[-]store failed: locked\n[-]kubernetes failed: not synced\nreadyz check failed\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewServer(tc.checks, nil)
			srv := httptest.NewServer(a.Handler())
			defer srv.Close()
			if code, body := get(t, srv, http.MethodGet, "/readyz"); code != tc.code || body != tc.body {
				t.Errorf("/readyz: %d\n%s\nwant %d\n%s", code, body, tc.code, tc.body)
			}
			// Liveness depends on no check.
			if code, body := get(t, srv, http.MethodGet, "/healthz"); code != http.StatusOK || body != "ok\n" {
				t.Errorf("/healthz: %d %q", code, body)
			}
		})
	}
}

// The admin server serves its two paths and nothing else, and counts every
// request it receives.
func TestAdminServesOnlyProbes(t *testing.T) {
	a := NewServer([]Check{pass("store")}, nil)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/computeMetadata/v1/", http.StatusNotFound},
		{http.MethodGet, "/livez", http.StatusNotFound},
		{http.MethodPost, "/readyz", http.StatusMethodNotAllowed},
		{http.MethodHead, "/healthz", http.StatusOK},
	} {
		if code, _ := get(t, srv, tc.method, tc.path); code != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, code, tc.code)
		}
	}
	if n := a.Requests(); n != 5 {
		t.Errorf("Requests() = %d, want 5", n)
	}
}
