package responder

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Content types as GCE's metadata server sends them. Python's google-auth
// decodes a body only when the type is exactly application/json.
const (
	textType = "application/text"
	jsonType = "application/json"
)

const (
	computeMetadataPath = "/computeMetadata"
	v1Path              = "/computeMetadata/v1"
	serviceAccountsPath = v1Path + "/instance/service-accounts"
	defaultAccount      = "default"
)

// MaxLongPoll caps a wait_for_change request; it stays below the server's
// write timeout. Nothing the responder serves changes while it runs, so a
// long poll only paces clients that subscribe.
const MaxLongPoll = 8 * time.Second

// InstanceID is what instance/id answers: the FNV-1a 64-bit hash of the
// node name, as an unsigned decimal. It is stable across restarts and
// differs between nodes.
func InstanceID(node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	return h.Sum64()
}

// Header values set on every response of their kind. They are assigned to
// response headers as they are, not copied, so nothing may write to their
// elements; each has len == cap, so an Add copies before appending.
var (
	flavorHeader   = []string{"Google"}
	textTypeHeader = []string{textType}
	jsonTypeHeader = []string{jsonType}
	noStoreHeader  = []string{"no-store"}
)

// body is one precomputed response body, with its header values.
type body struct {
	data  []byte
	ctype string
	etag  string

	ctypeHeader []string // {ctype}
	etagHeader  []string // {etag}
}

func newBody(data []byte, ctype string) body {
	h := fnv.New64a()
	h.Write(data)
	etag := strconv.FormatUint(h.Sum64(), 16)
	return body{data: data, ctype: ctype, etag: etag, ctypeHeader: []string{ctype}, etagHeader: []string{etag}}
}

// entry is one metadata path. A scalar answers text, or json with alt=json.
// A directory answers its listing as text, or as a JSON array with
// alt=json, and its tree as JSON with recursive=true.
type entry struct {
	dir  bool
	text body
	json body // scalar: alt=json; directory: recursive=true
	list body // directory: alt=json
}

func scalar(text string, jsonValue any) *entry {
	return &entry{text: newBody([]byte(text), textType), json: newBody(mustJSON(jsonValue), jsonType)}
}

func directory(names []string, tree any) *entry {
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte('\n')
	}
	return &entry{
		dir:  true,
		text: newBody([]byte(b.String()), textType),
		json: newBody(mustJSON(tree), jsonType),
		list: newBody(mustJSON(names), jsonType),
	}
}

// mustJSON encodes the plain structs below, which cannot fail.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	return b
}

// The recursive=true trees, with GCE's camelCase keys.
type (
	rootTree struct {
		Instance instanceTree `json:"instance"`
		Project  projectTree  `json:"project"`
	}
	instanceTree struct {
		Hostname        string                 `json:"hostname"`
		ID              uint64                 `json:"id"`
		Name            string                 `json:"name"`
		ServiceAccounts map[string]accountTree `json:"serviceAccounts"`
		Zone            string                 `json:"zone"`
	}
	accountTree struct {
		Aliases []string `json:"aliases"`
		Email   string   `json:"email"`
		Scopes  []string `json:"scopes"`
	}
	projectTree struct {
		NumericProjectID json.Number `json:"numericProjectId"`
		ProjectID        string      `json:"projectId"`
	}
)

// view is the metadata the callers of one identity rule see, keyed by path
// without trailing slash. Callers that no rule matches see nothing (404).
type view struct {
	entries map[string]*entry
	rule    *IdentityRule
	email   string
	scope   string // the access tokens' scope claim without ?scopes= (scopeClaim)
}

// site is every view, built once from the config.
type site struct {
	byRule []*view
}

func newSite(cfg *Config) *site {
	s := &site{}
	for i := range cfg.Identities {
		s.byRule = append(s.byRule, newView(cfg, &cfg.Identities[i]))
	}
	return s
}

