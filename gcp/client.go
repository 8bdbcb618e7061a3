package gcp

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/metabind/metabind/internal/httpsclient"
)

// The token exchange's constants (RFC 8693, as Google's STS takes them).
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
)

// maxResponse bounds what is read of an answer; Google's are a few KiB.
const maxResponse = 1 << 20

// Client calls STS and IAM Credentials. It is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
	now  func() time.Time
}

// Token is an access token or an ID token and when it expires. Printing it
// (fmt, slog) shows the expiry only, never the token.
type Token struct {
	Value  string
	Expiry time.Time
}

func (t Token) String() string {
	return "gcp.Token{expires " + t.Expiry.UTC().Format(time.RFC3339) + "}"
}

// GoString keeps %#v from printing the token.
func (t Token) GoString() string { return t.String() }

// LogValue keeps slog from printing the token.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.Time("expiry", t.Expiry))
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
		// Google's endpoints do not redirect; a redirect is an answer
		// of something else, and a bearer token is not sent on.
		http: hc,
		now:  time.Now,
	}, nil
}

// Config is the client's configuration, completed.
func (c *Client) Config() Config { return c.cfg }

// ExchangeToken exchanges subjectToken (an OIDC JWT whose aud is
// Config.Audience) at STS for a federated access token with scopes.
func (c *Client) ExchangeToken(ctx context.Context, subjectToken string, scopes []string) (Token, error) {
	const op = "sts token exchange"
	if subjectToken == "" {
		return Token{}, fmt.Errorf("%s: no subject token", op)
	}
	if err := checkScopes(scopes); err != nil {
		return Token{}, fmt.Errorf("%s: %w", op, err)
	}
	form := url.Values{
		"grant_type":           {GrantTypeTokenExchange},
		"audience":             {c.cfg.Audience()},
		"requested_token_type": {TokenTypeAccessToken},
		"subject_token_type":   {TokenTypeJWT},
		"subject_token":        {subjectToken},
		"scope":                {strings.Join(scopes, " ")},
	}
	var resp struct {
		AccessToken     string `json:"access_token"`
		IssuedTokenType string `json:"issued_token_type"`
		TokenType       string `json:"token_type"`
		ExpiresIn       int64  `json:"expires_in"`
	}
	start := c.now()
	if err := c.call(ctx, op, c.cfg.STSURL, "", "application/x-www-form-urlencoded", []byte(form.Encode()), &resp); err != nil {
		return Token{}, err
	}
	switch {
	case resp.AccessToken == "":
		return Token{}, fmt.Errorf("%s: no access_token in the answer", op)
	case !strings.EqualFold(resp.TokenType, "Bearer"):
		return Token{}, fmt.Errorf("%s: token_type %q, want Bearer", op, resp.TokenType)
	case resp.IssuedTokenType != "" && resp.IssuedTokenType != TokenTypeAccessToken:
		return Token{}, fmt.Errorf("%s: issued_token_type %q, want %s", op, resp.IssuedTokenType, TokenTypeAccessToken)
	case resp.ExpiresIn <= 0:
		return Token{}, fmt.Errorf("%s: expires_in %d in the answer", op, resp.ExpiresIn)
	}
	return Token{Value: resp.AccessToken, Expiry: start.Add(time.Duration(resp.ExpiresIn) * time.Second)}, nil
}

// GenerateAccessToken asks IAM, as the principal of the federated token,
// for an access token of service account email with scopes and lifetime
// (whole seconds; 0 leaves it to Google's default, one hour).
func (c *Client) GenerateAccessToken(ctx context.Context, federated, email string, scopes []string, lifetime time.Duration) (Token, error) {
	op := "iamcredentials generateAccessToken for " + email
	if err := checkIAMArgs(federated, email); err != nil {
		return Token{}, fmt.Errorf("%s: %w", op, err)
	}
	if err := checkScopes(scopes); err != nil {
		return Token{}, fmt.Errorf("%s: %w", op, err)
	}
	req := struct {
		Scope    []string `json:"scope"`
		Lifetime string   `json:"lifetime,omitempty"`
	}{Scope: scopes}
	if lifetime < 0 || (lifetime > 0 && lifetime < time.Second) {
		return Token{}, fmt.Errorf("%s: lifetime %v: at least 1s, or 0 for Google's default", op, lifetime)
	}
	if lifetime > 0 {
		req.Lifetime = fmt.Sprintf("%ds", int64(lifetime/time.Second))
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w", op, err)
	}
	var resp struct {
		AccessToken string `json:"accessToken"`
		ExpireTime  string `json:"expireTime"`
	}
	if err := c.call(ctx, op, c.iamURL(email, "generateAccessToken"), federated, "application/json", body, &resp); err != nil {
		return Token{}, err
	}
	if resp.AccessToken == "" {
		return Token{}, fmt.Errorf("%s: no accessToken in the answer", op)
	}
	expiry, err := time.Parse(time.RFC3339, resp.ExpireTime)
	if err != nil {
		return Token{}, fmt.Errorf("%s: expireTime: %w", op, err)
	}
	return Token{Value: resp.AccessToken, Expiry: expiry}, nil
}

