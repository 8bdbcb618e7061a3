package main

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metabind/metabind/responder/server"
)

type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogBatch: request lines are held and written together; any other
// record is written at once, after the request lines before it; nothing
// is held longer than the flush interval or kept past Close.
func TestLogBatch(t *testing.T) {
	out := &lockedBuffer{}
	batch := newLogBatch(out)
	log := slog.New(batchingHandler{Handler: slog.NewJSONHandler(batch, nil), batch: batch}).With("component", "test")

	for range 3 {
		log.Info(server.RequestLogMessage, "path", "/a")
	}
	if got := out.String(); got != "" {
		// The timer may have fired already on a slow machine; then all
		// three are out, in one write.
		if strings.Count(got, "\n") != 3 || out.writes != 1 {
			t.Fatalf("request lines written one by one: %q", got)
		}
	}
	log.Info("token issued", "jti", "j1")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[3], `"msg":"token issued"`) || !strings.Contains(lines[0], `"msg":"request"`) {
		t.Fatalf("after an audit line the log is %q", lines)
	}

	log.Info(server.RequestLogMessage, "path", "/b")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), `"path":"/b"`) {
		if time.Now().After(deadline) {
			t.Fatal("a request line was held for 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	log.Warn(server.RequestLogMessage, "path", "/c") // warnings are not held
	if !strings.Contains(out.String(), `"path":"/c"`) {
		t.Error("a warning request line was held")
	}
	log.Info(server.RequestLogMessage, "path", "/d")
	batch.Close()
	if !strings.Contains(out.String(), `"path":"/d"`) {
		t.Error("Close did not flush")
	}

	// A line longer than the batch goes out whole.
	out2 := &lockedBuffer{}
	b2 := newLogBatch(out2)
	defer b2.Close()
	long := strings.Repeat("x", logBatchBytes+10) + "\n"
	b2.Write([]byte("short\n"))
	b2.Write([]byte(long))
	if out2.String() != "short\n"+long {
		t.Error("a long line was cut or reordered")
	}
}