func newView(cfg *Config, rule *IdentityRule) *view {
	v := &view{entries: make(map[string]*entry), rule: rule}
	e := v.entries

	project := projectTree{NumericProjectID: json.Number(cfg.Project.NumericID), ProjectID: cfg.Project.ID}
	e[v1Path+"/project"] = directory([]string{"numeric-project-id", "project-id"}, project)
	e[v1Path+"/project/numeric-project-id"] = scalar(string(cfg.Project.NumericID), project.NumericProjectID)
	e[v1Path+"/project/project-id"] = scalar(cfg.Project.ID, cfg.Project.ID)

	instance := instanceTree{
		Hostname:        cfg.Node.Name + "." + cfg.Node.Zone + ".c." + cfg.Project.ID + ".internal",
		ID:              InstanceID(cfg.Node.Name),
		Name:            cfg.Node.Name,
		ServiceAccounts: map[string]accountTree{},
		Zone:            "projects/" + string(cfg.Project.NumericID) + "/zones/" + cfg.Node.Zone,
	}
	e[v1Path+"/instance/hostname"] = scalar(instance.Hostname, instance.Hostname)
	e[v1Path+"/instance/id"] = scalar(strconv.FormatUint(instance.ID, 10), instance.ID)
	e[v1Path+"/instance/name"] = scalar(instance.Name, instance.Name)
	e[v1Path+"/instance/zone"] = scalar(instance.Zone, instance.Zone)
	instanceNames := []string{"hostname", "id", "name", "service-accounts/", "zone"}

	v.email = cfg.AccountEmail(rule)
	v.scope = scopeClaim(rule.Scopes)
	acct := accountTree{Aliases: []string{defaultAccount}, Email: v.email, Scopes: rule.Scopes}
	instance.ServiceAccounts[defaultAccount] = acct
	instance.ServiceAccounts[v.email] = acct

	e[serviceAccountsPath] = directory([]string{defaultAccount + "/", v.email + "/"}, instance.ServiceAccounts)
	acctDir := directory([]string{"aliases", "email", "identity", "scopes", "token"}, acct)
	email := scalar(v.email, v.email)
	aliases := scalar(strings.Join(acct.Aliases, "\n"), acct.Aliases)
	scopes := scalar(strings.Join(acct.Scopes, "\n"), acct.Scopes)
	for _, name := range []string{defaultAccount, v.email} {
		p := serviceAccountsPath + "/" + name
		e[p] = acctDir
		e[p+"/email"] = email
		e[p+"/aliases"] = aliases
		e[p+"/scopes"] = scopes
	}
	e[v1Path+"/instance"] = directory(instanceNames, instance)

	root := rootTree{Instance: instance, Project: project}
	e[v1Path] = directory([]string{"instance/", "project/"}, root)
	e[computeMetadataPath] = directory([]string{"v1/"}, map[string]rootTree{"v1": root})
	return v
}

// serveMetadata answers a /computeMetadata path for a caller that an
// identity rule matches.
func (h *handler) serveMetadata(w *statusWriter, r *http.Request, q url.Values, c *caller) {
	v := h.site.byRule[c.rule]
	p := r.URL.Path
	key := strings.TrimSuffix(p, "/")
	if e := v.entries[key]; e != nil {
		if !e.dir && key != p {
			h.notFound(w)
			return
		}
		h.writeEntry(w, r, q, e)
		return
	}
	rest, ok := strings.CutPrefix(p, serviceAccountsPath+"/")
	if !ok {
		h.notFound(w)
		return
	}
	acct, leaf, _ := strings.Cut(rest, "/")
	if acct != defaultAccount && acct != v.email {
		h.notFound(w)
		return
	}
	if leaf != "token" && leaf != "identity" {
		h.notFound(w)
		return
	}
	// Every token names the pod it was issued to (kubernetes.io.pod.uid),
	// so a relying party can tell a pod from its successor of the same
	// name. A binding without a pod UID cannot be bound: no token.
	if c.binding.PodUID == "" {
		h.notFound(w)
		return
	}
	if leaf == "token" {
		h.serveToken(w, r, q, c, v)
	} else {
		h.serveIdentity(w, r, q, c, v)
	}
}

