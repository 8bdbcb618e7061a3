package gce

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// googleScopePrefix starts every Google API scope; CloudPlatformScope
// covers them all.
const (
	googleScopePrefix  = "https://www.googleapis.com/auth/"
	CloudPlatformScope = googleScopePrefix + "cloud-platform"
)

// scopeSet is a set of scopes as a token grants them: sorted, each once
// (RFC 6749 section 3.3, RFC 9068 section 2.2.3: the scope claim joins
// them with spaces). The token cache keys on it, so requests for the same
// set in any order share one token.
func scopeSet(scopes []string) []string {
	s := slices.Clone(scopes)
	slices.Sort(s)
	return slices.Compact(s)
}

// grantScopes returns the scopes a token grants for a ?scopes= value: the
// requested scopes when the identity holds each of them, or all it holds
// when none is requested (absent, empty, or only separators). Google's
// clients separate scopes with commas; spaces (a '+' in the query)
// separate them too, so one entry can never carry a second scope into the
// space-separated claim.
//
// An identity holding cloud-platform may ask for any other Google API
// scope, as on GCE, where cloud-platform covers them: Python's google-auth
// sends a client library's default scopes (google-cloud-storage asks for
// devstorage.*) as ?scopes=, and would fail on every pod with the default
// scope otherwise. Such a scope must be an RFC 6749 scope-token, so what
// the claim says is what was checked. A scope not granted is an error
// naming it.
func grantScopes(held []string, requested string) ([]string, error) {
	cloudPlatform := slices.Contains(held, CloudPlatformScope)
	var out []string
	for _, s := range strings.FieldsFunc(requested, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
		ok := slices.Contains(held, s) ||
			cloudPlatform && strings.HasPrefix(s, googleScopePrefix) && scopeToken(s)
		if !ok {
			return nil, fmt.Errorf("scope %q is not granted to this identity", s)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return scopeSet(held), nil
	}
	return scopeSet(out), nil
}

// scopeToken reports whether s is a scope-token of RFC 6749 section 3.3:
// printable ASCII without space, '"' or '\'.
func scopeToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return s != ""
}
