package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/metabind/metabind/plugin"
	"github.com/metabind/metabind/plugin/redirect"
	"github.com/metabind/metabind/store"
)

// gcLockTimeout bounds gc's wait for the store, as the plugin's.
const gcLockTimeout = 3 * time.Second

// runGC is the admin's garbage collection: it works from what the node can
// see (does the pod's netns still exist?) rather than from a runtime's list
// of valid attachments, which only the CNI GC verb gets.
func runGC(stateDir string, argv []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dryRun := fs.Bool("dry-run", false, "report what gc would do, change nothing")
	metadata := fs.String("metadata-address", plugin.DefaultMetadataAddress, "the netconf's metadataAddress")
	responder := fs.String("responder-address", plugin.DefaultResponderAddress, "the netconf's responderAddress")
	metadata6 := fs.String("metadata-address6", "", "the netconf's metadataAddress6, if set (dual stack)")
	responder6 := fs.String("responder-address6", "", "the netconf's responderAddress6, if set")
	if err := fs.Parse(argv); err != nil {
		return errUsage
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("gc takes no arguments, got %q", fs.Args())
	}
	// The same parsing and checks as the plugin's netconf.
	netconf, err := json.Marshal(map[string]string{
		"cniVersion": "1.1.0", "name": "metabindctl", "type": "metabind", "stateDir": stateDir,
		"metadataAddress": *metadata, "responderAddress": *responder,
		"metadataAddress6": *metadata6, "responderAddress6": *responder6,
	})
	if err != nil {
		return err
	}
	conf, err := plugin.ParseConfig(netconf)
	if err != nil {
		return err
	}
	rds := plugin.NewRedirects(conf, redirect.New)
	rep, err := plugin.Reconcile(conf.StateDir, gcLockTimeout, rds, netnsExists, *dryRun, time.Now())
	if err != nil {
		return err
	}
	verb := map[bool]string{true: "would remove", false: "removed"}[*dryRun]
	restore := map[bool]string{true: "would restore", false: "restored"}[*dryRun]
	for _, b := range rep.RemovedBindings {
		fmt.Fprintf(stdout, "%s binding %s %s/%s (container %s): netns %s is gone\n", verb, b.IP, b.Namespace, b.Pod, short(b.ContainerID), b.NetNS)
	}
	for _, o := range rep.RemovedRules {
		fmt.Fprintf(stdout, "%s rule with no binding: %s\n", verb, o)
	}
	for _, b := range rep.RestoredRules {
		fmt.Fprintf(stdout, "%s the rules of %s %s/%s on %s\n", restore, b.IP, b.Namespace, b.Pod, b.HostInterface)
	}
	fmt.Fprintf(stdout, "gc: %d bindings and %d rules %s, %d bindings' rules %s\n",
		len(rep.RemovedBindings), len(rep.RemovedRules), verb, len(rep.RestoredRules), restore)
	return errors.Join(rep.Errors...)
}

// netnsExists keeps a binding while its pod's netns is there. A binding
// that names no netns is kept: nothing shows it is gone.
func netnsExists(b store.Binding) bool {
	if b.NetNS == "" {
		return true
	}
	_, err := os.Stat(b.NetNS)
	return !errors.Is(err, os.ErrNotExist)
}
