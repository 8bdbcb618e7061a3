// Package aws holds the AWS flavours: the EC2 instance metadata service
// (IMDSv2, imds.go) under /latest, and the EKS Pod Identity agent's
// container-credentials API (container.go) under /v1/credentials. Both
// answer a caller's role credentials from a Source; IMDS session tokens,
// which the container API also accepts as its Authorization header, are
// session.go.
package aws

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/metabind/metabind/responder/subject"
)

// Credentials are an IAM role's temporary credentials.
type Credentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
	AccountID                                  string // the role's account; "": not told
	Expiration, LastUpdated                    time.Time
}

// Source gives a subject's role and its credentials.
type Source interface {
	// Role is the IAM role ARN of the subject ("" = none: the credential
	// paths answer 404, never the node's).
	Role(s subject.Subject) string
	// Credentials for s's role (cached and shared by the source). Errors:
	// subject.ErrUnavailable (503 on IMDS, 500 with its message on the
	// container API, as the EKS agent does), *subject.Refused (its code
	// with the reason), subject.ErrNoIdentity (404); anything else is 500.
	Credentials(ctx context.Context, s subject.Subject) (Credentials, error)
}

// Node is what the instance metadata says about the node, from the
// configuration. An empty field is not served (404, and left out of
// listings and the identity document).
type Node struct {
	Region, AvailabilityZone, InstanceID, AccountID, InstanceType string
}

// TimeFormat is how both APIs write times, as EC2 does: UTC, seconds.
const TimeFormat = "2006-01-02T15:04:05Z"

func formatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// ServerName is the Server header of EC2's instance metadata service.
const ServerName = "EC2ws"

// IMDSHeader is what every IMDS response carries, refusals included (the
// IMDS route's server.Route.Header): EC2's Server, and none of GCE's.
func IMDSHeader() http.Header { return http.Header{"Server": {ServerName}} }

// ContainerHeader is what every container-credentials response carries:
// nothing of another cloud's (the EKS agent sets no Server header).
func ContainerHeader() http.Header { return http.Header{} }

// roleName is the last path element of a role ARN
// (arn:aws:iam::123456789012:role/path/Name -> Name), what IMDS lists
// under iam/security-credentials/.
func roleName(arn string) string {
	if i := strings.LastIndexByte(arn, '/'); i >= 0 {
		return arn[i+1:]
	}
	if i := strings.LastIndexByte(arn, ':'); i >= 0 {
		return arn[i+1:]
	}
	return arn
}
