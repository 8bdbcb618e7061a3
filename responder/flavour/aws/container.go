package aws

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/responder/subject"
)

// ContainerPrefix is the container-credentials route, and its one path:
// what AWS_CONTAINER_CREDENTIALS_FULL_URI names on EKS
// (http://169.254.170.23/v1/credentials).
const ContainerPrefix = "/v1/credentials"

// Container serves the EKS Pod Identity agent's container-credentials API:
// GET /v1/credentials answers the caller's role credentials. The caller is
// its TCP peer, as everywhere; an Authorization header (SDKs send the
// contents of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE) is optional, but
// when sent must be a token of the caller's pod, else 403.
type Container struct {
	// Now is the flavour's clock (session token expiry); tests replace it
	// before first use.
	Now func() time.Time
	// Authorize, when not nil, is asked about an Authorization header that
	// is not a session token of the caller's pod, and accepts it by
	// returning true: a way to take the pod's own service account token,
	// which EKS mounts for AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE. Set it
	// before first use.
	Authorize func(ctx context.Context, s subject.Subject, token string) bool

	src      Source
	sessions sessions
}

var _ server.Flavour = (*Container)(nil)

// NewContainer serves the credentials of src. key is the IMDS flavour's
// (KeySize bytes; NewContainer panics otherwise): an IMDS session token
// of the caller's pod is a valid Authorization header.
func NewContainer(src Source, key []byte) *Container {
	return &Container{Now: time.Now, src: src, sessions: newSessions(key)}
}

// Route is the container-credentials route: its prefix, GET and HEAD, and
// no other cloud's headers.
func (f *Container) Route() server.Route {
	return server.Route{Prefix: ContainerPrefix, Flavour: f, Header: ContainerHeader(), Name: ContainerName, Endpoint: ContainerEndpoint}
}

// Admit takes every request: the API has no header its clients always
// send.
func (f *Container) Admit(*server.Response, *http.Request) bool { return true }

// containerCredentials is the response of the EKS Pod Identity agent.
type containerCredentials struct {
	AccessKeyId     string
	SecretAccessKey string
	Token           string
	AccountId       string `json:",omitempty"`
	Expiration      string
}

// Serve answers GET /v1/credentials with the caller's role credentials.
func (f *Container) Serve(w *server.Response, r *http.Request, _ url.Values, c server.Caller) {
	if r.URL.Path != ContainerPrefix {
		w.NotFound()
		return
	}
	s := c.Subject
	if v := r.Header.Values("Authorization"); len(v) > 0 && !f.authorized(r.Context(), s, v) {
		w.Forbidden("Authorization is not a token of this pod")
		return
	}
	if f.src.Role(s) == "" {
		w.Error(http.StatusNotFound, "no IAM role for this pod")
		return
	}
	creds, err := f.src.Credentials(r.Context(), s)
	if err != nil {
		// As the EKS agent answers a failed exchange: 500 and why.
		if errors.Is(err, subject.ErrUnavailable) {
			w.FailWith(err.Error(), err)
			return
		}
		server.Refuse(w, err)
		return
	}
	b, err := json.Marshal(containerCredentials{
		AccessKeyId:     creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey,
		Token:           creds.SessionToken,
		AccountId:       creds.AccountID,
		Expiration:      formatTime(creds.Expiration),
	})
	if err != nil {
		w.Fail(err)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	w.Write(b)
}

// authorized reports whether the one Authorization header given is a
// session token of s's pod, or one Authorize accepts.
func (f *Container) authorized(ctx context.Context, s subject.Subject, v []string) bool {
	if len(v) != 1 {
		return false
	}
	if _, ok := f.sessions.verify(v[0], s.PodUID, f.Now()); ok {
		return true
	}
	return f.Authorize != nil && f.Authorize(ctx, s, v[0])
}
