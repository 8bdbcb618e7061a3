package aws

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/responder/subject"
)

// IMDSPrefix is the IMDS flavour's route.
const IMDSPrefix = "/latest"

// The IMDSv2 headers, as Go canonicalises them.
const (
	TokenHeader    = "X-Aws-Ec2-Metadata-Token"
	TokenTTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
)

const (
	tokenPath    = IMDSPrefix + "/api/token"
	metaDataPath = IMDSPrefix + "/meta-data"
	iamPath      = metaDataPath + "/iam"
	iamInfoPath  = iamPath + "/info"
	credsPath    = iamPath + "/security-credentials"
	dynamicPath  = IMDSPrefix + "/dynamic"
	identityPath = dynamicPath + "/instance-identity"
	documentPath = identityPath + "/document"
)

// textType is what EC2's IMDS answers everything with, JSON documents
// included.
const textType = "text/plain"

// identityDocumentVersion is the version of EC2's instance identity
// document format.
const identityDocumentVersion = "2017-09-30"

// IMDS serves EC2's instance metadata service (IMDSv2, and IMDSv1 when
// enabled) to callers with an identity: the node's placement and
// instance, and the caller's own role credentials from a Source.
type IMDS struct {
	// Now is the flavour's clock (token expiry); tests replace it before
	// first use.
	Now func() time.Time

	src      Source
	sessions sessions
	imdsV1   bool
	entries  map[string]entry // by path without trailing slash
	// metaData and metaDataIAM list meta-data/ for a caller without and
	// with a role.
	metaData, metaDataIAM entry
}

// entry is one static path: a directory's listing or a value.
type entry struct {
	dir  bool
	body []byte
}

var _ server.Flavour = (*IMDS)(nil)

// NewIMDS serves node's metadata and the credentials of src. key (KeySize
// bytes; NewIMDS panics otherwise) MACs the session tokens: a new key
// makes every token minted before it 401, which clients answer by
// fetching another. imdsV1 also answers GETs without a session token, as
// EC2 does with HttpTokens optional.
func NewIMDS(src Source, node Node, key []byte, imdsV1 bool) *IMDS {
	f := &IMDS{Now: time.Now, src: src, sessions: newSessions(key), imdsV1: imdsV1, entries: make(map[string]entry)}
	e := f.entries
	var instance, placement []string
	value := func(list *[]string, dir, name, v string) {
		if v != "" {
			*list = append(*list, name)
			e[dir+"/"+name] = entry{body: []byte(v)}
		}
	}
	value(&instance, metaDataPath, "instance-id", node.InstanceID)
	value(&instance, metaDataPath, "instance-type", node.InstanceType)
	value(&placement, metaDataPath+"/placement", "availability-zone", node.AvailabilityZone)
	value(&placement, metaDataPath+"/placement", "region", node.Region)
	e[metaDataPath+"/placement"] = listing(placement...)
	meta := append(instance, "placement/")
	f.metaData = listing(meta...)
	f.metaDataIAM = listing(append([]string{"iam/"}, meta...)...)

	e[IMDSPrefix] = listing("dynamic", "meta-data")
	e[dynamicPath] = listing("instance-identity/")
	e[identityPath] = listing("document")
	e[documentPath] = entry{body: mustJSON(identityDocument{
		AccountID:        node.AccountID,
		Architecture:     architecture(runtime.GOARCH),
		AvailabilityZone: node.AvailabilityZone,
		InstanceID:       node.InstanceID,
		InstanceType:     node.InstanceType,
		Region:           node.Region,
		Version:          identityDocumentVersion,
	})}
	return f
}

// Route is the IMDS route: its prefix, EC2's headers, and its methods:
// PUT for a session token, GET for the rest (HEAD too is 405).
func (f *IMDS) Route() server.Route {
	return server.Route{Prefix: IMDSPrefix, Flavour: f, Header: IMDSHeader(), Methods: []string{http.MethodGet, http.MethodPut},
		Name: IMDSName, Endpoint: IMDSEndpoint}
}

// listing is a directory as EC2 lists one: names one a line,
// subdirectories ending in '/', no trailing newline.
func listing(names ...string) entry {
	return entry{dir: true, body: []byte(strings.Join(names, "\n"))}
}

