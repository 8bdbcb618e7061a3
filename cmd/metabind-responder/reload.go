package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/metabind/metabind/responder"
)

// configPoll is how often the configuration file is looked at. A
// ConfigMap mount changes by swapping its ..data symlink, which a watch on
// the file's name misses and os.Stat, following the links, sees.
const configPoll = 2 * time.Second

// configFile is the configuration file as the command line names it.
type configFile struct {
	path     string
	nodeName string // --node-name: node.name when the file has none
}

// fileState is what the poll compares: the file the path resolves to
// (device, inode), its size and modification time.
type fileState struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func statFile(path string) (fileState, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileState{}, err
	}
	st := fileState{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), sys.Ino
	}
	return st, nil
}

// configWatch reloads live's configuration from f when it changes.
type configWatch struct {
	f    configFile
	live *responder.Live
	log  *slog.Logger
	seen fileState
	hash [sha256.Size]byte // of the content last tried, good or bad
}

// watchConfig reloads on every signal on hup, and when the file's content
// changes (looked at every configPoll), until ctx is done.
func watchConfig(ctx context.Context, f configFile, live *responder.Live, hup <-chan os.Signal, log *slog.Logger) {
	newConfigWatch(f, live, log).run(ctx, hup, configPoll)
}

// newConfigWatch takes the file as it is now for the one in force: it was
// read a moment ago, at start.
func newConfigWatch(f configFile, live *responder.Live, log *slog.Logger) *configWatch {
	w := &configWatch{f: f, live: live, log: log}
	w.seen, _ = statFile(f.path)
	if data, err := os.ReadFile(f.path); err == nil {
		w.hash = sha256.Sum256(data)
	}
	return w
}

func (w *configWatch) run(ctx context.Context, hup <-chan os.Signal, poll time.Duration) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			w.reload(ctx, "SIGHUP", true)
		case <-t.C:
			if st, err := statFile(w.f.path); err == nil && st != w.seen {
				w.seen = st
				w.reload(ctx, "file changed", false)
			}
		}
	}
}

// reload reads the file and puts it in force if it is valid and its
// content is new (or always, with force). Every outcome is logged; on any
// error the configuration in force stays.
func (w *configWatch) reload(ctx context.Context, why string, force bool) {
	log := w.log.With("trigger", why, "config", w.f.path)
	data, err := os.ReadFile(w.f.path)
	if err != nil {
		log.Error("configuration not reloaded: keeping the one in force", "error", err.Error())
		return
	}
	hash := sha256.Sum256(data)
	if !force && bytes.Equal(hash[:], w.hash[:]) {
		return // touched, not changed
	}
	w.hash = hash
	cfg, err := responder.ParseNodeConfig(data, w.f.nodeName)
	if err != nil {
		log.Error("configuration not reloaded: it is not valid; keeping the one in force", "error", err.Error())
		return
	}
	done, err := w.live.Reload(ctx, cfg)
	var restart *responder.RestartError
	switch {
	case errors.As(err, &restart):
		log.Error("configuration not reloaded: restart needed", "restartKeys", restart.Keys, "error", err.Error())
	case err != nil:
		log.Error("configuration not reloaded: keeping the one in force", "error", err.Error())
	case len(done.Changed) == 0:
		log.Info("configuration reloaded: nothing changed")
	default:
		log.Info("configuration reloaded", "changed", done.Changed, "tokenCacheKept", done.TokensKept, "podsWithChangedIdentity", done.Forgotten,
			"requestsPerSecond", *cfg.Limits.RequestsPerSecond, "burst", *cfg.Limits.Burst, "identities", len(cfg.Identities), "requestLog", cfg.Log.Requests)
	}
}
