package gcp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testProvider = "projects/123456789012/locations/global/workloadIdentityPools/test-pool/providers/test-provider"

func TestCompleteDefaults(t *testing.T) {
	c := Config{WorkloadIdentityProvider: testProvider}
	if err := c.Complete(); err != nil {
		t.Fatal(err)
	}
	want := Config{
		WorkloadIdentityProvider: testProvider,
		STSURL:                   "https://sts.googleapis.com/v1/token",
		IAMCredentialsURL:        "https://iamcredentials.googleapis.com/v1",
		Timeout:                  10 * time.Second,
	}
	if c != want {
		t.Fatalf("completed %+v, want %+v", c, want)
	}
	if got := c.Audience(); got != "//iam.googleapis.com/"+testProvider {
		t.Fatalf("Audience %q", got)
	}
	// A trailing slash on the IAM URL is not doubled in the paths.
	c = Config{WorkloadIdentityProvider: testProvider, IAMCredentialsURL: "https://iam.example/v1/"}
	if err := c.Complete(); err != nil || c.IAMCredentialsURL != "https://iam.example/v1" {
		t.Fatalf("%v %q", err, c.IAMCredentialsURL)
	}
}

func TestCompleteRefuses(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // in the error
	}{
		{"no provider", Config{}, "workloadIdentityProvider: required"},
		{"project ID", Config{WorkloadIdentityProvider: "projects/my-project/locations/global/workloadIdentityPools/test-pool/providers/test-provider"},
			"workloadIdentityProvider: \"projects/my-project/locations/global/workloadIdentityPools/test-pool/providers/test-provider\": the project must be given by its number"},
		{"full name", Config{WorkloadIdentityProvider: "//iam.googleapis.com/" + testProvider}, "without the host"},
		{"https name", Config{WorkloadIdentityProvider: "https://iam.googleapis.com/" + testProvider}, "without the host"},
		{"location", Config{WorkloadIdentityProvider: "projects/1/locations/us-east1/workloadIdentityPools/test-pool/providers/test-provider"}, "location global only"},
		{"no provider part", Config{WorkloadIdentityProvider: "projects/1/locations/global/workloadIdentityPools/test-pool"}, "workloadIdentityProvider: "},
		{"short pool", Config{WorkloadIdentityProvider: "projects/1/locations/global/workloadIdentityPools/abc/providers/test-provider"}, "4 to 32"},
		{"upper case", Config{WorkloadIdentityProvider: "projects/1/locations/global/workloadIdentityPools/Test-Pool/providers/test-provider"}, "4 to 32"},
		{"trailing slash", Config{WorkloadIdentityProvider: testProvider + "/"}, "workloadIdentityProvider: "},
		{"http STS", Config{WorkloadIdentityProvider: testProvider, STSURL: "http://sts.example/v1/token"}, "stsURL: \"http://sts.example/v1/token\": must be an https URL"},
		{"STS query", Config{WorkloadIdentityProvider: testProvider, STSURL: "https://sts.example/v1/token?x=1"}, "stsURL: "},
		{"http IAM", Config{WorkloadIdentityProvider: testProvider, IAMCredentialsURL: "http://iam.example/v1"}, "iamCredentialsURL: "},
		{"IAM no host", Config{WorkloadIdentityProvider: testProvider, IAMCredentialsURL: "https:///v1"}, "iamCredentialsURL: "},
		{"CA missing", Config{WorkloadIdentityProvider: testProvider, CAFile: filepath.Join(dir, "missing.pem")}, "caFile: "},
		{"CA not PEM", Config{WorkloadIdentityProvider: testProvider, CAFile: notPEM}, "caFile: " + notPEM + ": no PEM certificate"},
		{"negative timeout", Config{WorkloadIdentityProvider: testProvider, Timeout: -time.Second}, "timeout: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			err := cfg.Complete()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Complete: %v, want an error with %q", err, tc.want)
			}
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}
