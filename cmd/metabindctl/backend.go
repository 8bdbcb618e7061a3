package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/metabind/metabind/reconcile"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// runRulesBackend is "rules backend [iptables|nftables|auto]": without an
// argument it prints the backend each recorded base runs; with one it
// switches the node to it, as an ADD with that netconf backend would: the
// new backend's base goes in with every live binding's rules, then the
// other backend's objects go, and the switch is recorded, so the
// responder's repair loop keeps the node there. No binding is removed (gc
// does that), so it is safe to run where the pods' netns paths are not
// visible, such as in the agent's container.
func runRulesBackend(stateDir string, argv []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rules backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dryRun := fs.Bool("dry-run", false, "report what the switch would do, change nothing")
	if err := fs.Parse(argv); err != nil {
		return errUsage
	}
	if fs.NArg() > 1 { // flags after the backend: rules backend iptables --dry-run
		if err := fs.Parse(append(fs.Args()[1:], fs.Arg(0))); err != nil {
			return errUsage
		}
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("rules backend takes at most one backend, got %q", fs.Args())
	}
	bases, err := store.ReadBases(stateDir, readTimeout)
	if err != nil {
		return err
	}
	if len(bases) == 0 {
		return fmt.Errorf("no base recorded in %s: the plugin records its netconf's backend at its first ADD on the node", stateDir)
	}
	if fs.NArg() == 0 {
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "METADATA\tRESPONDER\tBACKEND\tRECORDED")
		for _, b := range bases {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", b.Metadata, b.Responder, backendOf(b), b.Recorded.Format(time.RFC3339))
		}
		return w.Flush()
	}
	want := fs.Arg(0)
	if _, err := redirect.MakerFor(want); err != nil {
		return err
	}
	want = redirect.Resolve(want)
	now := time.Now().UTC()
	var rds []redirect.Backend
	for i := range bases {
		bases[i].Backend, bases[i].Recorded = want, now
		rd, err := redirect.ForBase(bases[i])
		if err != nil {
			return err
		}
		rds = append(rds, rd)
	}
	rep, err := reconcile.Run(reconcile.Options{
		StateDir: stateDir, LockTimeout: gcLockTimeout, Redirects: rds, DryRun: *dryRun, Record: bases,
	})
	if err != nil {
		return err
	}
	for _, d := range rep.BaseRepairs {
		fmt.Fprintf(stdout, "%s: %s\n", map[bool]string{true: "would repair", false: "repaired"}[*dryRun], d)
	}
	switch {
	case *dryRun:
		fmt.Fprintf(stdout, "rules backend: would switch %d bases to %s\n", len(bases), want)
	case len(rep.Errors) > 0:
		// Run kept the old backend's objects and the records: the node
		// keeps a whole redirect, and the repair loop clears what of the
		// new one went in.
		fmt.Fprintf(stdout, "rules backend: not switched to %s: the node keeps the backend it records\n", want)
	default:
		fmt.Fprintf(stdout, "rules backend: the node's redirect is %s (%d bases recorded), %d bindings' rules put in\n", want, len(bases), len(rep.RestoredRules))
	}
	return errors.Join(rep.Errors...)
}

// backendOf is the backend a recorded base runs.
func backendOf(b store.Base) string {
	if b.Backend == "" {
		return redirect.BackendIPTables // recorded before backends had names
	}
	return b.Backend
}
