package integration

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
)

// With requireResponder, the runtime's STATUS (through libcni, as
// containerd and CRI-O call it) fails with CNI error 50 naming why while
// the responder is not running, passes once its /readyz does, and fails
// again when it stops. Without the key STATUS never asks.
func TestStatusRequiresTheResponder(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.98.0/24"})
	required, err := libcni.ConfListFromBytes([]byte(strings.Replace(string(n.list.Bytes),
		`"type": "metabind",`, `"type": "metabind", "requireResponder": true, "adminAddress": "`+adminAddr+`",`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	status := func(list *libcni.NetworkConfigList) error {
		return n.ns.Do(func(ns.NetNS) error { return n.cni.GetStatusNetworkList(context.Background(), list) })
	}
	wantUnavailable := func(when, why string) {
		t.Helper()
		err := status(required)
		var cniErr *types.Error
		if !errors.As(err, &cniErr) || cniErr.Code != types.ErrPluginNotAvailable ||
			!strings.Contains(cniErr.Msg, "responder at "+adminAddr) || !strings.Contains(cniErr.Details, why) {
			t.Fatalf("STATUS %s = %v, want code 50 naming the responder and %q", when, err, why)
		}
		t.Logf("STATUS %s: %v", when, err)
	}

	if err := status(n.list); err != nil {
		t.Fatalf("STATUS without requireResponder and no responder: %v", err)
	}
	wantUnavailable("before the responder starts", "connection refused")

	cmd := n.startResponder(t, responderConfig)
	n.waitReadyz(t, http.StatusOK, "readyz check passed", 10*time.Second)
	if err := status(required); err != nil {
		t.Fatalf("STATUS with the responder ready: %v", err)
	}

	cmd.Process.Kill()
	cmd.Wait()
	wantUnavailable("after the responder stopped", "connection refused")
}
