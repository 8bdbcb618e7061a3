package kubeapi_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/testutils"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/metabind/metabind/integration/kubeapi"
)

// TestControlPlane: the cluster serves, the node credential is confined to
// its node by the Node authorizer, deploy/rbac.yaml applies, and the
// apiserver stops and comes back on the same address.
func TestControlPlane(t *testing.T) {
	c := kubeapi.Start(t, t.TempDir())
	ctx := context.Background()

	c.CreateServiceAccount("team", "api", map[string]string{"example.com/id": "a"})
	pod := c.CreatePod("team", "p1", "api", c.NodeName)
	if pod.UID == "" || pod.Spec.NodeName != c.NodeName {
		t.Fatalf("pod: uid %q node %q", pod.UID, pod.Spec.NodeName)
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", c.NodeKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	node := kubernetes.NewForConfigOrDie(cfg)
	onNode := fields.OneTermEqualSelector("spec.nodeName", c.NodeName).String()
	list, err := node.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: onNode})
	if err != nil {
		t.Fatalf("node lists its pods: %v", err)
	}
	if len(list.Items) != 1 || list.Items[0].UID != pod.UID {
		t.Fatalf("node's pods: %d items", len(list.Items))
	}
	if _, err := node.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("node lists every pod: err %v, want 403", err)
	}
	if _, err := node.CoreV1().ServiceAccounts("team").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("node lists serviceaccounts: err %v, want 403", err)
	}

	c.GrantAudience("https://a.example")
	c.GrantAudience("https://b.example")
	role, err := c.AdminClient.RbacV1().ClusterRoles().Get(ctx, "metabind:token-audiences", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(role.Rules[0].Resources, ",")
	if got != "https://a.example,https://b.example" {
		t.Fatalf("granted audiences %s", got)
	}
	if !strings.Contains(string(c.JWKS()), `"keys"`) {
		t.Fatalf("jwks: %s", c.JWKS())
	}

	c.StopAPIServer()
	if _, err := c.AdminClient.CoreV1().Namespaces().Get(ctx, "team", metav1.GetOptions{}); err == nil {
		t.Fatal("API answers after StopAPIServer")
	}
	began := time.Now()
	c.StartAPIServer()
	t.Logf("apiserver back in %v", time.Since(began).Round(time.Millisecond))
	if _, err := c.AdminClient.CoreV1().Pods("team").Get(ctx, "p1", metav1.GetOptions{}); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

// TestControlPlaneInNetNS: with NetNS the control plane listens on the
// namespace's loopback only; the admin client reaches it from the test.
func TestControlPlaneInNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("cannot run under CI: needs root (network namespaces)")
		}
		t.Skip("skipped: needs root (network namespaces)")
	}
	nodeNS, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	t.Cleanup(func() {
		nodeNS.Close()
		testutils.UnmountNS(nodeNS)
	})
	c := kubeapi.Start(t, t.TempDir(), kubeapi.NetNS(nodeNS.Path()))
	if _, err := c.AdminClient.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	// Not in the test's own namespace.
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(c.Server, "https://"), time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s answers in the test's own network namespace", c.Server)
	}
}
