package plugin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func TestResponderReady(t *testing.T) {
	readyz := func(code int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/readyz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(code)
			fmt.Fprint(w, body)
		}))
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	// A server that never answers.
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hung.Close()

	for _, tc := range []struct {
		name, addr, want string
	}{
		{"ready", readyz(200, "[+]store ok\n[+]rules ok\nreadyz check passed\n"), ""},
		{"not ready", readyz(503, "[+]store ok\n[-]rules failed: not repaired for 1m0s\n[-]kubernetes failed: informer not synced\nreadyz check failed\n"),
			"[-]rules failed: not repaired for 1m0s; [-]kubernetes failed: informer not synced"},
		{"no check lines", readyz(500, "boom"), "500 Internal Server Error"},
		{"refused", refused, "connection refused"},
		{"timeout", hung.Listener.Addr().String(), "not reachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := responderReady(context.Background(), tc.addr)
			if took := time.Since(start); took > ReadyzTimeout+500*time.Millisecond {
				t.Errorf("took %v", took)
			}
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("responderReady = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// With requireResponder, STATUS answers CNI error 50 naming the responder
// while its admin server is not reachable. (Without it STATUS never asks:
// integration/status_test.go.)
func TestStatusRequiresTheResponder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","type":"metabind","stateDir":%q,"logFile":%q,"requireResponder":true,"adminAddress":%q}`,
		dir+"/state", dir+"/cni.log", addr)
	cniErr, _ := skelRun(t, "STATUS", conf, New().Funcs())
	if cniErr == nil || cniErr.Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS = %v, want CNI error %d", cniErr, types.ErrPluginNotAvailable)
	}
	if !strings.Contains(cniErr.Msg, addr) || !strings.Contains(cniErr.Details, "connection refused") {
		t.Fatalf("STATUS error does not say why: %+v", cniErr)
	}
}
