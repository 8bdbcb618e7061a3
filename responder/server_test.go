package responder

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/responder/flavour/gce"
	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/store"
)

// countingLookup counts the store lookups, to tell requests refused before
// any work from those that were looked at.
type countingLookup struct {
	server.BindingLookup
	n int
}

func (c *countingLookup) Lookup(ip netip.Addr) (store.Binding, bool, error) {
	c.n++
	return c.BindingLookup.Lookup(ip)
}

func TestRequestSizeBounds(t *testing.T) {
	lookups := &countingLookup{BindingLookup: testLookup()}
	h, _ := newResponder(t, testCfg(t), lookups, nil)
	const p = "/computeMetadata/v1/project/project-id"
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name   string
		method string
		target string
		header map[string]string
		body   string
		status int
		looked bool // the caller was looked up
	}{
		{name: "plain", target: p, status: 200, looked: true},
		{name: "GET with a body", target: p, header: map[string]string{"Content-Length": "5"}, body: "hello", status: 400},
		{name: "HEAD with a body", method: "HEAD", target: p, header: map[string]string{"Content-Length": "1"}, body: "x", status: 400},
		{name: "chunked GET", target: p, header: map[string]string{"Transfer-Encoding": "chunked"}, body: "5\r\nhello\r\n0\r\n\r\n", status: 400},
		{name: "empty chunked GET", target: "/", header: map[string]string{"Transfer-Encoding": "chunked"}, body: "0\r\n\r\n", status: 400},
		{name: "body on the probe", target: "/", header: map[string]string{"Content-Length": "2"}, body: "hi", status: 400},
		{name: "Content-Length 0", target: p, header: map[string]string{"Content-Length": "0"}, status: 200, looked: true},
		{name: "path at the bound", target: "/computeMetadata/v1/" + long(server.MaxPathBytes-len("/computeMetadata/v1/")), status: 404, looked: true},
		{name: "path over the bound", target: "/computeMetadata/v1/" + long(server.MaxPathBytes), status: 404},
		{name: "encoded path over the bound", target: "/computeMetadata/v1/" + strings.Repeat("%61", server.MaxPathBytes/3+1), status: 404},
		{name: "query at the bound", target: p + "?x=" + long(server.MaxQueryBytes-2), status: 200, looked: true},
		{name: "query over the bound", target: p + "?x=" + long(server.MaxQueryBytes-1), status: 400},
		{name: "long audience", target: "/computeMetadata/v1/instance/service-accounts/default/identity?audience=" + long(server.MaxQueryBytes), status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			header := map[string]string{"Metadata-Flavor": "Google"}
			for k, v := range tc.header {
				header[k] = v
			}
			lookups.n = 0
			rec := doWithBody(t, h, method, tc.target, apiIP, header, tc.body)
			if rec.Code != tc.status {
				t.Errorf("status = %d, want %d (body %q)", rec.Code, tc.status, rec.Body)
			}
			if looked := lookups.n > 0; looked != tc.looked {
				t.Errorf("caller looked up: %v, want %v", looked, tc.looked)
			}
		})
	}
}

// serve runs srv on a fresh 127.0.0.1 listener until the test ends.
func serve(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestNewServerDefaults(t *testing.T) {
	srv := server.NewHTTPServer(http.NotFoundHandler(), nil)
	if srv.ReadHeaderTimeout != 5*time.Second || srv.MaxHeaderBytes != 16<<10 || srv.WriteTimeout <= gce.MaxLongPoll || srv.ReadTimeout == 0 || srv.IdleTimeout == 0 {
		t.Errorf("server = %+v", srv)
	}
}

// TestSlowClientIsCutOff: a client that trickles its request headers, a
// byte at a time and each byte well within the timeout, is still cut off
// once the header timeout has passed since it connected.
func TestSlowClientIsCutOff(t *testing.T) {
	h, _ := newTestHandler(t, nil)
	srv := server.NewHTTPServer(h, nil)
	const timeout = 200 * time.Millisecond
	srv.ReadHeaderTimeout = timeout
	addr := serve(t, srv)

	// The server's clock starts when it accepts, which may be before Dial
	// returns here: start ours first.
	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	request := "GET /computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: metadata\r\nMetadata-Flavor: Google\r\nX-Padding: " +
		strings.Repeat("p", 200) + "\r\n\r\n"
	// At 20 bytes a second the request would take over 13 s to send.
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := range len(request) {
			if _, err := conn.Write([]byte{request[i]}); err != nil {
				return // cut off
			}
			<-tick.C
		}
	}()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second)) // the test's own bound
	resp, err := io.ReadAll(conn)
	elapsed := time.Since(start)
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		t.Fatalf("connection still open after %v", elapsed)
	}
	// net/http may tell the client why it hangs up (400 or 408); the
	// handler never ran.
	if len(resp) > 0 && !strings.HasPrefix(string(resp), "HTTP/1.1 400 ") && !strings.HasPrefix(string(resp), "HTTP/1.1 408 ") {
		t.Errorf("a slow client got an answer: %q", resp)
	}
	if elapsed < timeout || elapsed > timeout+time.Second {
		t.Errorf("cut off after %v, want about %v", elapsed, timeout)
	}
}

func TestOversizedHeadersAreRefused(t *testing.T) {
	h, _ := newTestHandler(t, nil)
	addr := serve(t, server.NewHTTPServer(h, nil))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: metadata\r\n")
		for range 64 { // 64 KiB of headers
			io.WriteString(conn, "X-Big: "+strings.Repeat("b", 1<<10-9)+"\r\n")
		}
		io.WriteString(conn, "\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
}
