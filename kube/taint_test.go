package kube

import (
	"context"
	"slices"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/metabind/metabind/integration/kubeapi"
)

// taintRemoverVerbs are the RBAC verbs on nodes RemoveTaint needs, as
// deploy/ should grant them to the agent's ServiceAccount.
var taintRemoverVerbs = []string{"get", "patch"}

// RemoveTaint against a real API server (Node,RBAC, NodeRestriction): with
// a ServiceAccount granted only get and patch on nodes it removes metabind's
// taint and keeps the others; a second call has nothing to do; a
// credential without patch, and the node's own (NodeRestriction), are
// refused with the API's reason; a patch whose taints changed since they
// were read is refused, not applied over the change.
func TestTaintRemovalAgainstAPIServer(t *testing.T) {
	c := kubeapi.Start(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	other := corev1.Taint{Key: "example.com/maintenance", Value: "true", Effect: corev1.TaintEffectNoExecute}
	ours := corev1.Taint{Key: StartupTaint, Effect: corev1.TaintEffectNoSchedule}
	c.SetTaints(ours, other)

	remover := serviceAccountClient(t, c, "taint-remover", taintRemoverVerbs)
	reader := serviceAccountClient(t, c, "node-reader", []string{"get"})

	t.Run("without patch nodes", func(t *testing.T) {
		removed, err := RemoveTaint(ctx, reader, c.NodeName, StartupTaint)
		wantForbidden(t, err, `cannot patch resource "nodes"`)
		if removed || !slices.ContainsFunc(c.Node().Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == StartupTaint }) {
			t.Fatalf("removed %v, taints %v", removed, c.Node().Spec.Taints)
		}
	})
	t.Run("with the node's own credential", func(t *testing.T) {
		cs, err := NewTaintClient(c.NodeKubeconfig, c.NodeName)
		if err != nil {
			t.Fatal(err)
		}
		_, err = RemoveTaint(ctx, cs, c.NodeName, StartupTaint)
		wantForbidden(t, err, "not allowed to modify taints")
	})
	t.Run("a patch over changed taints is refused", func(t *testing.T) {
		stale := []corev1.Taint{ours}
		err := patchTaints(ctx, c.AdminClient, c.NodeName, stale, nil)
		if !taintsChanged(err) {
			t.Fatalf("patch testing stale taints: %v, want a refusal taintsChanged recognises", err)
		}
		if got := c.Node().Spec.Taints; len(got) != 2 {
			t.Fatalf("taints after a refused patch: %v", got)
		}
	})
	t.Run("removes ours, keeps the others", func(t *testing.T) {
		removed, err := RemoveTaint(ctx, remover, c.NodeName, StartupTaint)
		if err != nil || !removed {
			t.Fatalf("RemoveTaint: %v %v", removed, err)
		}
		if got := c.Node().Spec.Taints; len(got) != 1 || got[0].Key != other.Key || got[0].Effect != other.Effect || got[0].Value != other.Value {
			t.Fatalf("taints after: %v, want only %v", got, other)
		}
		removed, err = RemoveTaint(ctx, remover, c.NodeName, StartupTaint)
		if err != nil || removed {
			t.Fatalf("second RemoveTaint: %v %v, want nothing to do", removed, err)
		}
	})
}

// serviceAccountClient is a client with the token of a new ServiceAccount
// granted verbs on nodes, and nothing else.
func serviceAccountClient(t *testing.T, c *kubeapi.Cluster, name string, verbs []string) kubernetes.Interface {
	t.Helper()
	const ns = "metabind-system"
	c.CreateServiceAccount(ns, name, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rbac := c.AdminClient.RbacV1()
	_, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: verbs}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: name}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.AdminClient.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(&rest.Config{
		Host:            c.Server,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.AdminConfig.CAData},
		BearerToken:     tok.Status.Token,
		Dial:            c.AdminConfig.Dial,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
