package aws

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCompleteDefaults(t *testing.T) {
	c := Config{Region: "eu-west-3"}
	if err := c.Complete(); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Region:          "eu-west-3",
		STSURL:          "https://sts.eu-west-3.amazonaws.com",
		SessionDuration: time.Hour,
		Timeout:         10 * time.Second,
	}
	if c != want {
		t.Fatalf("completed %+v, want %+v", c, want)
	}
	for region, url := range map[string]string{
		"cn-north-1":     "https://sts.cn-north-1.amazonaws.com.cn",
		"us-gov-west-1":  "https://sts.us-gov-west-1.amazonaws.com",
		"ap-southeast-4": "https://sts.ap-southeast-4.amazonaws.com",
	} {
		c := Config{Region: region}
		if err := c.Complete(); err != nil || c.STSURL != url {
			t.Errorf("%s: %v, STS URL %q, want %q", region, err, c.STSURL, url)
		}
	}
	// Given values are kept; the bounds are accepted.
	for _, d := range []time.Duration{15 * time.Minute, 12 * time.Hour, 90 * time.Minute} {
		c := Config{Region: "us-east-1", STSURL: "https://127.0.0.1:8443/sts", SessionDuration: d, Timeout: time.Second}
		if err := c.Complete(); err != nil || c.SessionDuration != d || c.STSURL != "https://127.0.0.1:8443/sts" || c.Timeout != time.Second {
			t.Errorf("%v: %v %+v", d, err, c)
		}
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
		{"no region", Config{}, "region: required"},
		{"region upper case", Config{Region: "EU-WEST-3"}, `region: "EU-WEST-3" is not an AWS region name`},
		{"region no number", Config{Region: "eu-west"}, "region: "},
		{"availability zone", Config{Region: "eu-west-3a"}, "region: "},
		{"http STS", Config{Region: "eu-west-3", STSURL: "http://sts.example"}, `stsURL: "http://sts.example": must be an https URL`},
		{"STS query", Config{Region: "eu-west-3", STSURL: "https://sts.example/?Action=x"}, "stsURL: "},
		{"STS no host", Config{Region: "eu-west-3", STSURL: "https:///x"}, "stsURL: "},
		{"CA missing", Config{Region: "eu-west-3", CAFile: filepath.Join(dir, "missing.pem")}, "caFile: "},
		{"CA not PEM", Config{Region: "eu-west-3", CAFile: notPEM}, "caFile: " + notPEM + ": no PEM certificate"},
		{"session too short", Config{Region: "eu-west-3", SessionDuration: 14 * time.Minute}, "sessionDuration: 14m0s: must be 15m to 12h"},
		{"session too long", Config{Region: "eu-west-3", SessionDuration: 13 * time.Hour}, "sessionDuration: 13h0m0s: must be 15m to 12h"},
		{"session negative", Config{Region: "eu-west-3", SessionDuration: -time.Hour}, "sessionDuration: "},
		{"session fraction", Config{Region: "eu-west-3", SessionDuration: time.Hour + time.Millisecond}, "sessionDuration: 1h0m0.001s: whole seconds"},
		{"negative timeout", Config{Region: "eu-west-3", Timeout: -time.Second}, "timeout: "},
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
