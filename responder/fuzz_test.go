package responder

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/metabind/metabind/responder/credentials"
	"github.com/metabind/metabind/responder/issuer"
)

// fuzzCallers are the callers FuzzHandlerPath sends from: what each may
// see, by its identity.
var fuzzCallers = []struct {
	ip     string
	email  string // account email served; "" = no identity
	claim  string // email claim of its tokens
	sa     string
	pod    string
	tokens bool // may get tokens (has a pod UID)
}{
	{apiIP, apiEmail, apiEmail, "api", "api-1", true},
	{workerIP, wiEmail, "", "worker", "worker-1", true},
	{noUIDIP, apiEmail, apiEmail, "api", "api-nouid", false},
	{otherIP, "", "", "", "web", false},
	{unboundIP, "", "", "", "", false},
	{brokenIP, "", "", "", "", false},
}

// allowed is the allow-list of paths that may answer 200 to a caller
// whose account email is email ("" for none), written out independently
// of the handler's own tables.
func allowed(path, email string, tokens bool) bool {
	switch path {
	case "/", issuer.DiscoveryPath, issuer.JWKSPath, "/node-1" + issuer.DiscoveryPath, "/node-1" + issuer.JWKSPath:
		return true
	}
	if email == "" {
		return false
	}
	const v1 = "/computeMetadata/v1"
	const sa = v1 + "/instance/service-accounts"
	dirs := []string{"/computeMetadata", v1, v1 + "/project", v1 + "/instance", v1 + "/instance/attributes", v1 + "/universe", sa, sa + "/default", sa + "/" + email}
	for _, d := range dirs {
		if path == d || path == d+"/" {
			return true
		}
	}
	leaves := []string{v1 + "/project/project-id", v1 + "/project/numeric-project-id",
		v1 + "/instance/hostname", v1 + "/instance/id", v1 + "/instance/name", v1 + "/instance/zone", v1 + "/universe/universe-domain"}
	for _, acct := range []string{"default", email} {
		leaves = append(leaves, sa+"/"+acct+"/email", sa+"/"+acct+"/aliases", sa+"/"+acct+"/scopes")
		if tokens {
			leaves = append(leaves, sa+"/"+acct+"/token", sa+"/"+acct+"/identity")
		}
	}
	for _, l := range leaves {
		if path == l {
			return true
		}
	}
	return false
}

