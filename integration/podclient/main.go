// Command podclient asks the metadata server for credentials with the real
// Google client libraries, exactly as a workload would. The tests and the
// demo run it inside a pod's netns (nsenter --net=...).
//
//	podclient [-audience A] [-access=false] [-api URL] [-o json|text]
//	podclient -by-name [-audience A] [-id=false]   (http://metadata.google.internal)
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"
	"golang.org/x/oauth2/google"
)

// Answer is what the client libraries obtained.
type Answer struct {
	ProjectID     string          `json:"projectID"`
	Email         string          `json:"email"`
	IDToken       string          `json:"idToken"`
	IDTokenClaims json.RawMessage `json:"idTokenClaims"`
	AccessToken   string          `json:"accessToken"`
	// APIStatus is the status of a call to -api with the access token.
	APIStatus int       `json:"apiStatus,omitempty"`
	TokenType string    `json:"tokenType"`
	Expiry    time.Time `json:"expiry"`
}

func main() {
	audience := flag.String("audience", "https://relying-party.example", "audience of the ID token")
	output := flag.String("o", "json", "json (everything, tokens included) or text (no tokens)")
	timeout := flag.Duration("timeout", 20*time.Second, "give up after this long")
	access := flag.Bool("access", true, "also ask for an access token (there is none for a Kubernetes pod without a cloud exchange)")
	id := flag.Bool("id", true, "ask for an ID token (there is none for an account with no Google service account in GCP mode)")
	api := flag.String("api", "", "call this URL with the access token, as a Google API client would (trusts SSL_CERT_FILE)")
	byName := flag.Bool("by-name", false, "call http://metadata.google.internal, resolved by the pod's resolver, as python google-auth does")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if *byName {
		b, err := askByName(ctx, *audience, *id)
		if err != nil {
			fmt.Fprintln(os.Stderr, "podclient:", err)
			os.Exit(3)
		}
		json.NewEncoder(os.Stdout).Encode(b)
		return
	}
	a, err := ask(ctx, *audience, *id, *access)
	if err == nil && *api != "" {
		a.APIStatus, err = call(ctx, *api, a.AccessToken)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "podclient:", err)
		os.Exit(3)
	}
	if *output == "text" {
		fmt.Printf("  project:     %s\n  identity:    %s\n  access token: %s, expires %s\n  ID token claims: %s\n",
			a.ProjectID, a.Email, a.TokenType, a.Expiry.Format(time.RFC3339), a.IDTokenClaims)
		return
	}
	json.NewEncoder(os.Stdout).Encode(a)
}

func ask(ctx context.Context, audience string, id, access bool) (Answer, error) {
	var a Answer
	var err error
	c := metadata.NewClient(nil)
	if a.ProjectID, err = c.ProjectIDWithContext(ctx); err != nil {
		return a, fmt.Errorf("project ID: %w", err)
	}
	if a.Email, err = c.EmailWithContext(ctx, "default"); err != nil {
		return a, fmt.Errorf("email: %w", err)
	}
	if id {
		if a.IDToken, err = c.GetWithContext(ctx, "instance/service-accounts/default/identity?audience="+url.QueryEscape(audience)); err != nil {
			return a, fmt.Errorf("ID token: %w", err)
		}
		if a.IDTokenClaims, err = claims(a.IDToken); err != nil {
			return a, fmt.Errorf("ID token: %w", err)
		}
	}
	if !access {
		return a, nil
	}
	tok, err := google.ComputeTokenSource("").Token()
	if err != nil {
		return a, fmt.Errorf("access token: %w", err)
	}
	a.AccessToken, a.TokenType, a.Expiry = tok.AccessToken, tok.TokenType, tok.Expiry
	return a, nil
}

// call GETs url with the access token as a Google API client does, and
// returns the status.
func call(ctx context.Context, url, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("API call: %w", err)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// claims decodes a JWT's payload for display; verifying it is the relying
// party's job (the tests do, against the served JWKS).
func claims(jwt string) (json.RawMessage, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT: %d parts", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	if !json.Valid(payload) {
		return nil, fmt.Errorf("payload is not JSON")
	}
	return payload, nil
}
