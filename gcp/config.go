package gcp

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/metabind/metabind/internal/httpsclient"
)

// Google's endpoints and the per-call bound.
const (
	DefaultSTSURL            = "https://sts.googleapis.com/v1/token"
	DefaultIAMCredentialsURL = "https://iamcredentials.googleapis.com/v1"
	DefaultTimeout           = 10 * time.Second
)

// AudiencePrefix turns a provider's resource name into its full name: the
// STS audience, and the aud a subject token must carry.
const AudiencePrefix = "//iam.googleapis.com/"

// Config says which workload identity provider tokens are exchanged at and
// where Google's endpoints are. Field names in errors are the responder
// configuration's (gcp.<field>).
type Config struct {
	// WorkloadIdentityProvider is the provider's resource name:
	// projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>.
	WorkloadIdentityProvider string `json:"workloadIdentityProvider"`
	// STSURL is the token exchange endpoint; default DefaultSTSURL.
	STSURL string `json:"stsURL,omitempty"`
	// IAMCredentialsURL is the IAM Service Account Credentials API up to its
	// version; default DefaultIAMCredentialsURL.
	IAMCredentialsURL string `json:"iamCredentialsURL,omitempty"`
	// CAFile is an optional PEM file of CA certificates trusted besides the
	// system roots (tests, or a TLS-inspecting egress proxy).
	CAFile string `json:"caFile,omitempty"`
	// Timeout bounds each call (connect, TLS, request, answer); default
	// DefaultTimeout. Not in the configuration file.
	Timeout time.Duration `json:"-"`
}

// providerName is a provider's resource name. Pool and provider IDs are 4 to
// 32 lowercase letters, digits and hyphens (Google's rule); the project is
// its number, and workload identity pools live in location global only.
var providerName = regexp.MustCompile(`^projects/[0-9]+/locations/global/workloadIdentityPools/[a-z0-9-]{4,32}/providers/[a-z0-9-]{4,32}$`)

// Audience is the provider's full resource name,
// //iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>:
// the STS audience and the aud of the subject tokens.
func (c Config) Audience() string { return AudiencePrefix + c.WorkloadIdentityProvider }

// Complete fills in defaults and checks every field; an error names the
// field.
func (c *Config) Complete() error {
	if err := checkProvider(c.WorkloadIdentityProvider); err != nil {
		return err
	}
	if c.STSURL == "" {
		c.STSURL = DefaultSTSURL
	}
	if err := checkURL("stsURL", c.STSURL); err != nil {
		return err
	}
	if c.IAMCredentialsURL == "" {
		c.IAMCredentialsURL = DefaultIAMCredentialsURL
	}
	c.IAMCredentialsURL = strings.TrimRight(c.IAMCredentialsURL, "/")
	if err := checkURL("iamCredentialsURL", c.IAMCredentialsURL); err != nil {
		return err
	}
	if c.CAFile != "" {
		if _, err := httpsclient.ReadCAFile(c.CAFile); err != nil {
			return err
		}
	}
	switch {
	case c.Timeout < 0:
		return fmt.Errorf("timeout: %v is negative", c.Timeout)
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	}
	return nil
}

func checkProvider(name string) error {
	const field = "workloadIdentityProvider"
	const want = "projects/<project number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>"
	switch {
	case name == "":
		return fmt.Errorf("%s: required (%s)", field, want)
	case strings.HasPrefix(name, AudiencePrefix), strings.HasPrefix(name, "https://iam.googleapis.com/"):
		return fmt.Errorf("%s: %q: give the resource name without the host: %s", field, name, want)
	case providerName.MatchString(name):
		return nil
	}
	parts := strings.Split(name, "/")
	if len(parts) == 8 && parts[0] == "projects" && strings.Trim(parts[1], "0123456789") != "" {
		return fmt.Errorf("%s: %q: the project must be given by its number, not its ID: %s", field, name, want)
	}
	if len(parts) == 8 && parts[2] == "locations" && parts[3] != "global" {
		return fmt.Errorf("%s: %q: workload identity pools are in location global only: %s", field, name, want)
	}
	return fmt.Errorf("%s: %q is not %s (pool and provider IDs: 4 to 32 lowercase letters, digits, hyphens)", field, name, want)
}

func checkURL(field, raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", field, err)
	case u.Scheme != "https":
		return fmt.Errorf("%s: %q: must be an https URL", field, raw)
	case u.Host == "":
		return fmt.Errorf("%s: %q: no host", field, raw)
	case u.User != nil, u.RawQuery != "", u.Fragment != "":
		return fmt.Errorf("%s: %q: no user, query or fragment allowed", field, raw)
	}
	return nil
}
