// Package manifests reads the YAML under deploy/ into typed API objects and
// creates them, as `kubectl apply -f` would on an empty cluster, so tests
// install exactly what a platform engineer applies, changed only where a
// test must point it elsewhere (image, host paths, configuration).
package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
)

// Load decodes every document of the files, in order, refusing unknown
// fields (a typo in a manifest is an error, as with kubectl's strict
// validation).
func Load(files ...string) ([]runtime.Object, error) {
	decoder := scheme.Codecs.UniversalDeserializer()
	var objs []runtime.Object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufioReader(b))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", f, i, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", f, i, err)
			}
			if err := strictCheck(doc, obj); err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", f, i, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs, nil
}

// Create creates each object with cs (system:masters), in order.
func Create(ctx context.Context, cs kubernetes.Interface, objs []runtime.Object) error {
	for _, obj := range objs {
		if err := create(ctx, cs, obj); err != nil {
			return fmt.Errorf("create %T: %w", obj, err)
		}
	}
	return nil
}

func create(ctx context.Context, cs kubernetes.Interface, obj runtime.Object) error {
	o := metav1.CreateOptions{FieldValidation: "Strict"}
	var err error
	switch v := obj.(type) {
	case *corev1.Namespace:
		_, err = cs.CoreV1().Namespaces().Create(ctx, v, o)
	case *corev1.ServiceAccount:
		_, err = cs.CoreV1().ServiceAccounts(v.Namespace).Create(ctx, v, o)
	case *corev1.ConfigMap:
		_, err = cs.CoreV1().ConfigMaps(v.Namespace).Create(ctx, v, o)
	case *rbacv1.ClusterRole:
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, v, o)
	case *rbacv1.ClusterRoleBinding:
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, v, o)
	case *admissionv1.ValidatingAdmissionPolicy:
		_, err = cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, v, o)
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		_, err = cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, v, o)
	case *appsv1.DaemonSet:
		_, err = cs.AppsV1().DaemonSets(v.Namespace).Create(ctx, v, o)
	default:
		err = fmt.Errorf("manifests: no create for %T", obj)
	}
	return err
}

// Find returns the first object of type T named name.
func Find[T interface {
	runtime.Object
	GetName() string
}](objs []runtime.Object, name string) T {
	var zero T
	for _, o := range objs {
		if v, ok := o.(T); ok && v.GetName() == name {
			return v
		}
	}
	return zero
}
