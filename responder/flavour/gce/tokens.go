package gce

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/responder/subject"
)

// serveToken answers .../token[?scopes=a,b] with an access token granting
// the scopes asked for, or all the identity holds.
func (f *Flavour) serveToken(w *server.Response, r *http.Request, q url.Values, s *subject.Subject, v *view) {
	scopes := v.granted
	if req := q.Get("scopes"); req != "" {
		var err error
		if scopes, err = grantScopes(s.Scopes, req); err != nil {
			w.BadRequest(err.Error())
			return
		}
	}
	t, err := f.creds.AccessToken(r.Context(), *s, scopes)
	if err != nil {
		tokenError(w, err)
		return
	}
	hdr := w.Header()
	hdr["Content-Type"] = jsonTypeHeader
	hdr["Cache-Control"] = noStoreHeader
	f.writeAccessToken(w, t.Value, t.ExpiresIn(f.Now()))
}

// serveIdentity answers .../identity?audience=A[&format=full][&licenses=TRUE]
// with an ID token for A.
func (f *Flavour) serveIdentity(w *server.Response, r *http.Request, q url.Values, s *subject.Subject) {
	aud := q.Get("audience")
	if aud == "" {
		w.BadRequest("non-empty audience parameter required")
		return
	}
	format := credentials.FormatStandard
	switch q.Get("format") {
	case "", credentials.FormatStandard:
	case credentials.FormatFull:
		format = credentials.FormatFull
	default:
		w.BadRequest("format must be standard or full")
		return
	}
	licenses := strings.EqualFold(q.Get("licenses"), "true")
	t, err := f.creds.IDToken(r.Context(), *s, aud, format, licenses)
	if err != nil {
		tokenError(w, err)
		return
	}
	hdr := w.Header()
	hdr["Content-Type"] = textTypeHeader
	hdr["Cache-Control"] = noStoreHeader
	w.WriteString(t.Value)
}

// tokenError answers a source's error: 400 for a request it refuses as
// asked, the refusal's own code (403, 404) with its reason, 503 when the
// source is out of reach, else 500.
func tokenError(w *server.Response, err error) {
	var invalid *credentials.Invalid
	if errors.As(err, &invalid) {
		w.BadRequest(invalid.Reason)
		return
	}
	server.Refuse(w, err)
}

// writeAccessToken writes the access token response GCE's clients read,
// in one of f's buffers, so that serving a cached token allocates nothing.
// A JWT is base64url and dots: nothing to escape in JSON.
func (f *Flavour) writeAccessToken(w http.ResponseWriter, tok string, expiresIn int64) {
	bp, _ := f.buffers.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	b := append((*bp)[:0], `{"access_token":"`...)
	b = append(b, tok...)
	b = append(b, `","expires_in":`...)
	b = strconv.AppendInt(b, expiresIn, 10)
	b = append(b, `,"token_type":"Bearer"}`+"\n"...)
	w.Write(b)
	*bp = b
	f.buffers.Put(bp)
}
