package aws

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/metabind/metabind/internal/httpsclient"
)

// The Query API's action and version.
const (
	ActionAssumeRoleWithWebIdentity = "AssumeRoleWithWebIdentity"
	STSVersion                      = "2011-06-15"
)

// maxResponse bounds what is read of an answer; STS's are a few KiB.
const maxResponse = 1 << 20

// maxWebIdentityToken is STS's bound on WebIdentityToken (4 to 20000
// characters).
const maxWebIdentityToken = 20000

// Client calls STS. It is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
}

// Credentials are an assumed role's temporary credentials. Printing them
// (fmt, slog) shows the access key ID, the account and the expiry only,
// never the secret access key or the session token.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Expiration      time.Time
	// AccountID is the role's account, from the assumed-role user's ARN.
	AccountID string
}

func (c Credentials) String() string {
	return "aws.Credentials{" + c.AccessKeyID + " of account " + c.AccountID +
		", expires " + c.Expiration.UTC().Format(time.RFC3339) + "}"
}

// GoString keeps %#v from printing the secret and the token.
func (c Credentials) GoString() string { return c.String() }

// LogValue keeps slog from printing the secret and the token.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("access_key_id", c.AccessKeyID),
		slog.String("account_id", c.AccountID),
		slog.Time("expiration", c.Expiration),
	)
}

// New checks cfg (Config.Complete) and makes a client that trusts the
// system roots and cfg.CAFile.
func New(cfg Config) (*Client, error) {
	if err := cfg.Complete(); err != nil {
		return nil, err
	}
	hc, err := httpsclient.New(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	return &Client{
		cfg: cfg,
		// STS does not redirect; a redirect is an answer of something
		// else, and the web identity token is not sent on.
		http: hc,
	}, nil
}

// Config is the client's configuration, completed.
func (c *Client) Config() Config { return c.cfg }

// AssumeRoleWithWebIdentity asks STS for credentials of roleARN for the web
// identity webIdentityToken (an OIDC JWT with aud sts.amazonaws.com), in a
// session named sessionName (see SessionName), for Config.SessionDuration.
// Every failure is ErrUnavailable, *Denied, or (bad arguments, an answer
// that cannot be read, a redirect) a plain error; none carries the token.
func (c *Client) AssumeRoleWithWebIdentity(ctx context.Context, roleARN, sessionName, webIdentityToken string) (Credentials, error) {
	op := "sts AssumeRoleWithWebIdentity for " + roleARN
	if err := ValidRoleARN(roleARN); err != nil {
		return Credentials{}, fmt.Errorf("sts AssumeRoleWithWebIdentity: %w", err)
	}
	if err := validSessionName(sessionName); err != nil {
		return Credentials{}, fmt.Errorf("%s: %w", op, err)
	}
	switch n := len(webIdentityToken); {
	case n == 0:
		return Credentials{}, fmt.Errorf("%s: no web identity token", op)
	case n > maxWebIdentityToken:
		return Credentials{}, fmt.Errorf("%s: web identity token of %d bytes, STS takes at most %d", op, n, maxWebIdentityToken)
	}
	form := url.Values{
		"Action":           {ActionAssumeRoleWithWebIdentity},
		"Version":          {STSVersion},
		"RoleArn":          {roleARN},
		"RoleSessionName":  {sessionName},
		"WebIdentityToken": {webIdentityToken},
		"DurationSeconds":  {strconv.FormatInt(int64(c.cfg.SessionDuration/time.Second), 10)},
	}
	var resp struct {
		XMLName xml.Name `xml:"AssumeRoleWithWebIdentityResponse"`
		Result  struct {
			Credentials struct {
				AccessKeyID     string `xml:"AccessKeyId"`
				SecretAccessKey string `xml:"SecretAccessKey"`
				SessionToken    string `xml:"SessionToken"`
				Expiration      string `xml:"Expiration"`
			} `xml:"Credentials"`
			AssumedRoleUser struct {
				Arn string `xml:"Arn"`
			} `xml:"AssumedRoleUser"`
		} `xml:"AssumeRoleWithWebIdentityResult"`
	}
	if err := c.call(ctx, op, form, &resp); err != nil {
		return Credentials{}, err
	}
	cr, user := resp.Result.Credentials, resp.Result.AssumedRoleUser
	switch {
	case cr.AccessKeyID == "" || cr.SecretAccessKey == "" || cr.SessionToken == "":
		return Credentials{}, fmt.Errorf("%s: no AccessKeyId, SecretAccessKey or SessionToken in the answer", op)
	case cr.Expiration == "":
		return Credentials{}, fmt.Errorf("%s: no Expiration in the answer", op)
	}
	expiration, err := time.Parse(time.RFC3339, strings.TrimSpace(cr.Expiration))
	if err != nil {
		return Credentials{}, fmt.Errorf("%s: Expiration %q in the answer: not an ISO 8601 time", op, cr.Expiration)
	}
	account := accountOf(user.Arn)
	if account == "" {
		return Credentials{}, fmt.Errorf("%s: AssumedRoleUser Arn %q in the answer: no account in it", op, user.Arn)
	}
	return Credentials{
		AccessKeyID:     strings.TrimSpace(cr.AccessKeyID),
		SecretAccessKey: strings.TrimSpace(cr.SecretAccessKey),
		SessionToken:    strings.TrimSpace(cr.SessionToken),
		Expiration:      expiration,
		AccountID:       account,
	}, nil
}

// call POSTs form and decodes a 2xx answer into out. Every failure is
// ErrUnavailable, *Denied, or (an answer that cannot be read, a redirect) a
// plain error; none carries the form.
func (c *Client) call(ctx context.Context, op string, form url.Values, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.STSURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set("Accept", "text/xml")
	req.Header.Set("User-Agent", "metabind-responder")
	resp, err := c.http.Do(req)
	if err != nil {
		// No answer: refused, reset, DNS, TLS, or the deadline passed.
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, stripURL(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%w: %s: reading the answer: %w", ErrUnavailable, op, err)
	}
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		if err := xml.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s: unreadable answer (%d, %s): %w", op, s, resp.Header.Get("Content-Type"), err)
		}
		return nil
	case s == http.StatusTooManyRequests || s >= 500:
		code, msg := stsError(s, data)
		return fmt.Errorf("%w: %s: %d %s: %s", ErrUnavailable, op, s, code, msg)
	case s >= 400:
		code, msg := stsError(s, data)
		if transient(code) {
			return fmt.Errorf("%w: %s: %d %s: %s", ErrUnavailable, op, s, code, msg)
		}
		return fmt.Errorf("%s: %w", op, &Denied{Status: s, Code: code, Message: msg})
	default:
		return fmt.Errorf("%s: unexpected answer %d %s", op, s, resp.Header.Get("Location"))
	}
}

// stripURL drops the URL from a *url.Error: op already names the call, and
// the error then reads "connection refused" rather than the method and URL.
func stripURL(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}