func FuzzHandlerPath(f *testing.F) {
	const sa = "/computeMetadata/v1/instance/service-accounts"
	for _, seed := range []struct {
		path, query string
	}{
		{"/", ""},
		{"/computeMetadata/v1/", "recursive=true&alt=json"},
		{"/computeMetadata/v1/project/project-id", ""},
		{"/computeMetadata/v1/instance", ""},
		{sa + "/", ""},
		{sa + "/default/token", "scopes=https://www.googleapis.com/auth/cloud-platform"},
		{sa + "/default/identity", "audience=https://aud.example&format=full&licenses=TRUE"},
		{sa + "/" + apiEmail + "/token", ""},
		{sa + "/" + wiEmail + "/identity", "audience=x"},
		{sa + "/someone@else.example/token", ""},
		{sa + "/default/../" + apiEmail + "/token", ""},
		{sa + "/%2e%2e/someone@else.example/token", ""},
		{sa + "/default%2ftoken", ""},
		{sa + "/default\\token", ""},
		{sa + "//default/token", ""},
		{sa + "/default./token", ""},
		{sa + "/default/token.", ""},
		{sa + "/DEFAULT/token", ""},
		{sa + "/default/token%00", ""},
		{"/computeMetadata/v1/instance/attributes/", "wait_for_change=true&timeout_sec=1"},
		{"/computeMetadata/v1/instance/attributes/cluster-name", ""},
		{"/computeMetadata/v1/universe/universe-domain", "alt=json"},
		{"/computeMetadata/v1/project/project-id", "wait_for_change=true&last_etag=x"},
		{"/computeMetadata/v1/project/project-id", "alt=json&alt=text"},
		{"/computeMetadata/v1/project/project-id", "a=%zz"},
		{"/openid/v1/jwks", ""},
		{"/node-1/.well-known/openid-configuration", ""},
		{"/latest/meta-data/iam/security-credentials/", ""},
		{"/metadata/identity/oauth2/token", "api-version=2018-02-01&resource=x"},
		{"/" + strings.Repeat("a/", 600), ""},
		{"/computeMetadata/v1/", strings.Repeat("x=1&", 1100)},
		{"*", ""},
		{"http://169.254.169.254" + sa + "/default/token", ""},
		{"//evil.example/computeMetadata/v1/", ""},
	} {
		for who := range fuzzCallers {
			f.Add(seed.path, seed.query, uint8(who), uint8(1))
		}
		f.Add(seed.path, seed.query, uint8(0), uint8(0))
	}

	h, iss := newResponder(f, unlimited(testCfg(f)), testLookup(), nil) // nothing is rate limited here
	pub := iss.JWKS().Keys[0].Key                                       // the key the handler signs with
	h.gce.MaxLongPoll = 0

	f.Fuzz(func(t *testing.T, path, query string, who, flags uint8) {
		caller := fuzzCallers[int(who)%len(fuzzCallers)]
		target := path
		if query != "" {
			target += "?" + query
		}
		raw := "GET " + target + " HTTP/1.1\r\nHost: 169.254.169.254\r\n"
		if flags&1 != 0 {
			raw += "Metadata-Flavor: Google\r\n"
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw + "\r\n")))
		if err != nil {
			return // net/http would refuse it before the handler
		}
		req.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(caller.ip), 4321).String()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		if rec.Header().Get("Metadata-Flavor") != "Google" {
			t.Errorf("%q: no Metadata-Flavor on a %d", target, rec.Code)
		}
		switch {
		case rec.Code == http.StatusServiceUnavailable && caller.ip == brokenIP:
		case rec.Code >= 500:
			t.Fatalf("%q from %s: status %d: %s", target, caller.ip, rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK {
			return
		}
		p := req.URL.Path
		if !allowed(p, caller.email, caller.tokens) {
			t.Fatalf("%q from %s: 200 for %q, which is not on the allow-list: %q", target, caller.ip, p, rec.Body)
		}
		switch {
		case strings.HasSuffix(p, "/email"):
			if rec.Body.String() != caller.email {
				t.Fatalf("%q from %s: email %q, want %q", target, caller.ip, rec.Body, caller.email)
			}
		case strings.HasSuffix(p, "/token"), strings.HasSuffix(p, "/identity"):
			tok := rec.Body.String()
			if strings.HasSuffix(p, "/token") {
				var resp tokenResponse
				if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
					t.Fatalf("%q: token response %q: %v", target, rec.Body, err)
				}
				tok = resp.AccessToken
			}
			var c credentials.Claims
			if _, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
				t.Fatalf("%q: token does not verify: %v", target, err)
			}
			if c.Email != caller.claim || c.Subject != credentials.ServiceAccountSubject("payments", caller.sa) ||
				c.Kubernetes.Pod.Name != caller.pod || c.Kubernetes.Pod.UID != "uid-"+caller.pod {
				t.Fatalf("%q from %s: token for email %q sub %q pod %+v", target, caller.ip, c.Email, c.Subject, c.Kubernetes.Pod)
			}
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		testConfig,
		goodConfig,
		testConfig + "limits: {requestsPerSecond: 0.5, burst: 1}\n",
		testConfig + "limits: {requestsPerSecond: 10000, burst: 100000}\n",
		testConfig + "limits: {requestsPerSecond: .nan}\n",
		testConfig + "limits: {requestsPerSecond: .inf, burst: -1}\n",
		testConfig + "limits: {burst: 1e20}\n",
		testConfig + "cluster: {name: c, location: l, uid: u}\n",
		testConfig + "cluster: {name: c, location: \"l\\u0085\"}\n",
		`{"project": {"id": "p", "numericId": 42}, "node": {"name": "n", "zone": "z"}, "issuer": {"url": "http://127.0.0.1:8080", "tokenLifetime": "59m59s"}}`,
		"project: {id: p, numericId: 18446744073709551616}\nnode: {name: n, zone: z}\nissuer: {url: https://i.example}\n",
		"project: {id: p, numericId: \"007\"}\nnode: {name: n, zone: z}\nissuer: {url: https://i.example, tokenLifetime: 1h0m0.000000001s}\n",
		"project: {id: p, numericId: \"1\"}\nnode: {name: n, zone: z}\nissuer: {url: https://i.example, tokenLifetime: -1h}\n",
		"project: {id: \"p\\u0000\", numericId: \"1\"}\nnode: {name: n, zone: z}\nissuer: {url: https://i.example}\n",
		"project: {id: p, numericId: \"1\"}\nnode: {name: \"n\\u0085x\", zone: z}\nissuer: {url: \"https://i.example/\\u0000\"}\n",
		"project: {id: p, numericId: \"1\"}\nnode: {name: n, zone: z}\nissuer: {url: \"https://user@i.example\"}\n",
		"project: {id: p, numericId: \"1\"}\nnode: {name: n, zone: z}\nissuer: {url: https://i.example}\nidentities: [{namespace: a, serviceAccount: b, pod: \"[\", email: \"x@y\"}]\n",
		"project: {id: p, numericId: \"1\"}\nnode: {name: n, zone: z}\nissuer: {url: https://i.example}\nidentities: [{namespace: a, serviceAccount: b, scopes: [\"\"]}]\n",
		"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n",
		"project: &p {id: p, numericId: \"1\"}\nnode: {name: n, zone: z}\nissuer: {url: https://i.example}\nextra: *p\n",
		"", "null", "[]", "{}", "---\n---\n", "project: {id: [1]}", "\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		checkConfigInvariants(t, cfg)

		// Validation is idempotent: the completed config, written out and
		// read back, is the same config.
		out, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("a valid config does not parse back: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", cfg, again)
		}

		// A config that parses makes a handler that serves.
		iss, err := issuer.New(cfg.Issuer, key)
		if err != nil {
			t.Fatalf("issuer: %v", err)
		}
		h, err := New(cfg, fakeLookup{}, iss, nil)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/openid/v1/jwks", nil))
		if rec.Code != 200 {
			t.Fatalf("JWKS: %d", rec.Code)
		}
	})
}

