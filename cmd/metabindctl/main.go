// Command metabindctl lets node admins look at metabind's state.
//
//	metabindctl [--state-dir DIR] bindings list [-o table|json]
//	metabindctl [--state-dir DIR] bindings get IP [-o table|json]
//	metabindctl [--state-dir DIR] keys list [-o table|json]
//	metabindctl [--state-dir DIR] keys rotate
//	metabindctl [--state-dir DIR] keys jwks
//	metabindctl [--state-dir DIR] gc [--dry-run]
//	metabindctl install [--cni-conf-dir DIR] [--cni-bin-dir DIR] [--plugin-binary PATH] [--plugin-conf FILE] [--watch | --check] [--force]
//	metabindctl uninstall [--cni-conf-dir DIR] [--cni-bin-dir DIR]
//	metabindctl doctor [--state-dir DIR] [--cni-conf-dir DIR] [--cni-bin-dir DIR] [--config FILE] [--admin-address ADDR] [--pod-netns PATH] [--pod-resolv-conf FILE] [-o table|json]
//	metabindctl [--state-dir DIR] rules list [-o table|json]
//	metabindctl [--state-dir DIR] rules backend [--dry-run] [iptables|nftables|auto]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// readTimeout bounds the wait for the store. metabindctl takes the store's
// lock only for one read, so the plugin waits at most that long for it.
const readTimeout = 2 * time.Second

const usage = `usage: metabindctl [--state-dir DIR] COMMAND

Commands:
  bindings list [-o table|json]   every pod IP binding on this node
  bindings get IP [-o table|json] the binding of one IP
  keys list [-o table|json]       the issuer's signing keys: current, retired (still in the JWKS), expired
  keys rotate                     retire the signing key and make a new one; the responder follows by itself
  keys jwks                       print the issuer's JWKS (as served at /openid/v1/jwks), to upload where
                                  the node's issuer cannot be fetched (docs/GCP.md)
  gc [--dry-run]                  remove bindings whose netns is gone and rules with no binding, restore
                                  missing rules; --dry-run only reports
  install [--cni-conf-dir DIR] [--cni-bin-dir DIR] [--plugin-binary PATH] [--plugin-conf FILE] [--watch | --check] [--force]
                                  copy the metabind binary into the CNI bin dir, then chain it last into the
                                  conflist the runtime uses; --watch keeps it chained when the primary CNI
                                  rewrites its config; --check changes nothing and fails unless chained (a probe);
                                  --force chains behind a primary that bypasses netfilter
  uninstall [--cni-conf-dir DIR] [--cni-bin-dir DIR]
                                  remove metabind from the conflists (restoring the backup where nothing
                                  else changed), then its binary
  doctor [--cni-conf-dir DIR] [--cni-bin-dir DIR] [--config FILE] [--admin-address ADDR]
         [--pod-netns PATH] [--pod-resolv-conf FILE] [-o table|json]
                                  check the node's set-up (plugin, conflist, rules, responder, keys,
                                  Kubernetes credential, a pod's DNS) with a fix for each failure;
                                  exits non-zero when a check fails
  rules list [-o table|json]      the per-pod rules (iptables rules or nftables elements) with the binding
                                  each belongs to, rules without a binding (ORPHAN) and bindings without
                                  rules (MISSING)
  rules backend [--dry-run] [B]   the redirect backend the node runs; with B (iptables, nftables, auto),
                                  switch the node to it: B's rules in for every binding, the other's out,
                                  recorded (after a rollback to a release without nftables: iptables)

Flags:
`

// errUsage marks errors that should print the usage text.
var errUsage = errors.New("usage")

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "metabindctl:", err)
		}
		os.Exit(1)
	}
}

func run(argv []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("metabindctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", "/var/lib/metabind", "metabind state directory (the plugin's stateDir)")
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(argv); err != nil {
		return errUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return errUsage
	}
	switch rest[0] {
	case "bindings":
		return runBindings(*stateDir, rest[1:], stdout, stderr)
	case "gc":
		return runGC(*stateDir, rest[1:], stdout, stderr)
	case "keys":
		return runKeys(*stateDir, rest[1:], stdout, stderr, time.Now())
	case "doctor":
		return runDoctor(*stateDir, rest[1:], stdout, stderr)
	case "rules":
		return runRules(*stateDir, rest[1:], stdout, stderr)
	case "install":
		return runInstall(rest[1:], stdout, stderr)
	case "uninstall":
		return runUninstall(rest[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "metabindctl: unknown command %q\n", rest[0])
		fs.Usage()
		return errUsage
	}
}
