package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/metabind/metabind/installer"
)

// installFlags are the flags install and uninstall share.
func installFlags(name string, stderr io.Writer) (*flag.FlagSet, *installer.Options) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &installer.Options{}
	fs.StringVar(&o.ConfDir, "cni-conf-dir", "/etc/cni/net.d", "the CNI config dir the container runtime reads")
	fs.StringVar(&o.BinDir, "cni-bin-dir", "/opt/cni/bin", "the CNI plugin dir the container runtime runs plugins from")
	return fs, o
}

// runInstall copies the plugin into the CNI bin dir and chains it into the
// runtime's conflist; with --watch it keeps doing so until SIGTERM/SIGINT.
func runInstall(argv []string, stdout, stderr io.Writer) error {
	fs, o := installFlags("install", stderr)
	fs.StringVar(&o.PluginBinary, "plugin-binary", defaultPluginBinary(), "the metabind binary to copy")
	pluginConf := fs.String("plugin-conf", "", `a JSON file holding metabind's conflist entry (default {"type":"metabind"})`)
	watch := fs.Bool("watch", false, "stay running and re-chain whenever the primary CNI rewrites its config")
	check := fs.Bool("check", false, "change nothing; exit 1, saying why, unless the binary is in place and metabind chained last (a readiness probe)")
	fs.BoolVar(&o.Force, "force", false, "chain even behind a primary CNI whose datapath bypasses netfilter")
	if err := fs.Parse(argv); err != nil {
		return errUsage
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("install takes no arguments, got %q", fs.Args())
	}
	if *pluginConf != "" {
		b, err := os.ReadFile(*pluginConf)
		if err != nil {
			return err
		}
		if !json.Valid(b) {
			return fmt.Errorf("--plugin-conf %s is not valid JSON", *pluginConf)
		}
		o.PluginConf = b
	}
	if *check {
		if err := installer.Check(*o); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "metabind is chained last in the runtime's conflist in %s\n", o.ConfDir)
		return nil
	}
	if *watch {
		o.Log = slog.New(slog.NewTextHandler(stderr, nil))
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		return installer.Watch(ctx, *o)
	}
	r, err := installer.Install(*o)
	printReport(stdout, stderr, r)
	return err
}

// runUninstall removes metabind from the conflists, then its binary.
func runUninstall(argv []string, stdout, stderr io.Writer) error {
	fs, o := installFlags("uninstall", stderr)
	if err := fs.Parse(argv); err != nil {
		return errUsage
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("uninstall takes no arguments, got %q", fs.Args())
	}
	r, err := installer.Uninstall(*o)
	printReport(stdout, stderr, r)
	return err
}

// printReport prints a line an action, warnings to stderr.
func printReport(stdout, stderr io.Writer, r installer.Report) {
	for _, l := range r.Lines {
		w := stdout
		if strings.HasPrefix(l, "warning:") {
			w = stderr
		}
		fmt.Fprintln(w, l)
	}
}

// defaultPluginBinary is metabind next to metabindctl, as the image lays
// them out (/usr/local/bin/{metabind,metabind-responder,metabindctl}).
func defaultPluginBinary() string {
	self, err := os.Executable()
	if err != nil {
		return "metabind"
	}
	return filepath.Join(filepath.Dir(self), "metabind")
}
