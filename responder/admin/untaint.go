package admin

import (
	"context"
	"log/slog"
	"time"
)

// Bounds of RemoveTaintWhenReady's waits between attempts to remove the
// taint: doubling from the first to the last.
const (
	firstRetry = time.Second
	lastRetry  = time.Minute
)

// RemoveTaintWhenReady waits until every check first passes (looking every
// poll), then calls remove until it succeeds, backing off between failed
// attempts, or until ctx ends. remove reports whether it removed the taint
// (false: it was not there). Readiness is not looked at again: the taint
// only keeps pods off a node whose agent never got ready.
func RemoveTaintWhenReady(ctx context.Context, checks []Check, poll time.Duration, remove func(context.Context) (bool, error), log *slog.Logger) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		if _, ready := RunChecks(checks); ready {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	wait := firstRetry
	for {
		removed, err := remove(ctx)
		if err == nil {
			if removed {
				log.Info("ready: removed the startup taint from the node")
			} else {
				log.Info("ready: the node has no startup taint to remove")
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("ready, but cannot remove the startup taint; retrying", "retryIn", wait.String(), "error", err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, lastRetry)
	}
}
