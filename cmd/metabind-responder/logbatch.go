package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/metabind/metabind/responder/server"
)

// Request log batching. Every request logs a line; at thousands of
// requests a second, a write(2) per line is a tenth of the responder's CPU.
// So request lines are gathered and written together, at most
// logFlushInterval late and logBatchBytes at a time; every other record
// (audit lines, warnings, errors) is written at once, with the request
// lines before it, so the log keeps its order.
const (
	logFlushInterval = 100 * time.Millisecond
	logBatchBytes    = 32 << 10
)

// logBatch gathers log output for one writer.
type logBatch struct {
	mu   sync.Mutex
	out  io.Writer
	buf  []byte
	stop chan struct{}
	done chan struct{}
}

// newLogBatch writes to out; Close flushes and stops its timer.
func newLogBatch(out io.Writer) *logBatch {
	b := &logBatch{out: out, buf: make([]byte, 0, logBatchBytes), stop: make(chan struct{}), done: make(chan struct{})}
	go b.flushEvery(logFlushInterval)
	return b
}

// Write keeps p until the next flush, flushing first when p would not fit.
func (b *logBatch) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > logBatchBytes {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > logBatchBytes {
			return b.out.Write(p)
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes what is kept.
func (b *logBatch) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *logBatch) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.out.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

func (b *logBatch) flushEvery(d time.Duration) {
	defer close(b.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.Flush()
		case <-b.stop:
			b.Flush()
			return
		}
	}
}

// Close flushes and stops the timer; later writes are kept until a Flush.
func (b *logBatch) Close() error {
	close(b.stop)
	<-b.done
	return nil
}

// batchingHandler is a handler writing into a logBatch that flushes after
// every record except the request lines below warning level.
type batchingHandler struct {
	slog.Handler
	batch *logBatch
}

func (h batchingHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Message != server.RequestLogMessage || r.Level >= slog.LevelWarn {
		if ferr := h.batch.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

func (h batchingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return batchingHandler{Handler: h.Handler.WithAttrs(attrs), batch: h.batch}
}

func (h batchingHandler) WithGroup(name string) slog.Handler {
	return batchingHandler{Handler: h.Handler.WithGroup(name), batch: h.batch}
}
