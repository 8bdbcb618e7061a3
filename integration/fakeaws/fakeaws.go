// Package fakeaws stands in for AWS STS (AssumeRoleWithWebIdentity) and one
// S3 call (a bucket's object list) over TLS, for tests of IRSA-style role
// assumption. It checks what AWS checks, so a client that passes here sends
// what AWS takes:
//
//   - STS (POST {STSURL}): the Query API form with exactly Action
//     (AssumeRoleWithWebIdentity, else 400 InvalidAction), Version
//     (2011-06-15), RoleArn (a role ARN, 20 to 2048 characters),
//     RoleSessionName (2 to 64 of [\w+=,.@-]), WebIdentityToken (4 to 20000
//     characters) and DurationSeconds (optional, as at AWS: default 3600;
//     900 to 43200 and at most the role's MaxSessionDuration), each at most
//     once and nothing else (AWS's optional Policy, PolicyArns and ProviderId
//     are refused: the fake does not model session policies); a bad field is
//     400 ValidationError. The web identity token is verified as IAM does for
//     an OIDC provider whose client ID list is sts.amazonaws.com: an RS256 or
//     ES256 signature by a key of Options.JWKS (looked up by kid), iss equal
//     to Options.Issuer (else "No OpenIDConnect provider found"), aud holding
//     sts.amazonaws.com, exp in the future (else 400 ExpiredTokenException),
//     nbf not in the future, a sub; each other failure is 400
//     InvalidIdentityToken, and a JWKS that cannot be had is 400
//     IDPCommunicationError (transient, as at AWS). Then the role's trust
//     policy (Trust): a role that does not trust the token's sub, or that
//     does not exist, is 403 AccessDenied "Not authorized to perform
//     sts:AssumeRoleWithWebIdentity". Every refusal is STS's XML
//     <ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>.
//     A success issues random temporary credentials (access key ASIA...,
//     secret, session token) and the assumed-role user
//     arn:<partition>:sts::<account>:assumed-role/<role name>/<session name>.
//   - S3 (GET {S3URL}/<bucket>?list-type=2, path-style; also ListObjects v1,
//     HeadBucket, and GetObject and HeadObject of the one object every
//     bucket holds, hello.txt): a request signed with AWS Signature Version 4
//     in the Authorization header (service s3, Options.Region) with keys the
//     fake STS issued, not expired, and X-Amz-Security-Token their session
//     token. The signature is recomputed from the request (canonical URI,
//     query, the SignedHeaders, x-amz-content-sha256) and must match; host
//     and every x-amz-* header must be signed, x-amz-date within 15 minutes
//     of the clock. Refusals are S3's XML <Error><Code/><Message/></Error>
//     with S3's statuses: 403 AccessDenied (no signature, unsigned x-amz-*
//     headers), 403 InvalidAccessKeyId (a key it did not issue, or a
//     temporary key without its token), 400 InvalidToken (another session
//     token), 400 ExpiredToken, 403 SignatureDoesNotMatch (wrong secret,
//     anything changed after signing), 403 RequestTimeTooSkewed, 400
//     AuthorizationHeaderMalformed (wrong region, service or date in the
//     scope). Every bucket exists; there is no per-bucket permission:
//     KeyInfo says whose keys signed. Other keys are 404 NoSuchKey, other
//     methods 405, both after authentication.
//
// STS is at path /_sts (STSURL https://host:port/_sts) and S3 at the root
// (S3URL https://host:port): '_' is not allowed in bucket names, so no
// bucket shadows STS. It serves on one port, with a CA and serving
// certificate of its own (CAFile), in the test's network namespace or
// Options.NetNS.
package fakeaws

import (
	"crypto/rand"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/metabind/metabind/integration/tlsfake"
)

// Options says which issuer the fake's account trusts and where it listens.
type Options struct {
	// Issuer is the URL of the account's IAM OIDC identity provider: the
	// iss web identity tokens must carry (the cluster's, or the node
	// issuer's URL). Its client ID list is sts.amazonaws.com.
	Issuer string
	// JWKS returns the issuer's current key set; it is asked on every
	// call, so a test can rotate keys under it (AWS fetches the provider's
	// keys from its URL and refetches on an unknown kid).
	JWKS func() ([]byte, error)
	// ListenAddr is where it listens; default 127.0.0.1:0. With an
	// unspecified address (0.0.0.0:0) the certificate names every address
	// of the namespace's interfaces at Start.
	ListenAddr string
	// NetNS is a network namespace path to listen in (loopback is brought
	// up there); "" is the test's own.
	NetNS string
	// CertIPs are more addresses for the serving certificate (say, an
	// address added to the namespace after Start).
	CertIPs []net.IP
	// Region is the region S3 requests must be signed for; default
	// us-east-1.
	Region string
	// MaxSessionDuration is every role's MaxSessionDuration: a
	// DurationSeconds above it is refused (400 ValidationError), as AWS
	// does. 1h to 12h; default 1h, a new role's default at AWS.
	MaxSessionDuration time.Duration
	// SessionDuration, when set, is how long the credentials it issues
	// live whatever DurationSeconds asked (tests of refresh, say 10s; AWS
	// never issues less than 15 minutes). Default: DurationSeconds.
	SessionDuration time.Duration
	// Now is its clock; default time.Now. Web identity tokens, the
	// credentials it issued and S3 request times are judged by it.
	Now func() time.Time
}

// Calls counts the requests each service answered, whatever the answer.
type Calls struct {
	STS         int // AssumeRoleWithWebIdentity asked (any request at STSURL)
	S3          int // S3 requests
	Denied      int // requests of either refused (4xx), IDPCommunicationError aside
	Unavailable int // STS requests answered 503 while down, or IDPCommunicationError
}

