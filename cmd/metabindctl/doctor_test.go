package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/metabind/metabind/doctor"
)

// report prints the table or JSON and fails exactly when a check failed:
// the exit code a node admin's script acts on.
func TestDoctorReport(t *testing.T) {
	healthy := []doctor.Result{
		{Check: "plugin-binary", Status: doctor.OK, Detail: "answers VERSION"},
		{Check: "pod-dns", Status: doctor.Skipped, Detail: "no --pod-netns"},
		{Check: "clock-skew", Status: doctor.Warn, Detail: "6s off", Fix: "synchronise the clock"},
	}
	faulty := append(healthy[:2:2], doctor.Result{Check: "signing-keys", Status: doctor.Fail, Detail: "mode 0644", Fix: "chmod 600 /k"})
	for _, tc := range []struct {
		name    string
		results []doctor.Result
		output  string
		fails   bool
	}{
		{"healthy table", healthy, "table", false},
		{"healthy json", healthy, "json", false},
		{"faulty table", faulty, "table", true},
		{"faulty json", faulty, "json", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := report(&out, tc.results, tc.output)
			if (err != nil) != tc.fails {
				t.Fatalf("report: %v, want failure %v", err, tc.fails)
			}
			if tc.fails && !strings.Contains(err.Error(), "1 of 3 checks failed") {
				t.Errorf("error %q", err)
			}
			if tc.output == "json" {
				var got []doctor.Result
				if err := json.Unmarshal(out.Bytes(), &got); err != nil || len(got) != 3 {
					t.Fatalf("JSON %v:\n%s", err, out.String())
				}
			} else if !strings.HasPrefix(out.String(), "CHECK") || strings.Count(out.String(), "\n") != 4 {
				t.Fatalf("table:\n%s", out.String())
			}
		})
	}
}

func TestDoctorRefusesBadArguments(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"doctor", "-o", "yaml"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "want table or json") {
		t.Errorf("doctor -o yaml: %v", err)
	}
	if err := run([]string{"doctor", "extra"}, &out, &errOut); err == nil {
		t.Error("doctor extra: want an error")
	}
	if err := run([]string{"rules", "show"}, &out, &errOut); err == nil {
		t.Error("rules show: want an error")
	}
}
