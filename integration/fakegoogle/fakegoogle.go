// Package fakegoogle stands in for Google's Security Token Service, the IAM
// Service Account Credentials API and one Google API (Cloud Storage's bucket
// GET) over TLS, for tests of Workload Identity Federation. It checks what
// Google checks, so a client that passes here sends what Google takes:
//
//   - STS (POST {STSURL}): a form with exactly grant_type (token exchange),
//     audience (//iam.googleapis.com/projects/<N>/locations/global/workloadIdentityPools/<POOL>/providers/<PROVIDER>,
//     else 400 invalid_target), requested_token_type (access_token),
//     subject_token_type (jwt), subject_token and scope. The subject token is
//     verified as a provider with no allowed audiences configured does: an
//     RS256 or ES256 signature by a key of Options.JWKS (looked up by kid),
//     iss equal to Options.Issuer, aud holding the provider's full name (with
//     or without https:), exp in the future, iat not in the future (1 minute
//     of skew) and at most 24 hours before exp, a sub of at most 127 bytes
//     (google.subject). Refusals are 400 {"error","error_description"}; a
//     success is an opaque federated token for
//     principal://iam.googleapis.com/projects/<N>/locations/global/workloadIdentityPools/<POOL>/subject/<sub>.
//   - IAM (POST {IAMURL}/projects/-/serviceAccounts/<email>:generateAccessToken
//     and :generateIdToken): a live bearer token it issued (else 401), whose
//     scopes include cloud-platform (or iam; else 403 insufficient scopes),
//     whose principal was Allowed for that service account (else 403
//     PERMISSION_DENIED, Google's message), and a JSON body of Google's
//     fields only. It issues an opaque access token or an RS256 ID token
//     (iss https://accounts.google.com) signed by a key of IDTokenKeys.
//   - API (GET {APIURL}/storage/v1/b/<bucket>): 200 only with a live bearer
//     token it issued, either an access token of a service account (IAM) or
//     a federated token (direct resource access, as Google accepts both),
//     with a scope that covers Cloud Storage; else 401 (403 for a token
//     without the scope). What a pod's client calls with its token;
//     TokenInfo says whose token it was.
//
// Paths are prefixed per service (STSURL is https://host:port/sts/v1/token,
// IAMURL https://host:port/iamcredentials/v1, APIURL https://host:port), so
// a call sent to the wrong service is a 404. It serves on one port, with a
// CA and serving certificate of its own (CAFile), and in the test's network
// namespace or Options.NetNS.
package fakegoogle

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/metabind/metabind/integration/tlsfake"
)

// Options says which provider the fake knows and where it listens.
type Options struct {
	// ProjectNumber, Pool and Provider name the one workload identity
	// provider it knows.
	ProjectNumber  string
	Pool, Provider string
	// Issuer is the provider's trusted issuer: the iss subject tokens must
	// carry (the cluster's, or the node issuer's URL).
	Issuer string
	// JWKS returns the issuer's current key set; it is asked on every
	// exchange, so a test can rotate keys under it (Google refetches a
	// cluster's JWKS, and an uploaded one changes when it is re-uploaded).
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
	// TokenLifetime is how long what it issues lives: federated tokens
	// (expires_in), ID tokens, and access tokens at most (a shorter
	// requested lifetime is honoured). Default one hour, as Google's.
	TokenLifetime time.Duration
	// Now is its clock; default time.Now. Subject tokens, and the tokens it
	// issued, are judged by it.
	Now func() time.Time
}

// Calls counts the requests each service answered, whatever the answer.
type Calls struct {
	STS          int // token exchanges asked
	AccessTokens int // generateAccessToken asked
	IDTokens     int // generateIdToken asked
	API          int // API requests
	Denied       int // requests of any of them refused (4xx)
	Unavailable  int // STS and IAM requests answered 503 while down
}

// TokenInfo is what the fake knows of a token it issued.
type TokenInfo struct {
	// Kind is "federated" (STS) or "access" (IAM generateAccessToken).
	Kind string
	// Principal is the federated principal that exchanged it, or that
	// impersonated ServiceAccount.
	Principal string
	// ServiceAccount is the access token's service account; "" for a
	// federated token.
	ServiceAccount string
	Scopes         []string
	Expiry         time.Time
}

// Fake is a running fake. Its methods are safe for concurrent use.
type Fake struct {
	// STSURL, IAMURL and APIURL are what a client is configured with:
	// gcp.Config's STSURL and IAMCredentialsURL, and the API's base.
	STSURL, IAMURL, APIURL string
	// CAFile is the PEM of the CA that signed its serving certificate.
	CAFile string
	// Host is the address in the URLs (127.0.0.1, or the specific address
	// listened on); Port the port it listens on.
	Host string
	Port int

	t        testing.TB
	o        Options
	audience string // //iam.googleapis.com/projects/<N>/.../providers/<PROVIDER>
	pool     string // projects/<N>/locations/global/workloadIdentityPools/<POOL>
	idKey    *rsa.PrivateKey
	idKid    string
	idSigner jose.Signer
	srv      *tlsfake.Server

	mu      sync.Mutex
	stopped bool
	down    bool
	allowed map[string]map[string]bool // service account -> principals
	tokens  map[string]TokenInfo
	calls   Calls
}

