package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/metabind/metabind/integration/kubeapi"
	"github.com/metabind/metabind/integration/manifests"
	"github.com/metabind/metabind/kube"
)

// startupTaint is the taint node pools register with and the agent lifts.
const startupTaint = "metabind.io/agent-not-ready"

// deployFiles are deploy/'s manifests as kustomization.yaml lists them.
func deployFiles(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../deploy/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ Resources []string }
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("deploy/kustomization.yaml: %v", err)
	}
	var files []string
	for _, r := range k.Resources {
		files = append(files, filepath.Join("..", "deploy", r))
	}
	return files
}

// TestDeployManifests: deploy/ is what a platform engineer applies, so a
// real API server takes every object of it with strict field validation;
// kustomization.yaml lists every manifest (coredns-metadata.yaml, kube-
// system's, aside); the DaemonSet keeps the shape its comments promise; and
// the startup-taint ServiceAccount can remove its taint and nothing else.
func TestDeployManifests(t *testing.T) {
	files := deployFiles(t)
	all, _ := filepath.Glob("../deploy/*.yaml")
	for _, f := range all {
		base := filepath.Base(f)
		if base == "kustomization.yaml" || base == "coredns-metadata.yaml" {
			continue
		}
		if !slices.Contains(files, f) {
			t.Errorf("deploy/kustomization.yaml does not list %s", base)
		}
	}
	objs, err := manifests.Load(files...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := manifests.Load("../deploy/coredns-metadata.yaml"); err != nil {
		t.Fatal(err)
	}
	checkDaemonSetShape(t, manifests.Find[*appsv1.DaemonSet](objs, "metabind"))

	c := kubeapi.Start(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := manifests.Create(ctx, c.AdminClient, objs); err != nil {
		t.Fatalf("apply deploy/: %v", err)
	}

	// The agent's ServiceAccount, as its pod's token would present it.
	agentCfg := rest.CopyConfig(c.AdminConfig)
	agentCfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:metabind-system:metabind-agent",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:metabind-system", "system:authenticated"},
		// A projected token of a pod names its node.
		Extra: map[string][]string{"authentication.kubernetes.io/node-name": {"pool-a-1"}},
	}
	agent := kubernetes.NewForConfigOrDie(agentCfg)
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "pool-a-1", Labels: map[string]string{"pool": "a"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: startupTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule},
			{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule},
		}},
	}
	if _, err := c.AdminClient.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := func(dryRun bool, p string) error {
		o := metav1.PatchOptions{}
		if dryRun {
			o.DryRun = []string{metav1.DryRunAll}
		}
		_, err := agent.CoreV1().Nodes().Patch(ctx, node.Name, types.JSONPatchType, []byte(p), o)
		return err
	}
	relabel := `[{"op":"replace","path":"/metadata/labels/pool","value":"b"}]`
	// The policy is enforced once the API server has compiled it: wait
	// (with dry runs, which admission sees too) until it refuses.
	deadline := time.Now().Add(20 * time.Second)
	for err := patch(true, relabel); !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err); err = patch(true, relabel) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent may still relabel a node 20s after the policy was created (last: %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	refused := map[string]string{
		"relabel":              relabel,
		"remove another taint": `[{"op":"remove","path":"/spec/taints/1"}]`,
		"cordon":               `[{"op":"add","path":"/spec/unschedulable","value":true}]`,
		"annotate":             `[{"op":"add","path":"/metadata/annotations","value":{"x":"y"}}]`,
		"retaint other value":  `[{"op":"replace","path":"/spec/taints/1/value","value":"cpu"}]`,
		"remove both taints":   `[{"op":"remove","path":"/spec/taints"}]`,
	}
	for name, p := range refused {
		if err := patch(false, p); err == nil || !strings.Contains(err.Error(), "metabind agent may") {
			t.Errorf("agent's %s: %v; want refused by the policy", name, err)
		}
	}
	// The responder's own removal (--remove-startup-taint) passes the policy.
	if removed, err := kube.RemoveTaint(ctx, agent, node.Name, startupTaint); err != nil || !removed {
		t.Fatalf("agent removes the startup taint: removed %t, %v", removed, err)
	}
	got, err := c.AdminClient.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// (The node lifecycle controller adds its own not-ready taint to a
	// node no kubelet reports for; that one is not the agent's.)
	hasTaint := func(key string) bool {
		return slices.ContainsFunc(got.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
	}
	if hasTaint(startupTaint) || !hasTaint("dedicated") || got.Labels["pool"] != "a" {
		t.Errorf("node after the agent's change: taints %v labels %v; want dedicated kept, %s gone, pool=a", got.Spec.Taints, got.Labels, startupTaint)
	}
	if err := patch(false, `[{"op":"add","path":"/spec/taints/-","value":{"key":"`+startupTaint+`","value":"true","effect":"NoSchedule"}}]`); err == nil {
		t.Error("the agent put the startup taint back; the policy allows removing it only")
	}
}

// checkDaemonSetShape holds the DaemonSet to what its comments and the
// README promise: host network, node-critical, every taint tolerated, not
// privileged, only the capabilities it names, probes on the node-local
// admin address, and the install step before the responder.
func checkDaemonSetShape(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	if ds == nil {
		t.Fatal("deploy/ has no DaemonSet named metabind")
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" {
		t.Errorf("DaemonSet: hostNetwork %t, priorityClassName %q", spec.HostNetwork, spec.PriorityClassName)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == ""
	}) {
		t.Errorf("DaemonSet tolerations %v: want one that tolerates every taint", spec.Tolerations)
	}
	if len(spec.InitContainers) != 1 || !slices.Contains(spec.InitContainers[0].Command, "install") {
		t.Errorf("DaemonSet: want one init container running metabindctl install")
	}
	allowed := map[string][]corev1.Capability{
		"install":      nil,
		"responder":    {"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"},
		"keep-chained": nil,
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil || (sc.Privileged != nil && *sc.Privileged) || sc.Capabilities == nil ||
			!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, allowed[c.Name]) {
			t.Errorf("container %s: security context %+v; want not privileged, drop ALL, add %v", c.Name, sc, allowed[c.Name])
		}
	}
	for _, c := range spec.Containers {
		if c.Name != "responder" {
			continue
		}
		for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Host != "127.0.0.1" || p.HTTPGet.Port.IntValue() != 9988 {
				t.Errorf("responder %s probe %+v: want HTTP on 127.0.0.1:9988", name, p)
			}
		}
	}
}