func (h *handler) writeEntry(w *statusWriter, r *http.Request, q url.Values, e *entry) {
	b := e.text
	switch alt := q.Get("alt"); {
	case e.dir && strings.EqualFold(q.Get("recursive"), "true"):
		b = e.json // alt=text on a tree still answers JSON
	case alt == "json" && e.dir:
		b = e.list
	case alt == "json":
		b = e.json
	case alt != "" && alt != "text":
		h.badRequest(w, "alt must be json or text")
		return
	}
	if strings.EqualFold(q.Get("wait_for_change"), "true") {
		if ok := h.longPoll(w, r, q, b.etag); !ok {
			return
		}
	}
	hdr := w.Header()
	hdr["Content-Type"] = b.ctypeHeader
	hdr["Etag"] = b.etagHeader
	w.Write(b.data)
}

// longPoll holds a wait_for_change request while the value's ETag is
// last_etag (or none was given), for timeout_sec capped at maxLongPoll.
func (h *handler) longPoll(w *statusWriter, r *http.Request, q url.Values, etag string) bool {
	wait := h.maxLongPoll
	if s := q.Get("timeout_sec"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			h.badRequest(w, "timeout_sec must be a positive integer")
			return false
		}
		if d := time.Duration(n) * time.Second; d < wait {
			wait = d
		}
	}
	if last := q.Get("last_etag"); last != "" && last != etag {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
	return true
}

func (h *handler) subject(c *caller, v *view) Subject {
	return Subject{
		Namespace:      c.binding.Namespace,
		Pod:            c.binding.Pod,
		PodUID:         c.binding.PodUID,
		ServiceAccount: v.rule.ServiceAccount,
		Email:          v.rule.Email,
		Node:           h.cfg.Node.Name,
	}
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	TokenType   string `json:"token_type"`
}

// serveToken answers .../token[?scopes=a,b] with an access token: a JWT
// whose audience is the issuer and whose scope claim lists the scopes.
func (h *handler) serveToken(w *statusWriter, r *http.Request, q url.Values, c *caller, v *view) {
	scope := v.scope
	if s := q.Get("scopes"); s != "" {
		var err error
		if scope, err = grantScopes(v.rule.Scopes, s); err != nil {
			h.badRequest(w, err.Error())
			return
		}
	}
	now := h.now()
	t, ok := h.token(w, r, c, v, accessToken, scope, now)
	if !ok {
		return
	}
	hdr := w.Header()
	hdr["Content-Type"] = jsonTypeHeader
	hdr["Cache-Control"] = noStoreHeader
	w.Write(t.body)
	w.Write(t.accessTail(now))
}

// serveIdentity answers .../identity?audience=A[&format=full] with an ID
// token for A. licenses is accepted and ignored.
func (h *handler) serveIdentity(w *statusWriter, r *http.Request, q url.Values, c *caller, v *view) {
	aud := q.Get("audience")
	if aud == "" {
		h.badRequest(w, "non-empty audience parameter required")
		return
	}
	if aud == h.iss.URL() {
		// That is the access tokens' audience: an ID token must not pass
		// for one.
		h.badRequest(w, "audience must not be the issuer URL")
		return
	}
	kind := idToken
	switch q.Get("format") {
	case "", "standard":
	case "full":
		kind = idTokenFull
	default:
		h.badRequest(w, "format must be standard or full")
		return
	}
	t, ok := h.token(w, r, c, v, kind, aud, h.now())
	if !ok {
		return
	}
	hdr := w.Header()
	hdr["Content-Type"] = textTypeHeader
	hdr["Cache-Control"] = noStoreHeader
	w.Write(t.body)
}

