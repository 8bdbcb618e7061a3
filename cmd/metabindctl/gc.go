package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
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
	if err := fs.Parse(argv); err != nil {
		return errUsage
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("gc takes no arguments, got %q", fs.Args())
	}
	meta, err := netip.ParseAddrPort(*metadata)
	if err != nil {
		return fmt.Errorf("--metadata-address: %w", err)
	}
	resp, err := netip.ParseAddrPort(*responder)
	if err != nil {
		return fmt.Errorf("--responder-address: %w", err)
	}
	rd, err := redirect.New(meta, resp)
	if err != nil {
		return err
	}
	rep, err := plugin.Reconcile(stateDir, gcLockTimeout, rd, netnsExists, *dryRun, time.Now())
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
