package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/metabind/metabind/plugin"
	"github.com/metabind/metabind/reconcile"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// gcLockTimeout bounds gc's wait for the pod changes in flight.
const gcLockTimeout = 10 * time.Second

// runGC is the admin's garbage collection: it works from what the node can
// see (does the pod's netns still exist?) rather than from a runtime's list
// of valid attachments, which only the CNI GC verb gets.
func runGC(stateDir string, argv []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dryRun := fs.Bool("dry-run", false, "report what gc would do, change nothing")
	force := fs.Bool("force", false, "remove the bindings even when that is every binding on the node")
	metadata := fs.String("metadata-address", "", "the netconf's metadataAddress (default: every address the plugin recorded)")
	responder := fs.String("responder-address", plugin.DefaultResponderAddress, "the netconf's responderAddress, with --metadata-address")
	metadata6 := fs.String("metadata-address6", "", "the netconf's metadataAddress6, if set (dual stack)")
	responder6 := fs.String("responder-address6", "", "the netconf's responderAddress6, if set")
	if err := fs.Parse(argv); err != nil {
		return errUsage
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("gc takes no arguments, got %q", fs.Args())
	}
	rds, err := gcRedirects(stateDir, *metadata, *responder, *metadata6, *responder6)
	if err != nil {
		return err
	}
	rep, err := reconcile.Run(reconcile.Options{
		StateDir: stateDir, LockTimeout: gcLockTimeout, Redirects: rds,
		Keep: netnsExists, RefuseAll: !*force, DryRun: *dryRun,
	})
	if errors.Is(err, reconcile.ErrAll) {
		return fmt.Errorf("%w; if metabindctl runs in a container, give it the host's /var/run/netns (and /proc for /proc/PID/ns paths); if every pod on this node is really gone, run again with --force", err)
	}
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
	for _, d := range rep.BaseRepairs {
		fmt.Fprintf(stdout, "%s base: %s\n", map[bool]string{true: "would repair", false: "repaired"}[*dryRun], d)
	}
	fmt.Fprintf(stdout, "gc: %d bindings and %d rules %s, %d bindings' rules %s\n",
		len(rep.RemovedBindings), len(rep.RemovedRules), verb, len(rep.RestoredRules), restore)
	return errors.Join(rep.Errors...)
}

// gcRedirects are the bases gc keeps whole: the addresses given, checked
// as the plugin checks its netconf, or else every base the plugin recorded
// (the defaults on a store that has none yet). Each runs the backend
// recorded for it: gc never switches a node's backend (rules backend does).
func gcRedirects(stateDir, metadata, responder, metadata6, responder6 string) ([]redirect.Backend, error) {
	recorded, err := store.ReadBases(stateDir, readTimeout)
	if err != nil {
		return nil, err
	}
	bases := recorded // they keep their extra addresses
	if metadata != "" || metadata6 != "" || len(recorded) == 0 {
		if metadata == "" && metadata6 == "" {
			metadata = plugin.DefaultMetadataAddress
		}
		netconf, err := json.Marshal(map[string]string{
			"cniVersion": "1.1.0", "name": "metabindctl", "type": "metabind", "stateDir": stateDir,
			"metadataAddress": metadata, "responderAddress": responder,
			"metadataAddress6": metadata6, "responderAddress6": responder6,
		})
		if err != nil {
			return nil, err
		}
		conf, err := plugin.ParseConfig(netconf)
		if err != nil {
			return nil, err
		}
		bases = []store.Base{givenBase(recorded, conf.Metadata, conf.Responder, func() string { return presentBackend(conf.Metadata, conf.Responder) })}
		if conf.Metadata6.IsValid() {
			bases = append(bases, givenBase(recorded, conf.Metadata6, conf.Responder6, func() string { return presentBackend(conf.Metadata6, conf.Responder6) }))
		}
	}
	var out []redirect.Backend
	for _, b := range bases {
		rd, err := redirect.ForBase(b)
		if err != nil {
			return nil, err
		}
		out = append(out, rd)
	}
	return out, nil
}

// givenBase is the base of an address given on the command line, with the
// backend recorded for the address; with none recorded (a store from
// before base records, or one moved aside), the one whose objects are on
// the node (onNode), so gc does not switch it unrecorded; else the
// plugin's default, resolved as the plugin resolves it.
func givenBase(recorded []store.Base, metadata, responder netip.AddrPort, onNode func() string) store.Base {
	backend := ""
	for _, b := range recorded {
		if b.Metadata == metadata {
			backend = b.Backend
			if backend == "" {
				backend = redirect.BackendIPTables // recorded before backends had names
			}
			break
		}
	}
	if backend == "" {
		backend = onNode()
	}
	if backend == "" {
		backend = redirect.DefaultBackend
	}
	return store.Base{Metadata: metadata, Responder: responder, Backend: redirect.Resolve(backend)}
}

// presentBackend returns the one backend with objects on the node for
// metadata, or "" when none or both have.
func presentBackend(metadata, responder netip.AddrPort) string {
	var found []string
	for _, name := range []string{redirect.BackendIPTables, redirect.BackendNFTables} {
		mk, err := redirect.MakerFor(name)
		if err != nil {
			continue
		}
		rd, err := mk(metadata, responder)
		if err != nil {
			continue
		}
		if ok, err := rd.Present(); err == nil && ok {
			found = append(found, name)
		}
	}
	if len(found) == 1 {
		return found[0]
	}
	return ""
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
