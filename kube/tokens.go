package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TokenRequest asks the API server for a token of pod's ServiceAccount,
// bound to pod (name and UID: the token stops being valid when the pod goes),
// for one audience, signed by the cluster's issuer. lifetime 0 is the
// configured TokenLifetime. The node may ask only for pods scheduled on it
// and for audiences granted to system:nodes: otherwise *ErrForbidden with the
// API's reason. A pod that went away in the meantime is ErrPodNotFound.
func (c *Client) TokenRequest(ctx context.Context, pod *corev1.Pod, audience string, lifetime time.Duration) (token string, expiry time.Time, err error) {
	if audience == "" {
		return "", time.Time{}, fmt.Errorf("token request: an audience is required")
	}
	if lifetime == 0 {
		lifetime = c.lifetime
	}
	if err := checkLifetime(lifetime); err != nil {
		return "", time.Time{}, fmt.Errorf("token request: lifetime: %w", err)
	}
	ksa := ServiceAccountName(pod)
	secs := int64(lifetime / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{audience},
		ExpirationSeconds: &secs,
		BoundObjectRef: &authenticationv1.BoundObjectReference{
			Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID,
		},
	}}
	op := fmt.Sprintf("token request for serviceaccount %s/%s (pod %s, audience %q)", pod.Namespace, ksa, pod.Name, audience)
	// The API server checks the bound pod against its own caches, which
	// learn of a new pod a moment after it is created: a pod we know is
	// there can be "not found" to it for that moment. Asked again within
	// lagWait; a pod really gone is not found to us too and ends it at once.
	deadline := time.Now().Add(lagWait)
	for {
		rctx, cancel := context.WithTimeout(ctx, c.timeout)
		out, err := c.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(rctx, ksa, req, metav1.CreateOptions{})
		cancel()
		if err == nil {
			return out.Status.Token, out.Status.ExpirationTimestamp.Time, nil
		}
		if !apierrors.IsNotFound(err) || !notFoundKind(err, "pod") {
			return "", time.Time{}, c.tokenRequestError(ctx, op, pod, err)
		}
		if time.Now().After(deadline) || c.podGoneSince(ctx, pod) {
			// NodeRestriction looked the bound pod up and it is gone.
			return "", time.Time{}, fmt.Errorf("%s: %w", op, ErrPodNotFound)
		}
		select {
		case <-ctx.Done():
			return "", time.Time{}, fmt.Errorf("%w: %s: %w", ErrUnavailable, op, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lagWait bounds how long a pod the node knows may be unknown to the API
// server's own caches.
const lagWait = time.Second

func (c *Client) tokenRequestError(ctx context.Context, op string, pod *corev1.Pod, err error) error {
	err = classify(op, err, ErrServiceAccountNotFound)
	if fe := (*ErrForbidden)(nil); errors.As(err, &fe) && c.podGoneSince(ctx, pod) {
		// NodeRestriction refuses a token bound to a pod that was replaced
		// (another UID) or is not related to the node any more: the binding
		// is stale, not forbidden.
		return fmt.Errorf("%s: pod %s/%s (UID %s) is gone: %w", op, pod.Namespace, pod.Name, pod.UID, ErrPodNotFound)
	}
	return err
}

// podGoneSince tells whether pod, which the caller had, is known to be gone
// now: seen deleted by the informer, or replaced under its name.
func (c *Client) podGoneSince(ctx context.Context, pod *corev1.Pod) bool {
	uid := string(pod.UID)
	if c.cachedPod(uid) != nil {
		return false
	}
	if c.wasDeleted(uid) {
		return true
	}
	_, err := c.getPod(ctx, pod.Namespace, pod.Name, uid)
	return errors.Is(err, ErrPodNotFound)
}

func notFoundKind(err error, prefix string) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	return strings.HasPrefix(status.Status().Details.Kind, prefix)
}
