package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

const defaultAudience = "https://relying-party.example"

// sdkAnswer is what the real client libraries obtained inside a pod
// (podclient's Answer).
type sdkAnswer struct {
	ProjectID   string    `json:"projectID"`
	Email       string    `json:"email"`
	IDToken     string    `json:"idToken"`
	AccessToken string    `json:"accessToken"`
	TokenType   string    `json:"tokenType"`
	Expiry      time.Time `json:"expiry"`
	APIStatus   int       `json:"apiStatus"`
}

// sdk runs podclient, the real Go clients, inside p's netns against
// 169.254.169.254.
func (p *pod) sdk(t *testing.T) (sdkAnswer, error) {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+p.ns.Path(), "--", podClient, "-audience", defaultAudience)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return sdkAnswer{}, fmt.Errorf("podclient in %s/%s: %v: %s", p.namespace, p.name, err, stderr.String())
	}
	var a sdkAnswer
	if err := json.Unmarshal(out, &a); err != nil {
		return sdkAnswer{}, fmt.Errorf("podclient output %q: %w", out, err)
	}
	return a, nil
}

// nsHTTPClient opens every connection from inside netns n (the socket is
// created there), optionally from a chosen source address. Keep-alives are
// off so every request is a new connection, as after a pod restart.
func nsHTTPClient(n ns.NetNS, source *netip.Addr) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := n.Do(func(ns.NetNS) error {
			d := net.Dialer{Timeout: 2 * time.Second}
			if source != nil {
				d.LocalAddr = &net.TCPAddr{IP: source.AsSlice()}
			}
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	return &http.Client{
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true},
		Timeout:   3 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// metadataGet asks the metadata address from inside the pod.
func (p *pod) metadataGet(path string) (int, string, error) {
	return get(nsHTTPClient(p.ns, nil), "http://"+metadataIP+path)
}

func get(c *http.Client, u string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
