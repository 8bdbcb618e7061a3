package kube

import (
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// ErrPodNotFound: the binding names a pod that is not there any more, or a
// pod of that namespace and name with another UID (deleted and recreated):
// the binding is stale. Never answered with the pod that has the name now.
var ErrPodNotFound = errors.New("pod not found")

// ErrServiceAccountNotFound: the pod's ServiceAccount does not exist (deleted
// after the pod was admitted).
var ErrServiceAccountNotFound = errors.New("service account not found")

// ErrUnavailable: the API server could not be asked (unreachable, timed out,
// overloaded, or it refused the node's credential). Nothing is known about
// the pod; a caller may try again later.
var ErrUnavailable = errors.New("kubernetes API unavailable")

// ErrForbidden is the API server's 403: the pod is scheduled on another node,
// the audience is not granted to the node, or the node credential lacks a
// permission. Reason is the API's message.
type ErrForbidden struct {
	Reason string
}

func (e *ErrForbidden) Error() string { return "forbidden by the kubernetes API: " + e.Reason }

// classify turns a client-go error into one of the package's errors. op
// names the request for the message. notFound is what a 404 means for this
// request.
func classify(op string, err error, notFound error) error {
	var status apierrors.APIStatus
	switch {
	case apierrors.IsNotFound(err) && notFound != nil:
		return fmt.Errorf("%s: %w", op, notFound)
	case apierrors.IsForbidden(err):
		reason := err.Error()
		if errors.As(err, &status) && status.Status().Message != "" {
			reason = status.Status().Message
		}
		return fmt.Errorf("%s: %w", op, &ErrForbidden{Reason: reason})
	case apierrors.IsUnauthorized(err),
		apierrors.IsTimeout(err), apierrors.IsServerTimeout(err),
		apierrors.IsTooManyRequests(err), apierrors.IsServiceUnavailable(err),
		apierrors.IsInternalError(err), apierrors.IsUnexpectedServerError(err):
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	case errors.As(err, &status):
		// Any other answer of the API (400, 409, 422, ...): the request was
		// refused as it was made, which no retry changes.
		return fmt.Errorf("%s: %w", op, err)
	default:
		// No answer: refused, reset, TLS, DNS, no route, or the deadline
		// (the request's own or the caller's context) passed first.
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	}
}
