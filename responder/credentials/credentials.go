// Package credentials turns a subject into tokens. A Source mints them
// (OwnIssuer: signed by the node's own issuer); one Cache in front of the
// source, whatever it is, mints each token once however many requests ask
// for it at the same time, serves it again while it is fresh, mints a new
// one ahead of its expiry, and writes the audit line of every token
// minted. Flavours ask the cache, through the Source interface, and render
// what they get.
package credentials

import (
	"context"
	"time"

	"github.com/metabind/metabind/responder/subject"
)

// Token is one credential a source minted. Value is the secret; the other
// fields describe it for the cache and the audit line, which never logs
// Value.
type Token struct {
	Value string
	// IssuedAt is when the token starts to be valid; zero: when the
	// source returned it.
	IssuedAt time.Time
	Expiry   time.Time
	KeyID    string   // the key that signed it, if the source says
	ID       string   // the token's ID (jti), which finds it in a relying party's logs
	Audience []string // whom it is for
	// RefreshAt, when set, is the source's own word on how long the cache
	// serves the token before it mints the next (a Kubernetes token: until
	// 20 % of its life remains); unset, the cache's rule for its kind.
	RefreshAt time.Time
}

// ExpiresIn is the token's remaining life in whole seconds at now, rounded
// down, at least 1.
func (t *Token) ExpiresIn(now time.Time) int64 {
	n := t.Expiry.Unix() - now.Unix() - 1 // exp is a whole second; now is not
	return max(n, 1)
}

// ID token formats: GCE's format parameter.
const (
	FormatStandard = "standard"
	FormatFull     = "full" // with claims about the instance (the node)
)

// Source mints tokens for subjects. The flavour has checked the request:
// s has an identity and a PodUID, and may have the scopes.
type Source interface {
	// AccessToken returns an access token for s granting scopes, which
	// are sorted, each once.
	AccessToken(ctx context.Context, s subject.Subject, scopes []string) (Token, error)
	// IDToken returns an ID token for s with audience audience. format is
	// FormatStandard or FormatFull; licenses asks a full token to name the
	// instance's licences.
	IDToken(ctx context.Context, s subject.Subject, audience, format string, licenses bool) (Token, error)
}

// KeyedSource is a source that signs with a key of its own that rotates:
// the cache serves no token signed with another key than CurrentKeyID's.
type KeyedSource interface {
	Source
	CurrentKeyID() string
}

// SharedSource is a source whose tokens are not bound to a pod (a cloud's
// tokens for an account): the cache shares one token among the pods of one
// account on the node, instead of minting one per pod, and drops it when
// the last of those pods goes.
type SharedSource interface {
	Source
	SharedAcrossPods() bool
}

// Invalid is a token request a source refuses as it is asked (the flavour
// answers 400 with Reason).
type Invalid struct{ Reason string }

func (e *Invalid) Error() string { return e.Reason }
