// Package gcp is a thin client for Google's token exchange through Workload
// Identity Federation: the Security Token Service (a subject token, an OIDC
// JWT of a trusted issuer, for a federated access token) and the IAM Service
// Account Credentials API (the federated token for an access token or an ID
// token of a Google service account the federated principal may
// impersonate). Wire formats are Google's public APIs:
//
//	POST {STSURL}                    form: grant_type, audience, requested_token_type,
//	                                 subject_token_type, subject_token, scope
//	POST {IAMCredentialsURL}/projects/-/serviceAccounts/{email}:generateAccessToken
//	POST {IAMCredentialsURL}/projects/-/serviceAccounts/{email}:generateIdToken
//
// Why not golang.org/x/oauth2/google/externalaccount: it binds the subject
// token source, the exchange, the impersonation and its own caching into
// one TokenSource per credential file, while the responder needs each step
// on its own: the federated token alone (direct resource access) or fed to
// both generateAccessToken and generateIdToken (externalaccount has no ID
// tokens), one cache for all pods of a service account with its own refresh
// and prefetch, a CA of its own, and each failure sorted into what the pod
// is answered: ErrUnavailable (503 and Retry-After) or *Denied with
// Google's own message (403). Those are a few requests and two error
// formats, so the client is the standard library.
//
// Nothing here logs, and no error carries a token: Token's String and
// LogValue print only its expiry.
package gcp
