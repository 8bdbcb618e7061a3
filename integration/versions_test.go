package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/metabind/metabind/plugin"
	"github.com/metabind/metabind/store"
)

// specVersions are the CNI spec versions a conflist ending in metabind may
// declare. Calico, flannel and kindnet ship 0.3.1.
var specVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// TestSpecVersions runs ptp + host-local + metabind through libcni once per
// spec version, as portmap's tests do: ADD, the binding, the pod's identity
// over a real request, CHECK where the version has it, the verbs it does
// not have refused by the binary, DEL.
func TestSpecVersions(t *testing.T) {
	// A version the plugin declares but this test does not run would be
	// claimed without proof.
	for _, v := range plugin.SupportedVersions.SupportedVersions() {
		if !slices.Contains(specVersions, v) {
			t.Errorf("metabind declares spec version %s, which TestSpecVersions does not run", v)
		}
	}
	for i, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			testSpecVersion(t, v, chain{name: "ptp", subnet: fmt.Sprintf("10.197.%d.0/24", 50+i), cniVersion: v})
		})
	}
}

func testSpecVersion(t *testing.T, v string, c chain) {
	n := newNode(t, c)
	n.startResponder(t, responderConfig)
	p := n.addPod(t, "payments", "api-1")

	// metabind, last in the list, hands the runtime prevResult in the
	// conflist's own version.
	if p.resultVersion != v {
		t.Errorf("ADD result is version %q, want the conflist's %q", p.resultVersion, v)
	}
	var veth string
	for _, i := range p.result.Interfaces {
		if i.Sandbox == "" {
			veth = i.Name
		}
	}
	all, err := store.ReadAll(n.stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].IP != p.ip || all[0].Namespace != "payments" || all[0].Pod != "api-1" || all[0].PodUID != p.uid ||
		all[0].ContainerID != p.rt.ContainerID || all[0].HostInterface != veth || veth == "" {
		t.Fatalf("bindings after ADD: %+v, want one for %s on %q", all, p.ip, veth)
	}
	if code, body, err := p.metadataGet(emailPath); err != nil || code != 200 || body != identityOf["payments"].email {
		t.Fatalf("the pod's identity: %d %q %v", code, body, err)
	}
	if uid, why := tokenPodUID(p); uid != p.uid {
		t.Fatalf("the pod's token names pod UID %q (%s), want %q", uid, why, p.uid)
	}

	checkable, _ := version.GreaterThanOrEqualTo(v, "0.4.0")
	err = n.check(p)
	switch {
	case checkable && err != nil:
		t.Errorf("CHECK: %v", err)
	case !checkable && !errors.Is(err, libcni.ErrorCheckNotSupp):
		t.Errorf("CHECK through libcni at %s = %v, want libcni's refusal", v, err)
	}

	// The binary itself refuses the verbs the version does not have, before
	// it does anything: a GC with an empty list would otherwise unbind the
	// pod.
	if gc, _ := version.GreaterThanOrEqualTo(v, "1.1.0"); !gc {
		refused := []string{"GC", "STATUS"}
		if !checkable {
			refused = append(refused, "CHECK")
		}
		for _, verb := range refused {
			err := n.invokeAt(v, verb, p, fmt.Sprintf(`"prevResult": %s, "cni.dev/valid-attachments": []`, mustJSON(t, p.result)))
			var cniErr *types.Error
			if !errors.As(err, &cniErr) || cniErr.Code != types.ErrIncompatibleCNIVersion || !strings.Contains(cniErr.Msg, "does not allow "+verb) {
				t.Errorf("%s at %s = %v, want CNI error %d (version does not allow %s)", verb, v, err, types.ErrIncompatibleCNIVersion, verb)
			}
		}
		if all, err := store.ReadAll(n.stateDir, time.Second); err != nil || len(all) != 1 {
			t.Fatalf("bindings after the refused verbs: %+v %v", all, err)
		}
	}

	// DEL (below 0.4.0 libcni sends it without prevResult), then
	// containerd's second DEL without netns: nothing is left.
	n.delPod(t, p)
	second := *p.rt
	second.NetNS = ""
	if err := n.del(&second); err != nil {
		t.Errorf("second DEL without netns: %v", err)
	}
	if all, err := store.ReadAll(n.stateDir, time.Second); err != nil || len(all) != 0 {
		t.Errorf("bindings after DEL: %+v %v", all, err)
	}
	for _, o := range n.owned(t) {
		if o.ContainerID == p.rt.ContainerID {
			t.Errorf("a rule of the pod is left after DEL: %v", o)
		}
	}
}

// invokeAt runs the metabind binary alone on the node, with the node's
// netconf at spec version v plus extra (JSON members), for pod p.
func (n *node) invokeAt(v, command string, p *pod, extra string) error {
	conf := fmt.Sprintf(`{"cniVersion": %q, "name": "metabind-test", "type": "metabind", "stateDir": %q, "logFile": %q, %s}`,
		v, n.stateDir, n.logFile, extra)
	args := &invoke.Args{Command: command, ContainerID: p.rt.ContainerID, NetNS: p.ns.Path(), IfName: "eth0", Path: binDir}
	return n.ns.Do(func(ns.NetNS) error {
		return invoke.ExecPluginWithoutResult(context.Background(), binDir+"/metabind", []byte(conf), args, nil)
	})
}
