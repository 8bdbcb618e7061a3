package server

import (
	"log/slog"
	"net/http"
	"sync/atomic"
)

// RequestLog is which request lines (RequestLogMessage) a Handler writes.
// The zero value writes every one. Whatever it says, a request answered
// with a 5xx (the responder or its sources failing) is always logged, and
// so is everything else that is not a request line: the audit line of
// every token minted, warnings such as "caller rate limited".
type RequestLog struct {
	// None writes no request line but the 5xx ones.
	None bool
	// SampleRate, above 1, writes one request line in SampleRate (the
	// first, then every SampleRate-th), each carrying sampleRate so that
	// counts can be scaled back.
	SampleRate int
}

// requestSampler applies a RequestLog.
type requestSampler struct {
	RequestLog
	n atomic.Uint64 // request lines that could have been sampled
}

// keep reports whether the line of a request answered status is written,
// and the attribute it then carries, if any.
func (s *requestSampler) keep(status int) (bool, slog.Attr) {
	switch {
	case status >= http.StatusInternalServerError:
		return true, slog.Attr{}
	case s.None:
		return false, slog.Attr{}
	case s.SampleRate > 1:
		if (s.n.Add(1)-1)%uint64(s.SampleRate) != 0 {
			return false, slog.Attr{}
		}
		return true, slog.Int("sampleRate", s.SampleRate)
	}
	return true, slog.Attr{}
}
