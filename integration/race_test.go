package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/metabind/metabind/plugin"
)

// Attack: IP reuse. The IP of pod A is handed to pod B (DEL A, ADD B) over
// and over while requests from that address are in flight. No request is
// ever answered with an identity whose binding was gone before the request
// was sent, and every request sent between an ADD's return and the next
// DEL is answered for the pod that ADD bound (freshness).
//
// One veth and IP (from ptp without metabind) stays put; metabind alone is
// run for each owner as the runtime runs it, with that prevResult, so the
// cycles are as fast as metabind itself. METABIND_RACE_CYCLES sets their
// number (default 2000).
func TestAttackIPReuseRace(t *testing.T) {
	n := newNode(t, chain{name: "ptp", subnet: "10.197.18.0/24"})
	n.startNodeMetadataServer(t) // a real node has a route there: unclaimed calls are reset at once
	// The requests in flight come from one address as fast as they can: lift
	// the per-caller rate limit, which would answer them 429.
	n.startResponder(t, responderConfig+"limits: {requestsPerSecond: 10000, burst: 100000}\n")
	p := n.addUnboundPod(t, "race", "holder")
	prev := mustJSON(t, p.result)
	cycles := 2000
	if v, err := strconv.Atoi(os.Getenv("METABIND_RACE_CYCLES")); err == nil && v > 0 {
		cycles = v
	}

	type owner struct {
		uid                                string
		addStart, addEnd, delStart, delEnd time.Time
	}
	type answer struct {
		start, end time.Time
		uid        string // "" when not answered with a token
		why        string // what came instead
	}
	owners := make([]owner, cycles)
	var (
		mu      sync.Mutex
		answers []answer
		stop    = make(chan struct{})
		done    sync.WaitGroup
	)
	ask := func() answer {
		a := answer{start: time.Now()}
		a.uid, a.why = tokenPodUID(p)
		a.end = time.Now()
		return a
	}
	done.Add(1)
	go func() { // requests in flight throughout
		defer done.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			a := ask()
			mu.Lock()
			answers = append(answers, a)
			mu.Unlock()
		}
	}()

	for k := range owners {
		namespace, name := "payments", fmt.Sprintf("api-%d", k)
		if k%2 == 1 {
			namespace, name = "web", fmt.Sprintf("site-%d", k)
		}
		cid := randomID()
		o := &owners[k]
		o.uid = "uid-" + cid[:12]
		args := fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=%s", namespace, name, o.uid)
		o.addStart = time.Now()
		if err := n.metabindOnly("ADD", cid, p, args, prev); err != nil {
			t.Fatalf("cycle %d: ADD: %v", k, err)
		}
		o.addEnd = time.Now()
		// At least one request inside every owner's window.
		a := ask()
		mu.Lock()
		answers = append(answers, a)
		mu.Unlock()
		o.delStart = time.Now()
		if err := n.metabindOnly("DEL", cid, p, args, prev); err != nil {
			t.Fatalf("cycle %d: DEL: %v", k, err)
		}
		o.delEnd = time.Now()
	}
	close(stop)
	done.Wait()

	byUID := make(map[string]*owner, len(owners))
	for i := range owners {
		byUID[owners[i].uid] = &owners[i]
	}
	stale, missed, inWindow := 0, 0, 0
	for _, a := range answers {
		if a.uid != "" {
			o, ok := byUID[a.uid]
			if !ok || a.start.After(o.delEnd) || a.end.Before(o.addStart) {
				stale++
				t.Errorf("a request sent at %v was answered for pod %s, bound from %v to %v", a.start, a.uid, o.addStart, o.delEnd)
			}
		}
		for i := range owners {
			o := &owners[i]
			if a.start.After(o.addEnd) && a.end.Before(o.delStart) {
				inWindow++
				if a.uid != o.uid {
					missed++
					t.Errorf("a request inside pod %s's binding was answered for %q (%s)", o.uid, a.uid, a.why)
				}
			}
		}
		if stale+missed > 10 {
			t.Fatal("stopping after 10 wrong answers")
		}
	}
	t.Logf("%d IP reuse cycles, %d requests (%d inside a binding's window): %d stale answers, %d missed", cycles, len(answers), inWindow, stale, missed)
	if inWindow < cycles {
		t.Fatalf("only %d requests fell inside a binding's window; the test checked too little", inWindow)
	}
}

// metabindOnly runs the metabind binary for one verb as a runtime would,
// with prevResult, on the node.
func (n *node) metabindOnly(command, containerID string, p *pod, cniArgs string, prevResult []byte) error {
	return n.invokeMetabind(command, containerID, p.ns.Path(), cniArgs, fmt.Sprintf(`"prevResult": %s`, prevResult))
}

// metabindCrashingAt is metabindOnly with the test-hook plugin
// (testhookBinDir), which kills itself at the checkpoint step.
func (n *node) metabindCrashingAt(t *testing.T, step, command, containerID string, p *pod, cniArgs string, prevResult []byte) error {
	t.Setenv(plugin.CrashEnv, step)
	defer os.Unsetenv(plugin.CrashEnv)
	return n.invokePlugin(testhookBinDir, command, containerID, p.ns.Path(), cniArgs, fmt.Sprintf(`"prevResult": %s`, prevResult))
}

// invokeMetabind runs the metabind binary on the node with the test's
// netconf (metabind's entry alone, under the node's network name) plus
// extra (JSON members).
func (n *node) invokeMetabind(command, containerID, netns, cniArgs, extra string) error {
	return n.invokePlugin(binDir, command, containerID, netns, cniArgs, extra)
}

// invokePlugin is invokeMetabind with the metabind binary of dir.
func (n *node) invokePlugin(dir, command, containerID, netns, cniArgs, extra string) error {
	// The node's network name: GC collects only its own network's bindings.
	conf := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": %q, "type": "metabind", "stateDir": %q, "logFile": %q, "backend": %q`, n.list.Name, n.stateDir, n.logFile, n.backend)
	if extra != "" {
		conf += ", " + extra
	}
	conf += "}"
	args := &invoke.Args{Command: command, ContainerID: containerID, NetNS: netns, IfName: "eth0", PluginArgsStr: cniArgs, Path: dir}
	return n.ns.Do(func(ns.NetNS) error {
		if command == "ADD" {
			_, err := invoke.ExecPluginWithResult(context.Background(), dir+"/metabind", []byte(conf), args, nil)
			return err
		}
		return invoke.ExecPluginWithoutResult(context.Background(), dir+"/metabind", []byte(conf), args, nil)
	})
}

// tokenPodUID asks for an access token from inside p and returns the pod
// UID it is bound to, or "" and what came instead.
func tokenPodUID(p *pod) (uid, why string) {
	code, body, err := p.metadataGet("/computeMetadata/v1/instance/service-accounts/default/token")
	if err != nil {
		return "", err.Error()
	}
	if code != 200 {
		return "", fmt.Sprintf("%d %q", code, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		return "", "token response: " + err.Error()
	}
	parts := strings.Split(tok.AccessToken, ".")
	if len(parts) != 3 {
		return "", "access token is not a JWT"
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", "access token: " + err.Error()
	}
	var claims k8sClaims
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", "access token claims: " + err.Error()
	}
	return claims.Kubernetes.Pod.UID, ""
}
