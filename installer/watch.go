package installer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

const (
	// debounce lets a burst of events (a CNI agent writing a temp file and
	// renaming it) settle into one re-chain.
	debounce = 100 * time.Millisecond
	// recheck is the safety net for events the watch misses.
	recheck = 30 * time.Second
)

// Watch installs, then re-installs whenever the conf dir or the binary
// changes: when the primary CNI rewrites its config without metabind, a new
// lexically first config appears, or the binary is deleted. It watches the
// directories, not the files, since CNI agents replace files by rename. It
// returns nil when ctx ends; failed installs are logged and retried.
func Watch(ctx context.Context, o Options) error {
	log := o.logger()
	if _, err := entry(o.PluginConf); err != nil {
		return err
	}
	for _, dir := range []string{o.ConfDir, o.BinDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	for _, dir := range []string{o.ConfDir, o.BinDir} {
		if err := w.Add(dir); err != nil {
			return err
		}
	}

	install := func(why string) {
		r, err := Install(o)
		switch {
		case errors.Is(err, ErrNoConfig):
			log.Info("waiting for the primary CNI's config", "err", err)
		case err != nil:
			log.Error("install failed; retrying on the next change", "err", err)
		case r.Changed:
			log.Info("re-chained metabind", "trigger", why, "actions", r.Lines)
		}
	}
	install("start")

	settle := time.NewTimer(debounce)
	settle.Stop()
	tick := time.NewTicker(recheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("fsnotify: event channel closed")
			}
			if matters(o, ev) {
				settle.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("fsnotify: error channel closed")
			}
			log.Warn("fsnotify", "err", err) // an overflow loses events: re-check
			settle.Reset(debounce)
		case <-settle.C:
			install("change")
		case <-tick.C:
			install("periodic check")
		}
	}
}

// matters reports whether ev touches a file Install looks at: a config the
// runtime loads, or the metabind binary.
func matters(o Options, ev fsnotify.Event) bool {
	dir, name := filepath.Split(ev.Name)
	switch filepath.Clean(dir) {
	case filepath.Clean(o.ConfDir):
		return slices.Contains(confExtensions, filepath.Ext(name))
	case filepath.Clean(o.BinDir):
		return name == pluginType
	}
	return false
}
