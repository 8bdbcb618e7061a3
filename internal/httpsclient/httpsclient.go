// Package httpsclient makes the HTTP client the cloud clients (aws, gcp)
// call their endpoints with: it trusts the system roots plus an optional CA
// file, takes TLS 1.2 or later, and does not follow redirects.
package httpsclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
)

// ReadCAFile reads path and checks it holds at least one PEM certificate.
func ReadCAFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("caFile: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("caFile: %s: no PEM certificate in it", path)
	}
	return data, nil
}

// New makes a client that trusts the system roots and caFile (when not
// ""). It does not follow redirects: the endpoints it calls do not
// redirect, so a redirect is an answer of something else, and credentials
// are not sent on.
func New(caFile string) (*http.Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := ReadCAFile(caFile)
		if err != nil {
			return nil, err
		}
		roots.AppendCertsFromPEM(pem)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 8
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}
