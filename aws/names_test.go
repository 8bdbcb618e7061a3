package aws

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// awsSessionName is STS's constraint on RoleSessionName, written out here
// apart from the package's own.
var awsSessionName = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

func TestSessionNamePlain(t *testing.T) {
	for _, tc := range []struct{ ns, pod, want string }{
		{"default", "web-0", "default.web-0"},
		{"team", "api-7d9f8c6b5-x2x4z", "team.api-7d9f8c6b5-x2x4z"},
		{"kube-system", "coredns.v1", "kube-system.coredns.v1"},
		{"a", "b", "a.b"},
		// Exactly 64 characters.
		{strings.Repeat("n", 30), strings.Repeat("p", 33), strings.Repeat("n", 30) + "." + strings.Repeat("p", 33)},
	} {
		if got := SessionName(tc.ns, tc.pod); got != tc.want {
			t.Errorf("SessionName(%q, %q) = %q, want %q", tc.ns, tc.pod, got, tc.want)
		}
	}
}

func TestSessionNameHashed(t *testing.T) {
	long := strings.Repeat("p", 253) // the longest pod name
	for _, tc := range []struct{ ns, pod, prefix string }{
		{"team", long, "team." + strings.Repeat("p", 42)},
		{strings.Repeat("n", 63), "web", strings.Repeat("n", 47)},
		{"team", "web/0", "team.web-0"},
		{"team", "wéb", "team.w-b"},
		{"team", "a@b", "team.a-b"},
		{"te.am", "web", "te.am.web"},
		{"team", "a b\tc\n", "team.a-b-c-"},
		{"", "web", ".web"},
		{"team", "", "team."},
		{"", "", "."},
	} {
		got := SessionName(tc.ns, tc.pod)
		if !awsSessionName.MatchString(got) {
			t.Errorf("SessionName(%q, %q) = %q: not a valid RoleSessionName", tc.ns, tc.pod, got)
		}
		prefix, hash, ok := strings.Cut(got, "@")
		if !ok || prefix != tc.prefix || !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(hash) {
			t.Errorf("SessionName(%q, %q) = %q, want %q@<16 hex digits>", tc.ns, tc.pod, got, tc.prefix)
		}
	}
}

// TestSessionNameProperties: every name is valid for STS, the same pair
// always gets the same name, and distinct pairs distinct names, including
// pairs made to collide once sanitized, truncated or joined.
func TestSessionNameProperties(t *testing.T) {
	var pairs [][2]string
	parts := []string{
		"", "a", "b", "a.b", "b.c", "c", "web-0", "web_0", "web/0", "web 0", "wéb", "web@0", "web+0",
		strings.Repeat("x", 31), strings.Repeat("x", 32), strings.Repeat("x", 33), strings.Repeat("x", 63),
		strings.Repeat("x", 253), strings.Repeat("x", 252) + "y", strings.Repeat("x", 100) + "-a", strings.Repeat("x", 100) + "-b",
	}
	for _, ns := range parts {
		for _, pod := range parts {
			pairs = append(pairs, [2]string{ns, pod})
		}
	}
	for i := range 2000 {
		pairs = append(pairs, [2]string{"namespace-" + fmt.Sprint(i%7), fmt.Sprintf("deployment-with-a-rather-long-name-7d9f8c6b5-%05d", i)})
	}
	seen := map[string][2]string{}
	for _, p := range pairs {
		name := SessionName(p[0], p[1])
		if !awsSessionName.MatchString(name) {
			t.Fatalf("SessionName(%q, %q) = %q: not a valid RoleSessionName", p[0], p[1], name)
		}
		if again := SessionName(p[0], p[1]); again != name {
			t.Fatalf("SessionName(%q, %q): %q then %q", p[0], p[1], name, again)
		}
		if other, dup := seen[name]; dup && other != p {
			t.Fatalf("SessionName(%q, %q) = SessionName(%q, %q) = %q", p[0], p[1], other[0], other[1], name)
		}
		seen[name] = p
		if err := validSessionName(name); err != nil {
			t.Fatal(err)
		}
	}
	// The join is not ambiguous: ("a.b", "c") and ("a", "b.c").
	if SessionName("a.b", "c") == SessionName("a", "b.c") {
		t.Fatal("a.b/c and a/b.c share a name")
	}
}

func TestValidRoleARN(t *testing.T) {
	for _, arn := range []string{
		"arn:aws:iam::123456789012:role/app",
		"arn:aws:iam::123456789012:role/service-role/app",
		"arn:aws:iam::123456789012:role/a/b/c/app+=,.@-_",
		"arn:aws-cn:iam::123456789012:role/app",
		"arn:aws-us-gov:iam::123456789012:role/app",
		"arn:aws:iam::123456789012:role/" + strings.Repeat("r", 64),
	} {
		if err := ValidRoleARN(arn); err != nil {
			t.Errorf("%s: %v", arn, err)
		}
	}
	for arn, want := range map[string]string{
		"":                                    "not a role ARN",
		"app":                                 "not a role ARN",
		"arn:aws:iam::12345678901:role/app":   "not a role ARN",
		"arn:aws:iam::1234567890123:role/app": "not a role ARN",
		"arn:aws:iam:eu-west-3:123456789012:role/app":                          "not a role ARN",
		"arn:aws:iam::123456789012:user/app":                                   "not a role ARN",
		"arn:aws:iam::123456789012:role/":                                      "not a role ARN",
		"arn:aws:iam::123456789012:role/app/":                                  "not a role ARN",
		"arn:aws:iam::123456789012:role/a pp":                                  "not a role ARN",
		"arn:aws:iam::123456789012:role/a//b":                                  "not a role ARN",
		"arn:aws-iso:iam::123456789012:role/app":                               "not a role ARN",
		"arn:aws:iam::123456789012:role/" + strings.Repeat("r", 65):            "not a role ARN",
		"arn:aws:sts::123456789012:assumed-role/app/session":                   "an STS ARN",
		"arn:aws:iam::123456789012:role/" + strings.Repeat("p/", 300) + "app":  "path is over 512",
		"arn:aws:iam::123456789012:role/" + strings.Repeat("pp/", 700) + "app": "at most 2048",
		"arn:aws:iam::123456789012:role/app\n":                                 "not a role ARN",
	} {
		if err := ValidRoleARN(arn); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.60q: %v, want an error with %q", arn, err, want)
		}
	}
}
