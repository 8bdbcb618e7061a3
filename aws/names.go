package aws

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// STS's limits on RoleSessionName: 2 to 64 characters of [\w+=,.@-].
const (
	minSessionName = 2
	maxSessionName = 64
)

// sessionNameChars is AWS's pattern for RoleSessionName ([\w+=,.@-], \w
// being ASCII letters, digits and _).
var sessionNameChars = regexp.MustCompile(`^[A-Za-z0-9_+=,.@-]*$`)

// plainNamespace and plainPod are the names SessionName keeps as they are:
// a namespace without a dot (Kubernetes namespaces are DNS labels) and a pod
// name of letters, digits, '_', '-' and '.'. The first dot of
// "<namespace>.<pod>" then always splits it back.
var (
	plainNamespace = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	plainPod       = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// hashLen is the number of hex digits of SHA-256 a hashed session name
// ends with (64 bits).
const hashLen = 16

// SessionName is the RoleSessionName for a pod: "<namespace>.<pod>" when
// that fits AWS's 2 to 64 characters of [\w+=,.@-] as it is (it shows in
// CloudTrail and in the assumed-role ARN). Otherwise (too long, or a
// character AWS does not take) it is a prefix of that name, every character
// outside [\w+=,.-] made '-', then '@' and 16 hex digits of a SHA-256 of
// namespace and pod. A plain name has no '@' and the first dot splits it
// back into namespace and pod, and a hashed one is told apart by its hash,
// so distinct (namespace, pod) pairs get distinct names; the same pair
// always gets the same name.
func SessionName(namespace, pod string) string {
	plain := namespace + "." + pod
	if len(plain) <= maxSessionName && plainNamespace.MatchString(namespace) && plainPod.MatchString(pod) {
		return plain
	}
	// Length-prefixed, so ("a.b", "c") and ("a", "b.c") hash apart.
	sum := sha256.Sum256([]byte(strconv.Itoa(len(namespace)) + ":" + namespace + "/" + pod))
	suffix := "@" + hex.EncodeToString(sum[:])[:hashLen]
	var b strings.Builder
	for _, r := range plain {
		if b.Len() == maxSessionName-len(suffix) {
			break
		}
		if r < 0x80 && r != '@' && sessionNameChars.MatchString(string(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String() + suffix
}

// validSessionName checks name against STS's RoleSessionName constraints.
func validSessionName(name string) error {
	switch {
	case len(name) < minSessionName || len(name) > maxSessionName:
		return fmt.Errorf("role session name %q: %d characters, want %d to %d", name, len(name), minSessionName, maxSessionName)
	case !sessionNameChars.MatchString(name):
		return fmt.Errorf("role session name %q: only letters, digits and _+=,.@- allowed", name)
	}
	return nil
}

// roleARN is an IAM role's ARN: partition aws, aws-cn or aws-us-gov, no
// region, a 12-digit account, role/ then an optional path (segments of
// printable ASCII) and the role name (1 to 64 of [\w+=,.@-]).
var roleARN = regexp.MustCompile(`^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/([\x21-\x2E\x30-\x7E]+/)*[A-Za-z0-9_+=,.@-]{1,64}$`)

// maxRoleARN is STS's bound on RoleArn; an IAM path is at most 512
// characters.
const (
	maxRoleARN  = 2048
	maxRolePath = 512
)

// ValidRoleARN checks that arn names an IAM role as STS takes it:
// arn:aws[-cn|-us-gov]:iam::<12 digits>:role/[<path>/]<name>.
func ValidRoleARN(arn string) error {
	const want = "arn:aws:iam::<12-digit account ID>:role/[<path>/]<role name>"
	if len(arn) > maxRoleARN {
		return fmt.Errorf("role ARN of %d characters: at most %d", len(arn), maxRoleARN)
	}
	if !roleARN.MatchString(arn) {
		if strings.HasPrefix(arn, "arn:") && strings.Contains(arn, ":sts::") {
			return fmt.Errorf("%q is an STS ARN (an assumed role?), not a role ARN: %s", arn, want)
		}
		return fmt.Errorf("%q is not a role ARN: %s", arn, want)
	}
	resource := arn[strings.Index(arn, ":role/")+len(":role/"):]
	if i := strings.LastIndexByte(resource, '/'); i >= 0 && i+2 > maxRolePath {
		return fmt.Errorf("%q: the role's path is over %d characters", arn, maxRolePath)
	}
	return nil
}

var accountID = regexp.MustCompile(`^[0-9]{12}$`)

// accountOf is the account ID of an ARN (its fifth field), "" when arn is
// not an ARN with a 12-digit account.
func accountOf(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || !accountID.MatchString(parts[4]) {
		return ""
	}
	return parts[4]
}
