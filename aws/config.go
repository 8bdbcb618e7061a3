package aws

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/metabind/metabind/internal/httpsclient"
)

// Defaults and bounds.
const (
	// DefaultSessionDuration is how long credentials are asked for
	// (DurationSeconds), as AWS's default and a role's default maximum.
	DefaultSessionDuration = time.Hour
	// MinSessionDuration and MaxSessionDuration are STS's bounds for
	// DurationSeconds; a role's MaxSessionDuration may be lower than 12h.
	MinSessionDuration = 15 * time.Minute
	MaxSessionDuration = 12 * time.Hour
	// DefaultTimeout bounds each call.
	DefaultTimeout = 10 * time.Second
)

// Config says which region's STS credentials are asked at. Field names in
// errors are the responder configuration's (aws.<field>).
type Config struct {
	// Region is the AWS region, e.g. eu-west-3; it names the regional STS
	// endpoint.
	Region string
	// STSURL is the STS endpoint; default https://sts.<region>.amazonaws.com
	// (.amazonaws.com.cn in the China regions).
	STSURL string
	// CAFile is an optional PEM file of CA certificates trusted besides the
	// system roots (tests, or a TLS-inspecting egress proxy).
	CAFile string
	// SessionDuration is how long the credentials asked for live
	// (DurationSeconds): whole seconds, 15m to 12h (and at most the role's
	// MaxSessionDuration, which STS checks); default DefaultSessionDuration.
	SessionDuration time.Duration
	// Timeout bounds each call (connect, TLS, request, answer); default
	// DefaultTimeout.
	Timeout time.Duration
}

// region is an AWS region name: eu-west-3, us-gov-west-1, cn-north-1,
// ap-southeast-4, us-isob-east-1.
var region = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)

// DefaultSTSURL is the regional STS endpoint of region.
func DefaultSTSURL(region string) string {
	if strings.HasPrefix(region, "cn-") {
		return "https://sts." + region + ".amazonaws.com.cn"
	}
	return "https://sts." + region + ".amazonaws.com"
}

// Complete fills in defaults and checks every field; an error names the
// field.
func (c *Config) Complete() error {
	switch {
	case c.Region == "":
		return fmt.Errorf("region: required (e.g. eu-west-3)")
	case !region.MatchString(c.Region):
		return fmt.Errorf("region: %q is not an AWS region name (e.g. eu-west-3)", c.Region)
	}
	if c.STSURL == "" {
		c.STSURL = DefaultSTSURL(c.Region)
	}
	if err := checkURL("stsURL", c.STSURL); err != nil {
		return err
	}
	if c.CAFile != "" {
		if _, err := httpsclient.ReadCAFile(c.CAFile); err != nil {
			return err
		}
	}
	switch d := c.SessionDuration; {
	case d == 0:
		c.SessionDuration = DefaultSessionDuration
	case d < MinSessionDuration || d > MaxSessionDuration:
		return fmt.Errorf("sessionDuration: %v: must be 15m to 12h (STS's DurationSeconds 900 to 43200)", d)
	case d%time.Second != 0:
		return fmt.Errorf("sessionDuration: %v: whole seconds only (DurationSeconds)", d)
	}
	switch {
	case c.Timeout < 0:
		return fmt.Errorf("timeout: %v is negative", c.Timeout)
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	}
	return nil
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
