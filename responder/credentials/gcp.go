package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/metabind/metabind/gcp"
	"github.com/metabind/metabind/responder/subject"
)

// Exchanger is what the GCP source asks of Google (gcp.Client).
type Exchanger interface {
	ExchangeToken(ctx context.Context, subjectToken string, scopes []string) (gcp.Token, error)
	GenerateAccessToken(ctx context.Context, federated, email string, scopes []string, lifetime time.Duration) (gcp.Token, error)
	GenerateIDToken(ctx context.Context, federated, email, audience string) (gcp.Token, error)
}

var _ Exchanger = (*gcp.Client)(nil)

// SubjectTokens mints the token a workload identity provider exchanges: the
// cluster's pod-bound token (Kubernetes), or the node issuer's (OwnIssuer).
type SubjectTokens interface {
	SubjectToken(ctx context.Context, s subject.Subject, audience string) (string, error)
}

// cloudPlatform is the scope the federated token needs to call IAM
// Credentials on the account's behalf.
const cloudPlatform = "https://www.googleapis.com/auth/cloud-platform"

// GCP turns a subject into Google credentials through workload identity
// federation, as GKE's metadata server does: the subject's token (audience:
// the provider) is exchanged at STS for a federated access token; when the
// account names a Google service account (iam.gke.io/gcp-service-account,
// or a static rule's email), IAM Credentials impersonates it for an access
// or an ID token. Without one, the federated token is the access token
// (direct resource access) and there is no ID token, as on GKE.
//
// Its tokens are an account's, not a pod's: the cache shares them among the
// account's pods on the node. Calls to Google are bounded (MaxConcurrent at
// once) and, after Google was out of reach for an account, held back for a
// growing pause, so a node full of pods does not hammer an outage; a pause
// answers 503 at once.
type GCP struct {
	exchange Exchanger
	subjects SubjectTokens
	audience string // //iam.googleapis.com/<provider>
	lifetime time.Duration
	sem      chan struct{}

	mu      sync.Mutex
	backoff map[string]pause // by account
	now     func() time.Time
}

type pause struct {
	until time.Time
	next  time.Duration
}

var _ SharedSource = (*GCP)(nil)

// MaxConcurrent bounds the calls to Google in flight from one node.
const MaxConcurrent = 8

// Backoff bounds: the first pause after an outage, and the longest.
const (
	MinBackoff = time.Second
	MaxBackoff = 30 * time.Second
)

// NewGCP exchanges subjects' tokens for audience (the provider's) through
// exchange; impersonated access tokens live lifetime.
func NewGCP(exchange Exchanger, subjects SubjectTokens, audience string, lifetime time.Duration) *GCP {
	return &GCP{exchange: exchange, subjects: subjects, audience: audience, lifetime: lifetime,
		sem: make(chan struct{}, MaxConcurrent), backoff: map[string]pause{}, now: time.Now}
}

// SharedAcrossPods: the tokens are the account's.
func (g *GCP) SharedAcrossPods() bool { return true }

// AccessToken: the impersonated account's token, or the federated one.
func (g *GCP) AccessToken(ctx context.Context, s subject.Subject, scopes []string) (Token, error) {
	gsa := s.EmailClaim
	stsScopes := scopes
	if gsa != "" {
		stsScopes = []string{cloudPlatform}
	}
	var out Token
	err := g.call(ctx, s, func() error {
		fed, err := g.federated(ctx, s, stsScopes)
		if err != nil || gsa == "" {
			out = fromGCP(fed)
			return err
		}
		t, err := g.exchange.GenerateAccessToken(ctx, fed.Value, gsa, scopes, g.lifetime)
		out = fromGCP(t)
		return err
	})
	return out, err
}

// IDToken: a Google-signed ID token of the impersonated account; none for
// an account that names no Google service account.
func (g *GCP) IDToken(ctx context.Context, s subject.Subject, audience, _ string, _ bool) (Token, error) {
	gsa := s.EmailClaim
	if gsa == "" {
		return Token{}, &subject.Refused{Code: http.StatusNotFound, Reason: fmt.Sprintf(
			"no ID token: the Kubernetes service account %s/%s needs the annotation %s naming a Google service account (as on GKE)",
			s.Namespace, s.ServiceAccount, subject.GCPServiceAccountAnnotation)}
	}
	var out Token
	err := g.call(ctx, s, func() error {
		fed, err := g.federated(ctx, s, []string{cloudPlatform})
		if err != nil {
			return err
		}
		t, err := g.exchange.GenerateIDToken(ctx, fed.Value, gsa, audience)
		out = fromGCP(t)
		out.Audience = []string{audience}
		return err
	})
	return out, err
}

// federated exchanges the subject's token at STS.
func (g *GCP) federated(ctx context.Context, s subject.Subject, scopes []string) (gcp.Token, error) {
	subj, err := g.subjects.SubjectToken(ctx, s, g.audience)
	if err != nil {
		return gcp.Token{}, err
	}
	return g.exchange.ExchangeToken(ctx, subj, scopes)
}

// call runs fn within the concurrency bound and the account's backoff, and
// maps Google's errors to the server's answers.
func (g *GCP) call(ctx context.Context, s subject.Subject, fn func() error) error {
	account := s.Namespace + "/" + s.ServiceAccount + "/" + s.EmailClaim
	g.mu.Lock()
	p := g.backoff[account]
	g.mu.Unlock()
	if wait := p.until.Sub(g.now()); wait > 0 {
		return fmt.Errorf("%w: Google was out of reach; next try in %v", subject.ErrUnavailable, wait.Round(time.Millisecond))
	}
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", subject.ErrUnavailable, ctx.Err())
	}
	err := fn()
	<-g.sem
	err = googleError(err)
	g.mu.Lock()
	defer g.mu.Unlock()
	if errors.Is(err, subject.ErrUnavailable) {
		next := min(max(p.next*2, MinBackoff), MaxBackoff)
		g.backoff[account] = pause{until: g.now().Add(next), next: next}
	} else {
		delete(g.backoff, account)
	}
	return err
}

// googleError: Google out of reach is 503, its refusal 403 with its message.
func googleError(err error) error {
	var denied *gcp.Denied
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gcp.ErrUnavailable):
		return fmt.Errorf("%w: %w", subject.ErrUnavailable, err)
	case errors.As(err, &denied):
		return &subject.Refused{Code: http.StatusForbidden, Reason: denied.Message}
	default:
		return err
	}
}

// fromGCP is a token Google gave, refreshed when 20 % of its life remains.
func fromGCP(t gcp.Token) Token {
	// IssuedAt is left to the cache: its clock as the request that started
	// the mint saw it, so every request after that finds the token.
	out := Token{Value: t.Value, Expiry: t.Expiry}
	if !t.Expiry.IsZero() {
		out.RefreshAt = refreshAt(time.Now(), t.Expiry)
	}
	return out
}