// GenerateIDToken asks IAM, as the principal of the federated token, for an
// ID token of service account email for audience, with the email claims.
// Its Expiry is the JWT's exp, read without verifying the signature (the
// token came over TLS from IAM).
func (c *Client) GenerateIDToken(ctx context.Context, federated, email, audience string) (Token, error) {
	op := "iamcredentials generateIdToken for " + email
	if err := checkIAMArgs(federated, email); err != nil {
		return Token{}, fmt.Errorf("%s: %w", op, err)
	}
	if audience == "" {
		return Token{}, fmt.Errorf("%s: no audience", op)
	}
	body, err := json.Marshal(struct {
		Audience     string `json:"audience"`
		IncludeEmail bool   `json:"includeEmail"`
	}{audience, true})
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w", op, err)
	}
	var resp struct {
		Token string `json:"token"`
	}
	if err := c.call(ctx, op, c.iamURL(email, "generateIdToken"), federated, "application/json", body, &resp); err != nil {
		return Token{}, err
	}
	if resp.Token == "" {
		return Token{}, fmt.Errorf("%s: no token in the answer", op)
	}
	expiry, err := jwtExpiry(resp.Token)
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w", op, err)
	}
	return Token{Value: resp.Token, Expiry: expiry}, nil
}

func (c *Client) iamURL(email, method string) string {
	return c.cfg.IAMCredentialsURL + "/projects/-/serviceAccounts/" + email + ":" + method
}

// call POSTs body and decodes a 2xx answer into out. Every failure is
// ErrUnavailable, *Denied, or (an answer that cannot be read, a redirect) a
// plain error; none carries a token.
func (c *Client) call(ctx context.Context, op, target, bearer, contentType string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "metabind-responder")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
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
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s: unreadable answer (%d, %s): %w", op, s, resp.Header.Get("Content-Type"), err)
		}
		return nil
	case s == http.StatusTooManyRequests || s >= 500:
		_, msg := googleError(s, data)
		return fmt.Errorf("%w: %s: %d: %s", ErrUnavailable, op, s, msg)
	case s >= 400:
		code, msg := googleError(s, data)
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

func checkScopes(scopes []string) error {
	if len(scopes) == 0 {
		return errors.New("no scopes")
	}
	for _, s := range scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return fmt.Errorf("scope %q: empty or with spaces", s)
		}
	}
	return nil
}

// serviceAccount is what may stand in the URL path: a service account's
// email (or its numeric unique ID).
var serviceAccount = regexp.MustCompile(`^([A-Za-z0-9._+-]+@[A-Za-z0-9.-]+|[0-9]+)$`)

func checkIAMArgs(federated, email string) error {
	if federated == "" {
		return errors.New("no federated token")
	}
	if !serviceAccount.MatchString(email) {
		return fmt.Errorf("%q is not a service account email", email)
	}
	return nil
}

// jwtExpiry reads the exp of a JWT without verifying it.
func jwtExpiry(token string) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, errors.New("the ID token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, fmt.Errorf("the ID token's payload: %w", err)
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, fmt.Errorf("the ID token's claims: %w", err)
	}
	if claims.Exp == nil {
		return time.Time{}, errors.New("the ID token has no exp")
	}
	exp, err := claims.Exp.Float64()
	if err != nil || exp <= 0 {
		return time.Time{}, fmt.Errorf("the ID token's exp %q", claims.Exp.String())
	}
	sec := int64(exp)
	return time.Unix(sec, int64((exp-float64(sec))*1e9)), nil
}