// identityDocument is /latest/dynamic/instance-identity/document, with
// EC2's keys; what the node config does not say is left out.
type identityDocument struct {
	AccountID        string `json:"accountId,omitempty"`
	Architecture     string `json:"architecture"`
	AvailabilityZone string `json:"availabilityZone,omitempty"`
	InstanceID       string `json:"instanceId,omitempty"`
	InstanceType     string `json:"instanceType,omitempty"`
	Region           string `json:"region,omitempty"`
	Version          string `json:"version"`
}

// architecture names GOARCH as EC2 does.
func architecture(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "386":
		return "i386"
	}
	return goarch
}

// mustJSON encodes the plain structs of this package, which cannot fail,
// indented as EC2 writes its documents.
func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	return b
}

// isTokenPath reports whether p asks for a session token (Chef's ohai
// asks with a trailing slash).
func isTokenPath(p string) bool { return p == tokenPath || p == tokenPath+"/" }

// Admit refuses, before the caller is looked up, what EC2 refuses without
// looking: a method the path does not take (405), a token request without
// a TTL in range (400), and a GET without a session token unless IMDSv1 is
// on (401).
func (f *IMDS) Admit(w *server.Response, r *http.Request) bool {
	if isTokenPath(r.URL.Path) {
		if r.Method != http.MethodPut {
			w.Header().Set("Allow", http.MethodPut)
			w.Error(http.StatusMethodNotAllowed, "method not allowed")
			return false
		}
		if _, ok := tokenTTL(r.Header); !ok {
			w.BadRequest(fmt.Sprintf("%s must be an integer from %d to %d", TokenTTLHeader, MinTokenTTL, MaxTokenTTL))
			return false
		}
		return true
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		w.Error(http.StatusMethodNotAllowed, "method not allowed")
		return false
	}
	if len(r.Header.Values(TokenHeader)) == 0 && !f.imdsV1 {
		unauthorized(w)
		return false
	}
	return true
}

