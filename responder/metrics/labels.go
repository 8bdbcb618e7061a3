package metrics

// Upstream is a cloud token service the responder calls.
type Upstream uint8

const (
	GoogleSTS Upstream = iota // Google's Security Token Service (the federated token)
	GoogleIAM                 // IAM Credentials (impersonation: access and ID tokens)
	AWSSTS                    // AWS STS AssumeRoleWithWebIdentity
	upstreams
)

func (u Upstream) String() string {
	return [...]string{"google_sts", "google_iam", "aws_sts", "unknown"}[min(u, upstreams)]
}

// Reason is how a call to an upstream ended.
type Reason uint8

const (
	Success     Reason = iota // not an error: the call is only timed
	Denied                    // refused: 401 or 403 (no permission, a token it does not trust)
	Invalid                   // refused as asked: another 4xx (invalid_grant, a bad audience)
	Unavailable               // out of reach or failing: no answer, 5xx, 429, throttling
	Timeout                   // no answer within the call's deadline
	Other                     // anything else: an answer that cannot be read, a redirect
	reasons
)

func (r Reason) String() string {
	return [...]string{"success", "denied", "invalid", "unavailable", "timeout", "other", "unknown"}[min(r, reasons)]
}

// repairKind is what the repair loop repaired.
type repairKind uint8

const (
	repairBase            repairKind = iota // a chain or jump of a base put back
	repairPodRules                          // a pod's rules restored
	repairOrphanRules                       // a rule no binding owns removed
	repairReleasedBinding                   // a binding a failed takeover left released removed
	repairKinds
)

func (k repairKind) String() string {
	return [...]string{"base", "pod_rules", "orphan_rules", "released_binding", "unknown"}[min(k, repairKinds)]
}
