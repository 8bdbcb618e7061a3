package aws

import "testing"

// Every path maps to one of a few endpoints; the role's name is never part
// of it.
func TestEndpoints(t *testing.T) {
	for path, want := range map[string]string{
		"/latest/api/token": "session",
		"/latest/meta-data/iam/security-credentials/my-role": "credentials",
		"/latest/meta-data/iam/security-credentials/":        "role",
		"/latest/meta-data/iam/security-credentials":         "role",
		"/latest/meta-data/iam/info":                         "role",
		"/latest/dynamic/instance-identity/document":         "identity",
		"/latest/meta-data/placement/region":                 "instance",
		"/latest/meta-data":                                  "instance",
		"/latest/user-data":                                  "other",
		"/latest":                                            "other",
	} {
		if got := IMDSEndpoint(path); got != want {
			t.Errorf("IMDSEndpoint(%q) = %q, want %q", path, got, want)
		}
	}
	for path, want := range map[string]string{"/v1/credentials": "credentials", "/v1/credentials/x": "other"} {
		if got := ContainerEndpoint(path); got != want {
			t.Errorf("ContainerEndpoint(%q) = %q, want %q", path, got, want)
		}
	}
}
