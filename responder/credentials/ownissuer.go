package credentials

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/responder/subject"
)

// OwnIssuer mints tokens signed by the node's own issuer, with the
// Kubernetes service-account claims (claims.go): access tokens whose
// audience is the issuer (RFC 9068), and ID tokens for any other audience.
type OwnIssuer struct {
	// Now is the source's clock (iat); tests replace it before first use.
	Now func() time.Time

	iss           *issuer.Issuer
	node          string              // the kubernetes.io claim's node
	computeEngine ComputeEngineClaims // format=full ID tokens' google.compute_engine
}

var _ KeyedSource = (*OwnIssuer)(nil)

// NewOwnIssuer signs with iss for the pods of node; format=full ID tokens
// describe the instance as ce says.
func NewOwnIssuer(iss *issuer.Issuer, node string, ce ComputeEngineClaims) *OwnIssuer {
	return &OwnIssuer{Now: time.Now, iss: iss, node: node, computeEngine: ce}
}

// AccessToken: RFC 9068's iss, exp, aud (the issuer), sub, client_id, iat
// and jti, and the scope granted.
func (o *OwnIssuer) AccessToken(_ context.Context, s subject.Subject, scopes []string) (Token, error) {
	c := o.claims(&s, []string{o.iss.URL()}, o.Now())
	c.ClientID = party(&s)
	c.Scope = strings.Join(scopes, " ")
	return o.sign(c, TypeAccessToken)
}

// IDToken refuses the issuer URL as audience: that is the access tokens'
// audience, and an ID token must not pass for one. licenses is ignored:
// the node has no licences to name.
func (o *OwnIssuer) IDToken(_ context.Context, s subject.Subject, audience, format string, _ bool) (Token, error) {
	if audience == o.iss.URL() {
		return Token{}, &Invalid{Reason: "audience must not be the issuer URL"}
	}
	c := o.claims(&s, []string{audience}, o.Now())
	c.AuthorizedParty = party(&s)
	c.EmailVerified = c.Email != ""
	if format == FormatFull {
		c.Google = &GoogleClaims{ComputeEngine: o.computeEngine}
	}
	return o.sign(c, TypeIDToken)
}

// SubjectToken is the node issuer's ID token for audience (a workload
// identity provider's), which a cloud exchanges for its credentials: the
// provider trusts the issuer's JWKS, uploaded to it (`metabindctl keys jwks`).
func (o *OwnIssuer) SubjectToken(ctx context.Context, s subject.Subject, audience string) (string, error) {
	t, err := o.IDToken(ctx, s, audience, FormatStandard, false)
	return t.Value, err
}

// CurrentKeyID names the key the issuer signs with now.
func (o *OwnIssuer) CurrentKeyID() string { return o.iss.KeyID() }

// claims returns the claims of a token for s with audience aud, issued at
// now and valid for the issuer's lifetime. Callers add the claims
// particular to the kind of token.
func (o *OwnIssuer) claims(s *subject.Subject, aud []string, now time.Time) *Claims {
	now = now.Truncate(time.Second)
	return &Claims{
		Issuer:    o.iss.URL(),
		Subject:   ServiceAccountSubject(s.Namespace, s.ServiceAccount),
		Audience:  aud,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(o.iss.Lifetime())),
		ID:        newTokenID(),
		Email:     s.EmailClaim,
		Kubernetes: KubernetesClaims{
			Namespace:      s.Namespace,
			Pod:            ObjectRef{Name: s.Pod, UID: s.PodUID},
			ServiceAccount: ObjectRef{Name: s.ServiceAccount},
			Node:           ObjectRef{Name: o.node},
		},
	}
}

func (o *OwnIssuer) sign(c *Claims, typ string) (Token, error) {
	tok, kid, err := o.iss.Sign(c, typ)
	if err != nil {
		return Token{}, err
	}
	return Token{Value: tok, IssuedAt: c.IssuedAt.Time, Expiry: c.ExpiresAt.Time, KeyID: kid, ID: c.ID, Audience: c.Audience}, nil
}

// ServiceAccountSubject is the Kubernetes sub claim of a service account.
func ServiceAccountSubject(namespace, serviceAccount string) string {
	return "system:serviceaccount:" + namespace + ":" + serviceAccount
}

// party is whom a token is issued to, as azp of an ID token and client_id
// of an access token: the account's email when one is configured (what
// Google's clients and relying parties know an account by), else the
// Kubernetes subject.
func party(s *subject.Subject) string {
	if s.EmailClaim != "" {
		return s.EmailClaim
	}
	return ServiceAccountSubject(s.Namespace, s.ServiceAccount)
}

// newTokenID is 128 random bits, base64url without padding.
func newTokenID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}
