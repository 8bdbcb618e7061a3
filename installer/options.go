package installer

import (
	"encoding/json"
	"log/slog"
)

// Options say where the runtime looks for CNI configs and binaries, and what
// to install there.
type Options struct {
	ConfDir, BinDir string
	PluginBinary    string          // the metabind binary to copy into BinDir (Install, Watch)
	PluginConf      json.RawMessage // metabind's entry in the conflist; nil = {"type":"metabind"}
	Force           bool            // chain behind a primary in bypassesNetfilter anyway
	Log             *slog.Logger    // nil = discard
}

func (o Options) logger() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

// Report lists what a call did, one line an action, as metabindctl prints it.
type Report struct {
	Lines   []string
	Changed bool // something on disk changed
}

func (r *Report) add(line string, changed bool) {
	r.Lines = append(r.Lines, line)
	r.Changed = r.Changed || changed
}
