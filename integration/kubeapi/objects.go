package kubeapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// TokenAudienceVerb is the RBAC verb that lets a subject ask TokenRequest
// for an audience (the rule's resource).
const TokenAudienceVerb = "request-serviceaccounts-token-audience"

func (c *Cluster) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// ensureNode creates the Node object of name: tokens bound to a pod carry
// its node's name and UID, which the apiserver reads from it.
func (c *Cluster) ensureNode(name string) {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	_, err := c.AdminClient.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatalf("kubeapi: create node %s: %v", name, err)
	}
}

// EnsureNamespace creates namespace name unless it exists.
func (c *Cluster) EnsureNamespace(name string) {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	_, err := c.AdminClient.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatalf("kubeapi: create namespace %s: %v", name, err)
	}
}

// CreateServiceAccount creates ServiceAccount namespace/name with
// annotations (and the namespace when missing).
func (c *Cluster) CreateServiceAccount(namespace, name string, annotations map[string]string) *corev1.ServiceAccount {
	c.t.Helper()
	c.EnsureNamespace(namespace)
	ctx, cancel := c.ctx()
	defer cancel()
	sa, err := c.AdminClient.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
	}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("kubeapi: create serviceaccount %s/%s: %v", namespace, name, err)
	}
	return sa
}

// CreatePod creates pod namespace/name running as ServiceAccount ksa ("" is
// "default"), scheduled on nodeName by setting spec.nodeName (the Node object
// is created when missing). Its container's image is a placeholder: no
// kubelet runs it. The ServiceAccount must exist (the API refuses the pod
// otherwise); the namespace's "default" one is waited for.
func (c *Cluster) CreatePod(namespace, name, ksa, nodeName string) *corev1.Pod {
	c.t.Helper()
	if ksa == "" {
		ksa = "default"
	}
	c.EnsureNamespace(namespace)
	c.ensureNode(nodeName)
	if err := c.waitServiceAccount(namespace, ksa); err != nil {
		c.t.Fatalf("kubeapi: pod %s/%s: %v", namespace, name, err)
	}
	ctx, cancel := c.ctx()
	defer cancel()
	pod, err := c.AdminClient.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:           nodeName,
			ServiceAccountName: ksa,
			Containers:         []corev1.Container{{Name: "app", Image: "placeholder.invalid/never-pulled:v1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("kubeapi: create pod %s/%s: %v", namespace, name, err)
	}
	return pod
}

// DeletePod deletes pod namespace/name at once (grace period 0: there is no
// kubelet to finish a graceful deletion).
func (c *Cluster) DeletePod(namespace, name string) {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	err := c.AdminClient.CoreV1().Pods(namespace).Delete(ctx, name, *metav1.NewDeleteOptions(0))
	if err != nil {
		c.t.Fatalf("kubeapi: delete pod %s/%s: %v", namespace, name, err)
	}
}

// GrantAudience lets the nodes request tokens for audience, by applying the
// ClusterRole and ClusterRoleBinding of deploy/rbac.yaml with the role's
// audiences set to those granted so far and audience.
func (c *Cluster) GrantAudience(audience string) {
	c.t.Helper()
	role, binding, err := readRBAC(filepath.Join(c.root, "deploy/rbac.yaml"))
	if err != nil {
		c.t.Fatalf("kubeapi: %v", err)
	}
	ctx, cancel := c.ctx()
	defer cancel()
	roles := c.AdminClient.RbacV1().ClusterRoles()
	granted := []string{audience}
	current, err := roles.Get(ctx, role.Name, metav1.GetOptions{})
	switch {
	case err == nil:
		role.ResourceVersion = current.ResourceVersion
		for _, r := range current.Rules {
			if slices.Contains(r.Verbs, TokenAudienceVerb) {
				granted = append(granted, r.Resources...)
			}
		}
	case !apierrors.IsNotFound(err):
		c.t.Fatalf("kubeapi: get clusterrole %s: %v", role.Name, err)
	}
	slices.Sort(granted)
	granted = slices.Compact(granted)
	for i := range role.Rules {
		if slices.Contains(role.Rules[i].Verbs, TokenAudienceVerb) {
			role.Rules[i].Resources = granted
		}
	}
	if role.ResourceVersion == "" {
		_, err = roles.Create(ctx, role, metav1.CreateOptions{})
	} else {
		_, err = roles.Update(ctx, role, metav1.UpdateOptions{})
	}
	if err != nil {
		c.t.Fatalf("kubeapi: apply clusterrole %s: %v", role.Name, err)
	}
	_, err = c.AdminClient.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatalf("kubeapi: create clusterrolebinding %s: %v", binding.Name, err)
	}
}

// readRBAC reads the ClusterRole with the token-audience rule and its
// ClusterRoleBinding from a manifest of YAML documents.
func readRBAC(path string) (*rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var role *rbacv1.ClusterRole
	var binding *rbacv1.ClusterRoleBinding
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		switch meta.Kind {
		case "":
			continue // only comments
		case "ClusterRole":
			role = &rbacv1.ClusterRole{}
			err = yaml.UnmarshalStrict(doc, role)
		case "ClusterRoleBinding":
			binding = &rbacv1.ClusterRoleBinding{}
			err = yaml.UnmarshalStrict(doc, binding)
		default:
			err = fmt.Errorf("unexpected kind %q", meta.Kind)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if role == nil || binding == nil {
		return nil, nil, fmt.Errorf("%s: want a ClusterRole and a ClusterRoleBinding", path)
	}
	return role, binding, nil
}

// JWKS returns the apiserver's /openid/v1/jwks: the keys its service-account
// tokens verify with.
func (c *Cluster) JWKS() []byte {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	b, err := c.AdminClient.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		c.t.Fatalf("kubeapi: get %s: %v", c.JWKSURL, err)
	}
	return b
}

// waitServiceAccount waits for ServiceAccount namespace/name (the
// controller-manager makes each namespace's "default").
func (c *Cluster) waitServiceAccount(namespace, name string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		if c.kcm.Started() && !c.kcm.Running() {
			return fmt.Errorf("waiting for serviceaccount %s/%s: %s exited (%v)", namespace, name, c.kcm.Name, c.kcm.Err())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.AdminClient.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
		cancel()
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			return fmt.Errorf("serviceaccount %s/%s: %w", namespace, name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Node is the API's object of the cluster's node (NodeName).
func (c *Cluster) Node() *corev1.Node {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	n, err := c.AdminClient.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
	if err != nil {
		c.t.Fatalf("kubeapi: get node %s: %v", c.NodeName, err)
	}
	return n
}

// SetTaints replaces the node's taints.
func (c *Cluster) SetTaints(ts ...corev1.Taint) {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	n := c.Node()
	n.Spec.Taints = ts
	if _, err := c.AdminClient.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		c.t.Fatalf("kubeapi: set the taints of node %s: %v", c.NodeName, err)
	}
}
