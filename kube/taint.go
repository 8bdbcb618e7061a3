package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// StartupTaint keeps pods that need metabind off a node until its agent is
// ready there: the node registers with it (kubelet
// --register-with-taints=metabind.io/agent-not-ready:NoSchedule) and the
// responder removes it once its readiness checks first pass.
const StartupTaint = "metabind.io/agent-not-ready"

// taintAttempts bounds RemoveTaint's rereads when the taints change between
// its GET and its PATCH.
const taintAttempts = 5

// NewTaintClient is a client for RemoveTaint with the credential of the
// kubeconfig file at path, or the in-cluster one (the agent's own
// ServiceAccount) when path is "". Not the node's credential: the
// NodeRestriction admission plugin forbids a node to change its own taints.
func NewTaintClient(path, node string) (kubernetes.Interface, error) {
	rc, err := restConfig(path)
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "metabind (node " + node + ", startup taint)"
	rc.Timeout = requestTimeout
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client: %w", err)
	}
	return cs, nil
}

// RemoveTaint removes the taints with key (any effect) from node, keeping
// every other taint. removed is false when node has none (nothing to do).
// The patch tests that the taints are still those it read, so a taint
// another controller adds or removes meanwhile is never lost: the patch is
// refused and RemoveTaint reads the node again. Needs get and patch on
// nodes. Errors are classified as the package's (a 403 is *ErrForbidden).
func RemoveTaint(ctx context.Context, cs kubernetes.Interface, node, key string) (removed bool, err error) {
	for attempt := 1; ; attempt++ {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, classify("get node "+node, err, nil)
		}
		kept := slices.DeleteFunc(slices.Clone(n.Spec.Taints), func(t corev1.Taint) bool { return t.Key == key })
		if len(kept) == len(n.Spec.Taints) {
			return false, nil
		}
		err = patchTaints(ctx, cs, node, n.Spec.Taints, kept)
		if err == nil {
			return true, nil
		}
		if !taintsChanged(err) || attempt == taintAttempts {
			return false, classify("remove taint "+key+" from node "+node, err, nil)
		}
	}
}

// patchTaints replaces node's taints with to if they are still from.
func patchTaints(ctx context.Context, cs kubernetes.Interface, node string, from, to []corev1.Taint) error {
	type op struct {
		Op    string         `json:"op"`
		Path  string         `json:"path"`
		Value []corev1.Taint `json:"value"`
	}
	patch, err := json.Marshal([]op{{"test", "/spec/taints", from}, {"replace", "/spec/taints", to}})
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Nodes().Patch(ctx, node, types.JSONPatchType, patch, metav1.PatchOptions{})
	return err
}

// taintsChanged tells a patch refused because the taints are no longer
// those it tested (the API answers a failed test op with 422) or because
// of a write conflict.
func taintsChanged(err error) bool {
	var status apierrors.APIStatus
	return apierrors.IsConflict(err) ||
		errors.As(err, &status) && status.Status().Code == http.StatusUnprocessableEntity
}
