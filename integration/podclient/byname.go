package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"

	"cloud.google.com/go/compute/metadata"
)

// metadataHost is the name Google's libraries other than Go's send data
// requests to (python google-auth, Java, Node, gcloud): they reach the
// server only if the pod's resolver knows it.
const metadataHost = "metadata.google.internal"

// ByName is what a client that calls the metadata server by its name got.
type ByName struct {
	// Resolved are the addresses the pod's resolver (its resolv.conf) gave.
	Resolved []string `json:"resolved"`
	// OnGCE is Go's metadata.OnGCE(), which races a lookup of the name
	// against a probe of the IP.
	OnGCE   bool   `json:"onGCE"`
	Email   string `json:"email"`
	IDToken string `json:"idToken,omitempty"`
	// Env says whether a metadata override was in the environment (the
	// test wants none: the name must work on its own).
	Env []string `json:"env,omitempty"`
}

// askByName resolves metadataHost and asks for the email and, when id, an
// ID token at http://metadata.google.internal, as google-auth's _metadata.get
// does.
func askByName(ctx context.Context, audience string, id bool) (ByName, error) {
	var b ByName
	for _, k := range []string{"GCE_METADATA_HOST", "GCE_METADATA_IP", "GCE_METADATA_ROOT"} {
		if v, ok := os.LookupEnv(k); ok {
			b.Env = append(b.Env, k+"="+v)
		}
	}
	addrs, err := net.DefaultResolver.LookupHost(ctx, metadataHost)
	if err != nil {
		return b, fmt.Errorf("resolve %s: %w", metadataHost, err)
	}
	b.Resolved = addrs
	b.OnGCE = metadata.OnGCE()
	if b.Email, err = getByName(ctx, "instance/service-accounts/default/email"); err != nil {
		return b, err
	}
	if id {
		if b.IDToken, err = getByName(ctx, "instance/service-accounts/default/identity?audience="+url.QueryEscape(audience)); err != nil {
			return b, err
		}
	}
	return b, nil
}

func getByName(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metadataHost+"/computeMetadata/v1/"+path, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", req.URL, resp.Status, body)
	}
	return string(body), nil
}
