package responder

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// logLines are the log's records by message.
func logLines(t *testing.T, buf *bytes.Buffer) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out[rec["msg"].(string)] = append(out[rec["msg"].(string)], rec)
	}
	return out
}

// log.requests: all writes every request line, none only those of 5xx
// answers, sample one in sampleRate (and every 5xx); the audit line of
// every token minted is written whatever it says.
func TestRequestLogSampling(t *testing.T) {
	const token = "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://aud.example/"
	for _, tc := range []struct {
		log          string
		requestLines int // of the 12 requests below that are not 5xx
		sampleRate   float64
	}{
		{"", 12, 0},
		{"log: {requests: all}", 12, 0},
		{"log: {requests: none}", 0, 0},
		{"log: {requests: sample, sampleRate: 4}", 3, 4},
		{"log: {requests: sample, sampleRate: 1}", 12, 0},
	} {
		t.Run(tc.log, func(t *testing.T) {
			var buf bytes.Buffer
			cfg := unlimited(parse(t, testConfig+tc.log+"\n"))
			h := newHandlerFromConfig(t, cfg, slog.New(slog.NewJSONHandler(&buf, nil)))
			for i := range 8 {
				do(t, h, "GET", token+string(rune('a'+i)), apiIP, flavor) // 8 tokens minted
			}
			for range 4 {
				do(t, h, "GET", "/computeMetadata/v1/", otherIP, flavor) // 404s
			}
			for range 2 {
				if rec := do(t, h, "GET", "/computeMetadata/v1/", brokenIP, flavor); rec.Code != 503 {
					t.Fatalf("broken store: %d", rec.Code)
				}
			}
			lines := logLines(t, &buf)
			if n := len(lines["token issued"]); n != 8 {
				t.Fatalf("%d audit lines, want 8", n)
			}
			ok, failed := 0, 0
			for _, l := range lines["request"] {
				if l["status"].(float64) >= 500 {
					failed++
					continue
				}
				ok++
				if got, _ := l["sampleRate"].(float64); got != tc.sampleRate {
					t.Fatalf("sampleRate %v, want %v: %v", got, tc.sampleRate, l)
				}
			}
			if ok != tc.requestLines || failed != 2 {
				t.Fatalf("%d request lines and %d of 5xx, want %d and 2", ok, failed, tc.requestLines)
			}
		})
	}
}

func TestLogConfigErrors(t *testing.T) {
	for _, tc := range []struct{ log, want string }{
		{"log: {requests: some}", "log.requests"},
		{"log: {sampleRate: 10}", "log.sampleRate: needs requests: sample"},
		{"log: {requests: sample, sampleRate: -1}", "log.sampleRate"},
		{"log: {requests: sample, sampleRate: 1000001}", "log.sampleRate"},
		{"log: {request: all}", "request"},
	} {
		if _, err := ParseConfig([]byte(testConfig + tc.log + "\n")); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.log, err, tc.want)
		}
	}
	cfg := parse(t, testConfig+"log: {requests: sample}\n")
	if cfg.Log.SampleRate != DefaultSampleRate {
		t.Fatalf("sampleRate default %d", cfg.Log.SampleRate)
	}
}
