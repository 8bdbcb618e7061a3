package credentials

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/metabind/metabind/aws"
	"github.com/metabind/metabind/responder/subject"
)

// STSAudience is the audience of the web identity token AWS STS exchanges.
const STSAudience = "sts.amazonaws.com"

// AssumeRoler is what the AWS source asks of STS (aws.Client).
type AssumeRoler interface {
	AssumeRoleWithWebIdentity(ctx context.Context, roleARN, sessionName, webIdentityToken string) (aws.Credentials, error)
}

var _ AssumeRoler = (*aws.Client)(nil)

// AWS gets a subject's role credentials from STS AssumeRoleWithWebIdentity
// with its web identity token (the cluster's pod-bound token, audience
// sts.amazonaws.com, or the node issuer's). It is a Source so that the one
// cache serves its credentials by its rules (shared by the pods of one
// account and role, refreshed at 20 % of their life, one call in flight,
// never past expiry): the access token asked for with the role as its one
// scope is the credentials, JSON-encoded (AWSCredentials decodes them).
type AWS struct {
	sts      AssumeRoler
	subjects SubjectTokens
}

var _ SharedSource = (*AWS)(nil)

// NewAWS assumes roles through sts with the subjects' tokens.
func NewAWS(sts AssumeRoler, subjects SubjectTokens) *AWS { return &AWS{sts: sts, subjects: subjects} }

// SharedAcrossPods: role credentials are the account's, not a pod's.
func (a *AWS) SharedAcrossPods() bool { return true }

// Role is s's IAM role ARN, "" for none.
func Role(s subject.Subject) string { return s.Annotations[subject.RoleARNAnnotation] }

// AccessToken assumes the role scopes[0] (see AWS).
func (a *AWS) AccessToken(ctx context.Context, s subject.Subject, scopes []string) (Token, error) {
	if len(scopes) != 1 || scopes[0] != Role(s) || Role(s) == "" {
		return Token{}, &subject.Refused{Code: http.StatusNotFound, Reason: "no IAM role for this pod"}
	}
	if err := aws.ValidRoleARN(scopes[0]); err != nil {
		return Token{}, &subject.Refused{Code: http.StatusForbidden, Reason: fmt.Sprintf("%s: %v", subject.RoleARNAnnotation, err)}
	}
	web, err := a.subjects.SubjectToken(ctx, s, STSAudience)
	if err != nil {
		return Token{}, err
	}
	c, err := a.sts.AssumeRoleWithWebIdentity(ctx, scopes[0], aws.SessionName(s.Namespace, s.Pod), web)
	if err != nil {
		return Token{}, stsError(err)
	}
	v, err := json.Marshal(awsCredentials{c.AccessKeyID, c.SecretAccessKey, c.SessionToken, c.AccountID})
	if err != nil {
		return Token{}, err
	}
	return Token{Value: string(v), Expiry: c.Expiration, RefreshAt: refreshAt(time.Now(), c.Expiration)}, nil
}

// IDToken: AWS has none to give.
func (a *AWS) IDToken(context.Context, subject.Subject, string, string, bool) (Token, error) {
	return Token{}, &subject.Refused{Code: http.StatusNotFound, Reason: "no ID tokens from AWS"}
}

// awsCredentials is the JSON a cached token holds.
type awsCredentials struct {
	AccessKeyID, SecretAccessKey, SessionToken, AccountID string
}

// AWSCredentials returns s's role credentials through cache (whose source
// is an AWS) and when they were minted.
func AWSCredentials(ctx context.Context, cache *Cache, s subject.Subject) (aws.Credentials, time.Time, error) {
	t, err := cache.AccessToken(ctx, s, []string{Role(s)})
	if err != nil {
		return aws.Credentials{}, time.Time{}, err
	}
	var c awsCredentials
	if err := json.Unmarshal([]byte(t.Value), &c); err != nil {
		return aws.Credentials{}, time.Time{}, err
	}
	return aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
		AccountID: c.AccountID, Expiration: t.Expiry}, t.IssuedAt, nil
}

// stsError: STS out of reach is 503, its refusal 403 with its message.
func stsError(err error) error {
	var denied *aws.Denied
	switch {
	case errors.Is(err, aws.ErrUnavailable):
		return fmt.Errorf("%w: %w", subject.ErrUnavailable, err)
	case errors.As(err, &denied):
		return &subject.Refused{Code: http.StatusForbidden, Reason: denied.Code + ": " + denied.Message}
	default:
		return err
	}
}
