// Package aws is a thin client for AWS STS AssumeRoleWithWebIdentity: an
// OIDC JWT of an issuer the account trusts (an IAM OIDC identity provider),
// whose aud is sts.amazonaws.com, for temporary credentials of a role whose
// trust policy lets that web identity assume it. The wire format is STS's
// Query API, unsigned (the web identity token is the authentication):
//
//	POST {STSURL}   form: Action=AssumeRoleWithWebIdentity, Version=2011-06-15,
//	                RoleArn, RoleSessionName, WebIdentityToken, DurationSeconds
//	-> 200 <AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>
//	       <Credentials>{AccessKeyId, SecretAccessKey, SessionToken, Expiration}</Credentials>
//	       <AssumedRoleUser><Arn>arn:aws:sts::<account>:assumed-role/<role>/<session></Arn></AssumedRoleUser>
//	-> 4xx/5xx <ErrorResponse><Error><Type/><Code/><Message/></Error></ErrorResponse>
//
// Why not aws-sdk-go-v2's STS client: it brings the SDK's configuration
// chain, endpoint rules, retryer and middleware stack for one unsigned form
// POST, while the responder needs each failure sorted into what the pod is
// answered (ErrUnavailable: 503; *Denied with STS's code and message: 403),
// a CA of its own for tests, its own bounded retries and caching shared by
// the pods of a role (the SDK's stscreds provider retries InvalidIdentityToken
// by itself and caches per provider), and few dependencies in the responder.
// One request and one XML error format, so the client is the standard
// library, like the gcp package.
//
// Nothing here logs, and no error carries a secret: Credentials' String,
// GoString and LogValue print the access key ID, the account and the expiry
// only, never the secret access key or the session token.
package aws
