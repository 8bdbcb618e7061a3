package responder

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRateLimitedHandler(t *testing.T) {
	var logBuf strings.Builder
	cfgText := testConfig + "limits: {requestsPerSecond: 1, burst: 3}\n"
	cfg, err := ParseConfig([]byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	h := newHandlerFromConfig(t, cfg, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	clock := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	h.setClock(func() time.Time { return clock })

	const p = "/computeMetadata/v1/project/project-id"
	for _, tc := range []struct {
		name   string
		ip     string
		target string
		header map[string]string
		status int
		retry  string
	}{
		{"1st", apiIP, p, flavor, 200, ""},
		{"2nd", apiIP, p, flavor, 200, ""},
		{"3rd", apiIP, p, flavor, 200, ""},
		{"over the burst", apiIP, p, flavor, 429, "1"},
		{"again", apiIP, p, flavor, 429, "1"},
		{"another pod is not affected", workerIP, p, flavor, 200, ""},
		{"an unbound caller still gets 404", unboundIP, p, flavor, 404, ""},
		{"the JWKS is not limited", apiIP, "/openid/v1/jwks", nil, 200, ""},
		{"nor the probe", apiIP, "/", nil, 200, ""},
		{"nor refusals before the caller is known", apiIP, p, nil, 403, ""},
	} {
		rec := do(t, h, "GET", tc.target, tc.ip, tc.header)
		if rec.Code != tc.status || rec.Header().Get("Retry-After") != tc.retry {
			t.Errorf("%s: status %d Retry-After %q, want %d %q", tc.name, rec.Code, rec.Header().Get("Retry-After"), tc.status, tc.retry)
		}
		if tc.status == 429 && rec.Header().Get("Metadata-Flavor") != "Google" {
			t.Errorf("%s: 429 without Metadata-Flavor", tc.name)
		}
	}
	clock = clock.Add(time.Second)
	if rec := do(t, h, "GET", p, apiIP, flavor); rec.Code != 200 {
		t.Errorf("after a second: status %d, want 200", rec.Code)
	}

	// One warning per caller and minute, not one line per refused request.
	if n := strings.Count(logBuf.String(), `msg="caller rate limited"`); n != 1 {
		t.Errorf("%d rate-limit warnings, want 1:\n%s", n, logBuf.String())
	}
	if strings.Contains(logBuf.String(), "status=429") {
		t.Errorf("refused requests logged at info level:\n%s", logBuf.String())
	}
	if !strings.Contains(logBuf.String(), fmt.Sprintf("caller=%s namespace=payments pod=api-1 refusedSinceLastWarning=1", apiIP)) {
		t.Errorf("warning does not name the caller:\n%s", logBuf.String())
	}
}