// checkConfigInvariants is what every completed config holds.
func checkConfigInvariants(t *testing.T, cfg *Config) {
	t.Helper()
	fail := func(format string, args ...any) { t.Helper(); t.Fatalf("valid config: "+format, args...) }
	if l := cfg.Issuer.Lifetime; l < issuer.MinTokenLifetime || l > issuer.MaxTokenLifetime {
		fail("lifetime %v out of bounds", l)
	}
	if cfg.Limits.RequestsPerSecond == nil || cfg.Limits.Burst == nil {
		fail("limits not completed: %+v", cfg.Limits)
	}
	if r := *cfg.Limits.RequestsPerSecond; !(r > 0 && r <= MaxRequestsPerSecond) {
		fail("requestsPerSecond %v", r)
	}
	if b := *cfg.Limits.Burst; b < 1 || b > MaxBurst {
		fail("burst %d", b)
	}
	if n, err := strconv.ParseUint(string(cfg.Project.NumericID), 10, 64); err != nil || strings.Trim(string(cfg.Project.NumericID), "0123456789") != "" {
		fail("numericId %q (%d, %v)", cfg.Project.NumericID, n, err)
	}
	for name, s := range map[string]string{"project.id": cfg.Project.ID, "node.name": cfg.Node.Name, "node.zone": cfg.Node.Zone} {
		if !servable(s) || strings.ContainsAny(s, "/\\?#% ") {
			fail("%s %q cannot be served", name, s)
		}
	}
	if c := cfg.Cluster; c != nil {
		for name, s := range map[string]string{"cluster.name": c.Name, "cluster.location": c.Location, "cluster.uid": c.UID} {
			if (s != "" || name != "cluster.uid") && (!servable(s) || strings.ContainsAny(s, "/\\?#% ")) {
				fail("%s %q cannot be served", name, s)
			}
		}
	}
	u, err := url.Parse(cfg.Issuer.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		fail("issuer.url %q (%v)", cfg.Issuer.URL, err)
	}
	for i, r := range cfg.Identities {
		if r.Namespace == "" || r.ServiceAccount == "" || len(r.Scopes) == 0 {
			fail("identities[%d] incomplete: %+v", i, r)
		}
		if !servable(r.Namespace) || !servable(r.ServiceAccount) || (r.Email != "" && !servable(r.Email)) {
			fail("identities[%d] has names that cannot be served: %+v", i, r)
		}
		if email := cfg.Identities[i].AccountEmail(cfg.Project.ID); strings.ContainsAny(email, "/\\?#% ") || email == "default" {
			fail("identities[%d]: account email %q would break its metadata paths", i, email)
		}
		for _, s := range r.Scopes {
			if s == "" || !servable(s) || strings.ContainsAny(s, " ,") {
				fail("identities[%d] scope %q", i, s)
			}
		}
	}
}

// servable: valid UTF-8 without control characters, so it can go into a
// response body, a header-free listing and a log line as is.
func servable(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
