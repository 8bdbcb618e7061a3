package issuer

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Token lifetime bounds. GCP workload identity federation accepts up to
// 48 h, but Go's metadata client assumes an ID token lives about 3300 s, so
// nothing longer than an hour is useful. RetiredKeyPublication counts on
// MaxTokenLifetime.
const (
	DefaultTokenLifetime = time.Hour
	MinTokenLifetime     = time.Minute
	MaxTokenLifetime     = time.Hour
)

// Config names the issuer: the issuer section of the responder's
// configuration file.
type Config struct {
	// URL is the iss claim; the OIDC discovery document and JWKS are
	// expected under it (the responder serves them too).
	URL string `json:"url"`
	// TokenLifetime is a Go duration between 1m and 1h; default 1h.
	TokenLifetime string `json:"tokenLifetime,omitempty"`

	Lifetime time.Duration `json:"-"` // parsed TokenLifetime
}

// Complete checks c and sets Lifetime. Its errors start with the field
// name ("url ..."): the configuration prefixes "issuer.".
func (c *Config) Complete() error {
	if c.URL == "" {
		return errors.New("url is required")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("url: %q is not an absolute https or http URL", c.URL)
	case u.Host == "" || u.Opaque != "":
		return fmt.Errorf("url: %q has no host", c.URL)
	case u.User != nil:
		return fmt.Errorf("url: %q must not carry user information", c.URL)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(c.URL, "#"):
		return fmt.Errorf("url: %q must not have a query or fragment", c.URL)
	}

	c.Lifetime = DefaultTokenLifetime
	if c.TokenLifetime != "" {
		d, err := time.ParseDuration(c.TokenLifetime)
		if err != nil {
			return fmt.Errorf("tokenLifetime: %w", err)
		}
		c.Lifetime = d
	}
	if c.Lifetime < MinTokenLifetime || c.Lifetime > MaxTokenLifetime {
		return fmt.Errorf("tokenLifetime: %v is outside %v..%v", c.Lifetime, MinTokenLifetime, MaxTokenLifetime)
	}
	return nil
}