// token returns the caller's token of kind for param (the scope claim or
// the audience): from the cache while it may be reused, else minted once
// however many requests ask at the same time. On failure it has answered
// 500.
func (h *handler) token(w *statusWriter, r *http.Request, c *caller, v *view, kind tokenKind, param string, now time.Time) (*cachedToken, bool) {
	key := tokenKey{
		podUID:      c.binding.PodUID,
		containerID: c.binding.ContainerID,
		namespace:   c.binding.Namespace,
		pod:         c.binding.Pod,
		rule:        c.rule,
		kind:        kind,
		param:       param,
	}
	kid := h.iss.KeyID()
	t, minted, err := h.tokens.getOrMint(&key, now, kid, func() (*cachedToken, error) {
		return h.mint(r, c, v, &key, now)
	})
	if err != nil {
		h.internalError(w, err)
		return nil, false
	}
	if !minted && h.log.Enabled(r.Context(), slog.LevelDebug) {
		h.log.LogAttrs(r.Context(), slog.LevelDebug, "token served from cache",
			slog.String("caller", c.ip.String()),
			slog.String("podUID", c.binding.PodUID),
			slog.String("kind", kind.audit()),
			slog.String("jti", t.jti),
			slog.Int64("expiresIn", t.expiresIn(now)),
		)
	}
	return t, true
}

// mint signs a new token for key and writes its audit line.
func (h *handler) mint(r *http.Request, c *caller, v *view, key *tokenKey, now time.Time) (*cachedToken, error) {
	var claims *Claims
	sub := h.subject(c, v)
	typ := TypeIDToken
	if key.kind == accessToken {
		// RFC 9068: iss, exp, aud, sub, client_id, iat and jti, and the
		// scope granted.
		typ = TypeAccessToken
		claims = NewClaims(h.iss, sub, []string{h.iss.URL()}, now)
		claims.ClientID = sub.Party()
		claims.Scope = key.param
	} else {
		claims = NewClaims(h.iss, sub, []string{key.param}, now)
		claims.AuthorizedParty = sub.Party()
		claims.EmailVerified = claims.Email != ""
		if key.kind == idTokenFull {
			claims.Google = &GoogleClaims{ComputeEngine: ComputeEngineClaims{
				ProjectID:     h.cfg.Project.ID,
				ProjectNumber: h.projectNumber,
				Zone:          h.cfg.Node.Zone,
				InstanceID:    strconv.FormatUint(InstanceID(h.cfg.Node.Name), 10),
				InstanceName:  h.cfg.Node.Name,
			}}
		}
	}
	tok, kid, err := h.iss.Sign(claims, typ)
	if err != nil {
		return nil, err
	}
	h.audit(r, c, v, key.kind.audit(), claims, kid)
	issued, expires := claims.IssuedAt.Time, claims.ExpiresAt.Time
	// Access tokens: while more than half their life remains. ID tokens:
	// see IDTokenReuse.
	reuse := issued.Add(expires.Sub(issued) / 2)
	if idReuse := issued.Add(IDTokenReuse); key.kind != accessToken && idReuse.Before(reuse) {
		reuse = idReuse
	}
	return newCachedToken(*key, tok, kid, claims.ID, issued, expires, reuse), nil
}

// audit logs one "token issued" line per token: who got it (caller IP, pod,
// identity), what kind, for whom (audience), its ID, expiry and signing
// key. Never the token: the jti finds it in a relying party's logs.
func (h *handler) audit(r *http.Request, c *caller, v *view, kind string, claims *Claims, kid string) {
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "token issued",
		slog.String("caller", c.ip.String()),
		slog.String("namespace", c.binding.Namespace),
		slog.String("pod", c.binding.Pod),
		slog.String("podUID", c.binding.PodUID),
		slog.String("serviceAccount", v.rule.ServiceAccount),
		slog.String("email", v.email),
		slog.String("kind", kind),
		slog.String("audience", strings.Join(claims.Audience, " ")),
		slog.String("jti", claims.ID),
		slog.Time("expiry", claims.ExpiresAt.Time),
		slog.String("kid", kid),
	)
}
