package gce

import "testing"

// Every path maps to one of a few endpoints; the account's name is never
// part of it.
func TestEndpoint(t *testing.T) {
	sa := serviceAccountsPath
	for path, want := range map[string]string{
		sa + "/default/token":                       "token",
		sa + "/api@p.iam.gserviceaccount.com/token": "token",
		sa + "/default/identity":                    "identity",
		sa + "/whatever/email":                      "email",
		sa + "/default/scopes":                      "instance",
		sa + "/default/token/extra":                 "instance",
		sa:                                          "instance",
		v1Path + "/instance/zone":                   "instance",
		v1Path + "/project/project-id":              "project",
		v1Path + "/project":                         "project",
		v1Path + "/projectX":                        "other",
		v1Path:                                      "other",
		"/computeMetadataX/v1/project":              "other",
	} {
		if got := Endpoint(path); got != want {
			t.Errorf("Endpoint(%q) = %q, want %q", path, got, want)
		}
	}
}
