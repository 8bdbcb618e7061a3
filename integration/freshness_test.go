package integration

import (
	"fmt"
	"testing"
)

// An IP handed from one pod to the next is answered for its current owner
// from the first request after ADD returns: the responder never serves a
// stale identity and never 404s a pod whose ADD completed.
func TestFreshnessAcrossIPReuse(t *testing.T) {
	// A pool of exactly one address makes host-local hand the same IP to
	// every pod, as IPAM does under pressure.
	n := newNode(t, chain{name: "ptp", subnet: "10.197.3.0/24", rangeStart: "10.197.3.10", rangeEnd: "10.197.3.10"})
	n.startResponder(t, responderConfig)
	podNS := newPodNS(t)
	const cycles = 30
	for i := 0; i < cycles; i++ {
		namespace, name := "payments", fmt.Sprintf("api-%d", i)
		if i%2 == 1 {
			namespace, name = "web", fmt.Sprintf("site-%d", i)
		}
		p, err := n.addPodIn(podNS, namespace, name)
		if err != nil {
			t.Fatalf("cycle %d: ADD: %v", i, err)
		}
		if p.ip.String() != "10.197.3.10" {
			t.Fatalf("cycle %d: IPAM gave %s, the test needs the one address reused", i, p.ip)
		}
		want := identityOf[namespace]
		code, email, err := p.metadataGet("/computeMetadata/v1/instance/service-accounts/default/email")
		if err != nil || code != 200 || email != want.email {
			t.Fatalf("cycle %d: first request after ADD of %s/%s: %d %q %v, want %q", i, namespace, name, code, email, err, want.email)
		}
		code, token, err := p.metadataGet("/computeMetadata/v1/instance/service-accounts/default/identity?audience=" + defaultAudience)
		if err != nil || code != 200 {
			t.Fatalf("cycle %d: identity: %d %v", i, code, err)
		}
		claims, err := verify(token, p.jwks(t), defaultAudience)
		if err != nil || claims.Kubernetes.Pod.UID != p.uid || claims.Kubernetes.Pod.Name != name {
			t.Fatalf("cycle %d: token for %s (uid %s) names %+v (%v)", i, name, p.uid, claims.Kubernetes.Pod, err)
		}
		n.delPod(t, p)
	}
}
