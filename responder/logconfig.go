package responder

import (
	"fmt"

	"github.com/metabind/metabind/responder/server"
)

// Request log settings: what log.requests takes, and log.sampleRate's
// default and bounds.
const (
	RequestsAll    = "all"
	RequestsNone   = "none"
	RequestsSample = "sample"

	DefaultSampleRate = 100
	MaxSampleRate     = 1000000
)

// LogConfig is the optional log section: which request lines the
// responder writes. Lines of requests answered 5xx are always written, and
// so is the audit line of every token minted ("token issued") and every
// warning, whatever requests says.
//
//	log:
//	  requests: sample   # all (default) | none | sample
//	  sampleRate: 100    # with sample: one request line in sampleRate; 1..1000000; default 100
type LogConfig struct {
	Requests   string `json:"requests,omitempty"`
	SampleRate int    `json:"sampleRate,omitempty"`
}

func (l *LogConfig) complete() error {
	switch l.Requests {
	case "":
		l.Requests = RequestsAll
	case RequestsAll, RequestsNone, RequestsSample:
	default:
		return fmt.Errorf("log.requests: %q is not one of %s, %s, %s", l.Requests, RequestsAll, RequestsNone, RequestsSample)
	}
	if l.Requests != RequestsSample {
		if l.SampleRate != 0 {
			return fmt.Errorf("log.sampleRate: needs requests: %s", RequestsSample)
		}
		return nil
	}
	if l.SampleRate == 0 {
		l.SampleRate = DefaultSampleRate
	}
	if l.SampleRate < 1 || l.SampleRate > MaxSampleRate {
		return fmt.Errorf("log.sampleRate: %d is outside 1..%d", l.SampleRate, MaxSampleRate)
	}
	return nil
}

// requestLog is l as the server takes it.
func (l *LogConfig) requestLog() server.RequestLog {
	return server.RequestLog{None: l.Requests == RequestsNone, SampleRate: l.SampleRate}
}