// Fake is a running fake. Its methods are safe for concurrent use.
type Fake struct {
	// STSURL is aws.Config's STSURL; S3URL the S3 endpoint for path-style
	// requests (aws-sdk-go-v2: BaseEndpoint S3URL, UsePathStyle).
	STSURL, S3URL string
	// CAFile is the PEM of the CA that signed its serving certificate.
	CAFile string
	// Host is the address in the URLs (127.0.0.1, or the specific address
	// listened on); Port the port it listens on.
	Host string
	Port int
	// Region is the region S3 requests are signed for.
	Region string

	t   testing.TB
	o   Options
	srv *tlsfake.Server

	mu      sync.Mutex
	stopped bool
	down    bool
	trusted map[string]map[string]bool // role ARN -> subs
	keys    map[string]issued          // access key ID -> what it was issued for
	calls   Calls
}

// issued is a set of credentials the fake STS issued.
type issued struct {
	secret, token string
	role, sub     string
	session       string
	expiration    time.Time
}

// stsPath is where STS answers; '_' cannot start a bucket name.
const stsPath = "/_sts"

// Start runs a fake for o with its files in a new directory under dir, and
// stops it in t.Cleanup. It fails the test when it cannot start.
func Start(t testing.TB, dir string, o Options) *Fake {
	t.Helper()
	if err := o.complete(); err != nil {
		t.Fatalf("fakeaws: %v", err)
	}
	dir, err := os.MkdirTemp(dir, "fakeaws-")
	if err != nil {
		t.Fatalf("fakeaws: %v", err)
	}
	f := &Fake{
		Region:  o.Region,
		t:       t,
		o:       o,
		trusted: map[string]map[string]bool{},
		keys:    map[string]issued{},
	}
	ln, ips, err := tlsfake.Listen(o.ListenAddr, o.NetNS)
	if err != nil {
		t.Fatalf("fakeaws: listen on %s: %v", o.ListenAddr, err)
	}
	f.Host, f.Port = tlsfake.HostPort(ln)
	base := "https://" + net.JoinHostPort(f.Host, strconv.Itoa(f.Port))
	f.STSURL = base + stsPath
	f.S3URL = base

	tlsConfig, caPEM, err := tlsfake.Serving("fakeaws", append(ips, o.CertIPs...))
	if err != nil {
		ln.Close()
		t.Fatalf("fakeaws: certificates: %v", err)
	}
	f.CAFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(f.CAFile, caPEM, 0o600); err != nil {
		ln.Close()
		t.Fatalf("fakeaws: %v", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc(stsPath, f.sts)
	mux.HandleFunc(stsPath+"/", f.sts)
	mux.HandleFunc("/", f.s3)
	f.srv = tlsfake.Serve(ln, tlsConfig, mux)
	t.Cleanup(f.stop)
	return f
}

var regionName = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)

func (o *Options) complete() error {
	switch {
	case o.Issuer == "":
		return errors.New("Issuer is required")
	case o.JWKS == nil:
		return errors.New("JWKS is required")
	}
	if o.ListenAddr == "" {
		o.ListenAddr = "127.0.0.1:0"
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if !regionName.MatchString(o.Region) {
		return fmt.Errorf("Region %q is not a region name", o.Region)
	}
	switch d := o.MaxSessionDuration; {
	case d == 0:
		o.MaxSessionDuration = time.Hour
	case d < time.Hour || d > 12*time.Hour || d%time.Second != 0:
		return fmt.Errorf("MaxSessionDuration %v: 1h to 12h in whole seconds, as IAM takes it", d)
	}
	if o.SessionDuration < 0 || o.SessionDuration%time.Second != 0 {
		return fmt.Errorf("SessionDuration %v: whole seconds, or 0", o.SessionDuration)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

func (f *Fake) stop() {
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
	f.srv.Close()
}

// Trust makes roleARN exist with a trust policy that lets the web identity
// sub of the fake's issuer assume it: Federated
// arn:aws:iam::<account>:oidc-provider/<issuer host/path>, Action
// sts:AssumeRoleWithWebIdentity, Condition StringEquals <issuer>:sub = sub
// and <issuer>:aud = sts.amazonaws.com. A role may trust several subs.
func (f *Fake) Trust(roleARN, sub string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.trusted[roleARN] == nil {
		f.trusted[roleARN] = map[string]bool{}
	}
	f.trusted[roleARN][sub] = true
}

// SetDown makes STS answer 503 ServiceUnavailable while down; S3 keeps
// answering.
func (f *Fake) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// Calls returns the counts so far.
func (f *Fake) Calls() Calls {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// KeyInfo says which role's credentials accessKeyID is; false for a key it
// never issued. Expired keys are still known.
func (f *Fake) KeyInfo(accessKeyID string) (role string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.keys[accessKeyID]
	return k.role, ok
}

// logf logs a refusal's reason on the test's log (never a secret), until
// the fake stops.
func (f *Fake) logf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.t.Logf("fakeaws: "+format, args...)
	}
}

// count adds one to the counter of what a request was, and tells whether
// STS is down (counted as Unavailable then).
func (f *Fake) count(counter func(*Calls) *int, downable bool) (down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*counter(&f.calls)++
	if downable && f.down {
		f.calls.Unavailable++
		return true
	}
	return false
}

func (f *Fake) add(counter func(*Calls) *int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*counter(&f.calls)++
}

// requestID is an AWS-like request ID for an answer.
func requestID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// writeXML answers v as XML with AWS's headers.
func writeXML(w http.ResponseWriter, status int, reqID string, v any) {
	data, err := xml.Marshal(v)
	if err != nil {
		panic(err) // the fake's own types always marshal
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-RequestId", reqID)
	w.WriteHeader(status)
	io.WriteString(w, xml.Header)
	w.Write(data)
}
