package credentials

import (
	"encoding/json"

	"github.com/golang-jwt/jwt/v5"
)

// JWT header typ of each kind of token. Access tokens say at+jwt (RFC 9068
// section 2.1) and ID tokens JWT, so a verifier that checks typ (RFC 8725
// section 3.11) never takes one kind for the other: an ID token a pod
// handed to some relying party cannot be replayed where an access token is
// expected, nor the reverse. Google's clients treat the access token as an
// opaque string, so its header is free to say what it is.
const (
	TypeIDToken     = "JWT"
	TypeAccessToken = "at+jwt"
)

// Claims is the payload of every token OwnIssuer signs: the Kubernetes
// service-account claims, plus what GCE's tokens carry (email, azp, scope,
// google.compute_engine).
type Claims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  Audience         `json:"aud"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	NotBefore *jwt.NumericDate `json:"nbf"`
	ExpiresAt *jwt.NumericDate `json:"exp"`
	ID        string           `json:"jti"`

	Email           string `json:"email,omitempty"`
	EmailVerified   bool   `json:"email_verified,omitempty"`
	AuthorizedParty string `json:"azp,omitempty"`       // ID tokens
	ClientID        string `json:"client_id,omitempty"` // access tokens (RFC 9068)
	Scope           string `json:"scope,omitempty"`     // access tokens: space-separated

	Kubernetes KubernetesClaims `json:"kubernetes.io"`
	Google     *GoogleClaims    `json:"google,omitempty"` // ID tokens with format=full
}

// KubernetesClaims is the kubernetes.io claim.
type KubernetesClaims struct {
	Namespace      string    `json:"namespace"`
	Pod            ObjectRef `json:"pod"`
	ServiceAccount ObjectRef `json:"serviceaccount"`
	Node           ObjectRef `json:"node"`
}

// ObjectRef names a Kubernetes object.
type ObjectRef struct {
	Name string `json:"name"`
	UID  string `json:"uid,omitempty"`
}

// GoogleClaims is the google claim of a format=full ID token.
type GoogleClaims struct {
	ComputeEngine ComputeEngineClaims `json:"compute_engine"`
}

// ComputeEngineClaims describes the "instance", which is the node.
type ComputeEngineClaims struct {
	ProjectID     string `json:"project_id"`
	ProjectNumber uint64 `json:"project_number"`
	Zone          string `json:"zone"`
	InstanceID    string `json:"instance_id"`
	InstanceName  string `json:"instance_name"`
}

// Audience is the aud claim. One audience is written as a plain string, as
// in Google's ID tokens (google-auth's verifier compares aud to the
// expected audience as a string); more are written as an array. Both forms
// are read.
type Audience []string

// MarshalJSON writes one audience as a string.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON reads a string or an array of strings.
func (a *Audience) UnmarshalJSON(b []byte) error {
	var cs jwt.ClaimStrings
	if err := cs.UnmarshalJSON(b); err != nil {
		return err
	}
	*a = Audience(cs)
	return nil
}

var _ jwt.Claims = (*Claims)(nil)

func (c *Claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt, nil }
func (c *Claims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt, nil }
func (c *Claims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore, nil }
func (c *Claims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *Claims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *Claims) GetAudience() (jwt.ClaimStrings, error)       { return jwt.ClaimStrings(c.Audience), nil }
