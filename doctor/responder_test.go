package doctor

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/metabind/metabind/store"
)

// The responder check asks every recorded responder address; any HTTP
// answer counts.
func TestCheckResponder(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) }))
	defer srv.Close()
	n := testNode(t)
	base := store.Base{Metadata: netip.MustParseAddrPort("169.254.169.254:80"), Responder: netip.MustParseAddrPort(srv.Listener.Addr().String()), Backend: "iptables"}
	putBindings(t, n.StateDir, &base)
	wantStatus(t, checkResponder(context.Background(), n), OK, "answers on "+srv.Listener.Addr().String()+" (HTTP 404)")

	srv.Close()
	r := checkResponder(context.Background(), &node{Options: n.Options})
	wantStatus(t, r, Fail, "no answer on "+srv.Listener.Addr().String())
	if !strings.Contains(r.Fix, "metabind-responder") {
		t.Errorf("fix %q", r.Fix)
	}
}

func TestCheckReadyz(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "[+]store ok\n[-]rules failed: filter chain METABIND-SOURCE is missing\n[+]signing-key ok\nreadyz check failed\n")
			return
		}
		fmt.Fprint(w, "[+]store ok\nreadyz check passed\n")
	}))
	defer srv.Close()
	n := testNode(t)
	n.AdminAddress = srv.Listener.Addr().String()
	wantStatus(t, checkReadyz(context.Background(), n), OK, "HTTP 200")
	ready = false
	r := checkReadyz(context.Background(), n)
	wantStatus(t, r, Fail, "HTTP 503: [-]rules failed: filter chain METABIND-SOURCE is missing")
	if strings.Contains(r.Detail, "[+]") {
		t.Errorf("detail %q: want only the failing lines", r.Detail)
	}
	srv.Close()
	wantStatus(t, checkReadyz(context.Background(), n), Fail, "/readyz")
}
