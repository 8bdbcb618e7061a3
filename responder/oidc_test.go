package responder

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/metabind/metabind/responder/issuer"
)

// TestOIDCDocumentsCacheControl: the discovery document and the JWKS say
// how long a relying party may cache them, and that is shorter than a
// retired key stays published, and no longer than the clock skew the
// publication window already allows for (see OIDCMaxAge).
func TestOIDCDocumentsCacheControl(t *testing.T) {
	h, _ := newTestHandler(t, nil)
	for _, p := range []string{issuer.DiscoveryPath, issuer.JWKSPath, "/node-1" + issuer.DiscoveryPath, "/node-1" + issuer.JWKSPath} {
		for _, method := range []string{"GET", "HEAD"} {
			rec := do(t, h, method, p, unboundIP, nil)
			if rec.Code != 200 {
				t.Fatalf("%s %s: %d %s", method, p, rec.Code, rec.Body)
			}
			cc := rec.Header().Get("Cache-Control")
			n, err := strconv.Atoi(strings.TrimPrefix(cc, "max-age="))
			if !strings.HasPrefix(cc, "max-age=") || err != nil || n <= 0 {
				t.Errorf("%s %s: Cache-Control %q, want max-age=N with N > 0", method, p, cc)
				continue
			}
			maxAge := time.Duration(n) * time.Second
			if maxAge != issuer.OIDCMaxAge {
				t.Errorf("%s %s: max-age %v, want OIDCMaxAge (%v)", method, p, maxAge, issuer.OIDCMaxAge)
			}
			if maxAge >= issuer.RetiredKeyPublication {
				t.Errorf("%s %s: max-age %v is not shorter than a retired key's publication (%v)", method, p, maxAge, issuer.RetiredKeyPublication)
			}
			if skew := issuer.RetiredKeyPublication - issuer.MaxTokenLifetime; maxAge > skew {
				t.Errorf("%s %s: max-age %v exceeds the %v of skew the key publication allows", method, p, maxAge, skew)
			}
		}
	}
	// Tokens are never cacheable by intermediaries.
	rec := do(t, h, "GET", cacheToken, apiIP, flavor)
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("token Cache-Control = %q", cc)
	}
}
