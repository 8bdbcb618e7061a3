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
		// Answers net/http would also refuse or cut short.
		{"not http", raw(t, "SSH-2.0-OpenSSH_9.6\r\n"), "not an HTTP/1.x answer"},
		{"http/2 preface", raw(t, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "not an HTTP/1.x answer"},
		{"bad code", raw(t, "HTTP/1.1 2x0 OK\r\n\r\n"), "not an HTTP/1.x answer"},
		{"short code", raw(t, "HTTP/1.1 20 OK\r\n\r\n"), "not an HTTP/1.x answer"},
		{"closed at once", raw(t, ""), "no HTTP answer: EOF"},
		{"cut in the status line", raw(t, "HTTP/1.1 200"), "unexpected EOF"},
		{"cut in the headers", raw(t, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"), "unexpected EOF"},
		{"endless headers", raw(t, "HTTP/1.1 200 OK\r\n"+strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", 20)), "too long"},
		{"endless header line", raw(t, "HTTP/1.1 200 OK\r\nX-Pad: "+strings.Repeat("a", 20000)), "too long"},
		{"status only, then silence", rawHung(t, "HTTP/1.1 200 OK\r\n"), "not reachable"},
		{"bare LF, HTTP/1.0", raw(t, "HTTP/1.0 200 OK\nContent-Type: text/plain\n\nok"), ""},
		{"ready, body never read", raw(t, "HTTP/1.1 200 OK\r\n\r\n"+strings.Repeat("x", 1<<20)), ""},
		{"failed line past 64 KiB is not read", raw(t, "HTTP/1.1 503 Service Unavailable\r\n\r\n"+strings.Repeat("[+]x ok\n", 9000)+"[-]late failed\n"), "503 Service Unavailable"},
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

// raw serves one fixed answer (then closes) to every connection, whatever
// the request.
func raw(t *testing.T, answer string) string { return rawServer(t, answer, false) }

// rawHung writes answer and then holds the connection open.
func rawHung(t *testing.T, answer string) string { return rawServer(t, answer, true) }

func rawServer(t *testing.T, answer string, hang bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				c.Read(make([]byte, 4096)) // the request, if any
				c.Write([]byte(answer))
				if hang {
					<-done
				}
			}()
		}
	}()
	return ln.Addr().String()
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