// tokenTTL is the TTL a token request asks for, when it asks for one in
// range, once.
func tokenTTL(h http.Header) (time.Duration, bool) {
	v := h.Values(TokenTTLHeader)
	if len(v) != 1 {
		return 0, false
	}
	n, err := strconv.ParseUint(v[0], 10, 32)
	if err != nil || n < MinTokenTTL || n > MaxTokenTTL {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

func unauthorized(w *server.Response) {
	w.Error(http.StatusUnauthorized, "unauthorized")
}

// Serve mints the caller's session token, or answers a GET that carries a
// valid one (or none, with IMDSv1) from the node's metadata and the
// caller's role.
func (f *IMDS) Serve(w *server.Response, r *http.Request, _ url.Values, c server.Caller) {
	s := &c.Subject
	now := f.Now()
	if r.Method == http.MethodPut {
		f.serveToken(w, r, s, now)
		return
	}
	// A token given is checked even with IMDSv1 on, as EC2 does.
	if v := r.Header.Values(TokenHeader); len(v) > 0 {
		if len(v) != 1 {
			unauthorized(w)
			return
		}
		expiry, ok := f.sessions.verify(v[0], s.PodUID, now)
		if !ok {
			unauthorized(w)
			return
		}
		w.Header().Set(TokenTTLHeader, strconv.FormatInt(ceilSeconds(expiry.Sub(now)), 10))
	}
	f.serveData(w, r, s)
}

func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// serveToken answers PUT /latest/api/token with a token of the caller's
// pod, its TTL echoed: aws-sdk-go-v2 fails without the echo. A caller
// without a pod UID has nothing to bind a token to: 404, which SDKs take
// as "no IMDSv2".
func (f *IMDS) serveToken(w *server.Response, r *http.Request, s *subject.Subject, now time.Time) {
	ttl, ok := tokenTTL(r.Header)
	if !ok { // Admit let it through
		w.BadRequest("bad token TTL")
		return
	}
	if s.PodUID == "" {
		w.NotFound()
		return
	}
	tok := f.sessions.mint(s.PodUID, now.Add(ttl))
	hdr := w.Header()
	hdr.Set(TokenTTLHeader, strconv.FormatInt(int64(ttl/time.Second), 10))
	hdr.Set("Content-Type", textType)
	w.WriteString(tok)
}

// serveData answers a GET from the static entries, or the caller's iam/
// tree.
func (f *IMDS) serveData(w *server.Response, r *http.Request, s *subject.Subject) {
	p := r.URL.Path
	key := strings.TrimSuffix(p, "/")
	slash := key != p
	if e, ok := f.entries[key]; ok {
		if !e.dir && slash {
			w.NotFound()
			return
		}
		writeText(w, e.body)
		return
	}
	if key == metaDataPath {
		if f.src.Role(*s) == "" {
			writeText(w, f.metaData.body)
		} else {
			writeText(w, f.metaDataIAM.body)
		}
		return
	}
	if key != iamPath && !strings.HasPrefix(key, iamPath+"/") {
		w.NotFound()
		return
	}
	// The iam/ tree exists only for a caller with a role, as on an
	// instance without a profile; never the node's.
	role := f.src.Role(*s)
	if role == "" {
		w.NotFound()
		return
	}
	name := roleName(role)
	switch {
	case key == iamPath:
		writeText(w, listing("info", "security-credentials/").body)
	case key == credsPath:
		// One name, no newline: botocore takes the whole body.
		writeText(w, []byte(name))
	case slash:
		w.NotFound()
	case key == iamInfoPath:
		f.serveInfo(w, r, s, role)
	case key == credsPath+"/"+name:
		f.serveCredentials(w, r, s)
	default:
		w.NotFound()
	}
}

func writeText(w *server.Response, b []byte) {
	w.Header().Set("Content-Type", textType)
	w.Write(b)
}

// iamInfo is iam/info, with EC2's keys.
type iamInfo struct {
	Code               string
	LastUpdated        string
	InstanceProfileArn string
	InstanceProfileId  string
}

// serveInfo answers iam/info: the instance profile an instance with the
// role would have, named after it, and when the credentials were last
// updated.
func (f *IMDS) serveInfo(w *server.Response, r *http.Request, s *subject.Subject, role string) {
	creds, err := f.src.Credentials(r.Context(), *s)
	if err != nil {
		server.Refuse(w, err)
		return
	}
	arn := instanceProfileARN(role)
	writeText(w, mustJSON(iamInfo{
		Code:               "Success",
		LastUpdated:        formatTime(f.lastUpdated(creds)),
		InstanceProfileArn: arn,
		InstanceProfileId:  instanceProfileID(arn),
	}))
}

// imdsCredentials is iam/security-credentials/<role>, with EC2's keys in
// EC2's order.
type imdsCredentials struct {
	Code            string
	LastUpdated     string
	Type            string
	AccessKeyId     string
	SecretAccessKey string
	Token           string
	Expiration      string
}

// serveCredentials answers iam/security-credentials/<role> with the
// caller's role credentials.
func (f *IMDS) serveCredentials(w *server.Response, r *http.Request, s *subject.Subject) {
	creds, err := f.src.Credentials(r.Context(), *s)
	if err != nil {
		server.Refuse(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeText(w, mustJSON(imdsCredentials{
		Code:            "Success",
		LastUpdated:     formatTime(f.lastUpdated(creds)),
		Type:            "AWS-HMAC",
		AccessKeyId:     creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey,
		Token:           creds.SessionToken,
		Expiration:      formatTime(creds.Expiration),
	}))
}

func (f *IMDS) lastUpdated(c Credentials) time.Time {
	if c.LastUpdated.IsZero() {
		return f.Now()
	}
	return c.LastUpdated
}

// instanceProfileARN is the ARN of the instance profile named as role
// (arn:aws:iam::123456789012:role/path/Name ->
// arn:aws:iam::123456789012:instance-profile/path/Name); role itself when
// it is no role ARN.
func instanceProfileARN(role string) string {
	parts := strings.SplitN(role, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iam" {
		return role
	}
	rest, ok := strings.CutPrefix(parts[5], "role/")
	if !ok {
		return role
	}
	parts[5] = "instance-profile/" + rest
	return strings.Join(parts, ":")
}

// instanceProfileID is a stable ID of the shape of IAM's instance profile
// IDs (AIPA and 17 of [A-Z2-7]), derived from the profile's ARN.
func instanceProfileID(arn string) string {
	sum := sha256.Sum256([]byte(arn))
	return "AIPA" + base32.StdEncoding.EncodeToString(sum[:])[:17]
}
