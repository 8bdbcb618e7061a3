package credentials

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	corev1 "k8s.io/api/core/v1"

	"github.com/metabind/metabind/kube"
	"github.com/metabind/metabind/responder/subject"
)

// TokenAPI is the part of the Kubernetes client the source uses
// (kube.Client).
type TokenAPI interface {
	Pod(ctx context.Context, namespace, name, uid string) (*corev1.Pod, error)
	TokenRequest(ctx context.Context, pod *corev1.Pod, audience string, lifetime time.Duration) (string, time.Time, error)
}

var _ TokenAPI = (*kube.Client)(nil)

// RefreshFraction is how much of a Kubernetes or cloud token's life
// remains when the cache asks for the next one.
const RefreshFraction = 0.2

// refreshAt is when a token issued at and expiring at expiry is due for a
// refresh.
func refreshAt(issued, expiry time.Time) time.Time {
	return expiry.Add(-time.Duration(float64(expiry.Sub(issued)) * RefreshFraction))
}

// Kubernetes mints a pod's tokens at the cluster's issuer: a TokenRequest
// for the pod's service account, bound to the calling pod (name and UID),
// made with the node's own credential, so the API server itself checks
// that the pod runs on this node. Its ID tokens are what the cluster's
// OIDC issuer signs: a relying party verifies them with the cluster's
// JWKS. Access tokens are a cloud's to give (a cloud exchange); without
// one it has none, and says so.
type Kubernetes struct {
	api       TokenAPI
	audiences []string
	lifetime  time.Duration
}

var _ Source = (*Kubernetes)(nil)

// NewKubernetes mints through api for the audiences pods may ask for, with
// tokens of lifetime.
func NewKubernetes(api TokenAPI, audiences []string, lifetime time.Duration) *Kubernetes {
	return &Kubernetes{api: api, audiences: audiences, lifetime: lifetime}
}

// Audiences are the audiences pods may ask ID tokens for.
func (k *Kubernetes) Audiences() []string { return k.audiences }

// AccessToken: none without a cloud exchange. Never a node credential, and
// never a token of the node's own issuer for a Kubernetes pod.
func (k *Kubernetes) AccessToken(context.Context, subject.Subject, []string) (Token, error) {
	return Token{}, &subject.Refused{Code: http.StatusNotFound,
		Reason: "no access token: in Kubernetes mode access tokens come from a cloud exchange, and none is configured"}
}

// IDToken asks the API server for a token of the pod's service account for
// audience, bound to the pod. format and licenses are GCE's: the cluster's
// token always names the pod, its service account and the node.
func (k *Kubernetes) IDToken(ctx context.Context, s subject.Subject, audience, _ string, _ bool) (Token, error) {
	if !slices.Contains(k.audiences, audience) {
		return Token{}, &subject.Refused{Code: http.StatusForbidden,
			Reason: fmt.Sprintf("audience %q is not one of kubernetes.audiences in the responder's configuration", audience)}
	}
	pod, err := k.api.Pod(ctx, s.Namespace, s.Pod, s.PodUID)
	if err != nil {
		return Token{}, subject.APIError(err)
	}
	value, expiry, err := k.api.TokenRequest(ctx, pod, audience, k.lifetime)
	if err != nil {
		return Token{}, subject.APIError(err)
	}
	// IssuedAt is left to the cache (its clock, as the request's that
	// started the mint saw it): the API server's iat may be ahead.
	t := Token{Value: value, Expiry: expiry, Audience: []string{audience}, RefreshAt: refreshAt(time.Now(), expiry)}
	describe(&t)
	return t, nil
}

// SubjectToken is the pod-bound token a cloud exchanges for its
// credentials: audience is the cloud's (a workload identity provider's,
// sts.amazonaws.com), granted to system:nodes in RBAC but not one pods may
// ask for themselves, so it is not checked against Audiences.
func (k *Kubernetes) SubjectToken(ctx context.Context, s subject.Subject, audience string) (string, error) {
	pod, err := k.api.Pod(ctx, s.Namespace, s.Pod, s.PodUID)
	if err != nil {
		return "", subject.APIError(err)
	}
	value, _, err := k.api.TokenRequest(ctx, pod, audience, k.lifetime)
	if err != nil {
		return "", subject.APIError(err)
	}
	return value, nil
}

// describe fills what the audit line says of a token the cluster signed
// (issued at, jti, kid) from its own header and claims, unverified: they
// are only read, the API server just handed it over TLS.
func describe(t *Token) {
	var claims jwt.RegisteredClaims
	parsed, _, err := jwt.NewParser().ParseUnverified(t.Value, &claims)
	if err != nil {
		return
	}
	t.ID = claims.ID
	if kid, ok := parsed.Header["kid"].(string); ok {
		t.KeyID = kid
	}
}
