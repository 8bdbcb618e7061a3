package responder

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/metabind/metabind/aws"
	"github.com/metabind/metabind/gcp"
	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/responder/metrics"
	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/store"
)

// Option is an optional part of the responder New and NewKubernetes
// assemble.
type Option func(*options)

type options struct {
	metrics *metrics.Metrics
	// kept is what a reload takes over from the responder it replaces
	// (live.go); nil for a new one.
	kept *kept
}

// WithMetrics records the responder's metrics in m: the requests, the
// binding lookups, the token caches and their sources, the calls to the
// Kubernetes API and the clouds.
func WithMetrics(m *metrics.Metrics) Option { return func(o *options) { o.metrics = m } }

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

var _ server.Observer = (*metrics.Metrics)(nil)

// timedLookup times each binding lookup.
type timedLookup struct {
	server.BindingLookup
	m *metrics.Metrics
}

func (l timedLookup) Lookup(ip netip.Addr) (store.Binding, bool, error) {
	start := time.Now()
	b, ok, err := l.BindingLookup.Lookup(ip)
	l.m.Lookup(time.Since(start))
	return b, ok, err
}

// observeCache points c's observer at m, naming its source.
func observeCache(c *credentials.Cache, source credentials.Source, m *metrics.Metrics) {
	if m != nil {
		c.Observe = m.TokenCache(sourceName(source))
	}
}

// sourceName is a source's label in metrics.
func sourceName(s credentials.Source) string {
	switch s.(type) {
	case *credentials.OwnIssuer:
		return "own_issuer"
	case *credentials.Kubernetes:
		return "kubernetes"
	case *credentials.GCP:
		return "gcp"
	case *credentials.AWS:
		return "aws"
	}
	return "other"
}

// timedTokenAPI times each TokenRequest.
type timedTokenAPI struct {
	credentials.TokenAPI
	m *metrics.Metrics
}

func (a timedTokenAPI) TokenRequest(ctx context.Context, pod *corev1.Pod, audience string, lifetime time.Duration) (string, time.Time, error) {
	start := time.Now()
	token, expiry, err := a.TokenAPI.TokenRequest(ctx, pod, audience, lifetime)
	a.m.KubernetesTokenRequest(time.Since(start))
	return token, expiry, err
}

// timedExchanger times each call to Google and classifies its errors.
type timedExchanger struct {
	credentials.Exchanger
	m *metrics.Metrics
}

func (x timedExchanger) ExchangeToken(ctx context.Context, subjectToken string, scopes []string) (gcp.Token, error) {
	start := time.Now()
	t, err := x.Exchanger.ExchangeToken(ctx, subjectToken, scopes)
	x.m.Exchange(metrics.GoogleSTS, time.Since(start), exchangeReason(err))
	return t, err
}

func (x timedExchanger) GenerateAccessToken(ctx context.Context, federated, email string, scopes []string, lifetime time.Duration) (gcp.Token, error) {
	start := time.Now()
	t, err := x.Exchanger.GenerateAccessToken(ctx, federated, email, scopes, lifetime)
	x.m.Exchange(metrics.GoogleIAM, time.Since(start), exchangeReason(err))
	return t, err
}

func (x timedExchanger) GenerateIDToken(ctx context.Context, federated, email, audience string) (gcp.Token, error) {
	start := time.Now()
	t, err := x.Exchanger.GenerateIDToken(ctx, federated, email, audience)
	x.m.Exchange(metrics.GoogleIAM, time.Since(start), exchangeReason(err))
	return t, err
}

// timedAssumeRoler times each call to AWS STS and classifies its errors.
type timedAssumeRoler struct {
	credentials.AssumeRoler
	m *metrics.Metrics
}

func (a timedAssumeRoler) AssumeRoleWithWebIdentity(ctx context.Context, roleARN, sessionName, webIdentityToken string) (aws.Credentials, error) {
	start := time.Now()
	c, err := a.AssumeRoler.AssumeRoleWithWebIdentity(ctx, roleARN, sessionName, webIdentityToken)
	a.m.Exchange(metrics.AWSSTS, time.Since(start), exchangeReason(err))
	return c, err
}

// exchangeReason classifies a cloud client's error (gcp's or aws's: each
// is ErrUnavailable, *Denied or a plain error).
func exchangeReason(err error) metrics.Reason {
	var (
		gd  *gcp.Denied
		ad  *aws.Denied
		net net.Error
	)
	switch {
	case err == nil:
		return metrics.Success
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &net) && net.Timeout():
		return metrics.Timeout
	case errors.Is(err, gcp.ErrUnavailable) || errors.Is(err, aws.ErrUnavailable):
		return metrics.Unavailable
	case errors.As(err, &gd):
		return deniedReason(gd.Status)
	case errors.As(err, &ad):
		return deniedReason(ad.Status)
	}
	return metrics.Other
}

// deniedReason: a refusal for who asked (401, 403), or for what it asked.
func deniedReason(status int) metrics.Reason {
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		return metrics.Denied
	}
	return metrics.Invalid
}