// Start runs a fake for o with its files in a new directory under dir, and
// stops it in t.Cleanup. It fails the test when it cannot start.
func Start(t testing.TB, dir string, o Options) *Fake {
	t.Helper()
	if err := o.complete(); err != nil {
		t.Fatalf("fakegoogle: %v", err)
	}
	dir, err := os.MkdirTemp(dir, "fakegoogle-")
	if err != nil {
		t.Fatalf("fakegoogle: %v", err)
	}
	f := &Fake{
		t:       t,
		o:       o,
		pool:    "projects/" + o.ProjectNumber + "/locations/global/workloadIdentityPools/" + o.Pool,
		allowed: map[string]map[string]bool{},
		tokens:  map[string]TokenInfo{},
	}
	f.audience = "//iam.googleapis.com/" + f.pool + "/providers/" + o.Provider

	ln, ips, err := tlsfake.Listen(o.ListenAddr, o.NetNS)
	if err != nil {
		t.Fatalf("fakegoogle: listen on %s: %v", o.ListenAddr, err)
	}
	f.Host, f.Port = tlsfake.HostPort(ln)
	base := "https://" + net.JoinHostPort(f.Host, strconv.Itoa(f.Port))
	f.STSURL = base + stsPath
	f.IAMURL = base + iamPrefix
	f.APIURL = base

	tlsConfig, caPEM, err := tlsfake.Serving("fakegoogle", append(ips, o.CertIPs...))
	if err != nil {
		ln.Close()
		t.Fatalf("fakegoogle: certificates: %v", err)
	}
	f.CAFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(f.CAFile, caPEM, 0o600); err != nil {
		ln.Close()
		t.Fatalf("fakegoogle: %v", err)
	}
	if err := f.newIDSigner(); err != nil {
		ln.Close()
		t.Fatalf("fakegoogle: ID token key: %v", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc(stsPath, f.sts)
	mux.HandleFunc(iamPrefix+"/", f.iam)
	mux.HandleFunc("/storage/v1/b/", f.api)
	mux.HandleFunc("/oauth2/v3/certs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(f.IDTokenKeys())
	})
	f.srv = tlsfake.Serve(ln, tlsConfig, mux)
	t.Cleanup(f.stop)
	return f
}

func (o *Options) complete() error {
	switch {
	case !regexp.MustCompile(`^[0-9]+$`).MatchString(o.ProjectNumber):
		return fmt.Errorf("ProjectNumber %q: digits only", o.ProjectNumber)
	case o.Pool == "", o.Provider == "":
		return errors.New("Pool and Provider are required")
	case o.Issuer == "":
		return errors.New("Issuer is required")
	case o.JWKS == nil:
		return errors.New("JWKS is required")
	}
	if o.ListenAddr == "" {
		o.ListenAddr = "127.0.0.1:0"
	}
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = time.Hour
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

// Allow lets principal impersonate service account gsaEmail (the role
// roles/iam.workloadIdentityUser on it): principal is
// principal://iam.googleapis.com/projects/<N>/locations/global/workloadIdentityPools/<POOL>/subject/<sub>,
// or a principalSet:// of the whole pool (.../workloadIdentityPools/<POOL>/*).
func (f *Fake) Allow(principal, gsaEmail string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.allowed[gsaEmail] == nil {
		f.allowed[gsaEmail] = map[string]bool{}
	}
	f.allowed[gsaEmail][principal] = true
}

// Principal is the federated principal of a subject token's sub.
func (f *Fake) Principal(sub string) string {
	return "principal://iam.googleapis.com/" + f.pool + "/subject/" + sub
}

// Audience is the provider's full name: the STS audience, and what subject
// tokens' aud must hold.
func (f *Fake) Audience() string { return f.audience }

// SetDown makes STS and IAM answer 503 (Google's UNAVAILABLE) while down;
// the API keeps answering.
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

// TokenInfo says what a token it issued is (not ID tokens: verify those
// with IDTokenKeys); false for a token it never issued. Expired tokens are
// still known.
func (f *Fake) TokenInfo(token string) (TokenInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, ok := f.tokens[token]
	info.Scopes = slices.Clone(info.Scopes)
	return info, ok
}

// IDTokenKeys is the JWKS of the key its ID tokens are signed with (also
// served at {APIURL}/oauth2/v3/certs, as Google's are).
func (f *Fake) IDTokenKeys() []byte {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &f.idKey.PublicKey, KeyID: f.idKid, Algorithm: string(jose.RS256), Use: "sig"}}}
	data, err := json.Marshal(set)
	if err != nil {
		panic(err) // an RSA public key always marshals
	}
	return data
}

// logf logs a refusal's reason on the test's log (never a token), until
// the fake stops.
func (f *Fake) logf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.t.Logf("fakegoogle: "+format, args...)
	}
}

// count adds one to the counter of what a request was, and tells whether
// the service is down (counted as Unavailable then).
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

func (f *Fake) denied() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.Denied++
}

// issue records a new opaque token; prefix is Google's for its kind.
func (f *Fake) issue(prefix string, info TokenInfo) string {
	token := prefix + rand.Text() + rand.Text()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[token] = info
	return token
}

// live returns the token's record when the fake issued it and it has not
// expired.
func (f *Fake) live(token string) (TokenInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, ok := f.tokens[token]
	if !ok || !f.o.Now().Before(info.Expiry) {
		return TokenInfo{}, false
	}
	return info, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// apiError answers in the Google API format (IAM, Storage, and every
// service's 503).
func apiError(w http.ResponseWriter, code int, status, message string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": code, "message": message, "status": status}})
}

func unavailable(w http.ResponseWriter) {
	apiError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "The service is currently unavailable.")
}
