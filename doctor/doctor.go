// Package doctor checks a node's metabind set-up from the node, the way an
// admin would by hand: the plugin binary and the conflist the runtime uses,
// the chains and per-pod rules against the binding store, the responder and
// its readiness, the signing key files, the Kubernetes credential and the
// cluster DNS as a pod sees it. Every check only reads; each failure comes
// with the command or change that fixes it.
package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is a check's outcome.
type Status string

const (
	OK      Status = "ok"
	Warn    Status = "warn"
	Fail    Status = "FAIL"
	Skipped Status = "skipped" // its input is not configured; Detail says which
)

// Result is one check's outcome, in words an admin can act on.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Options say where the node keeps what the checks read.
type Options struct {
	StateDir     string // the plugin's stateDir and the responder's --state-dir
	CNIConfDir   string
	CNIBinDir    string
	ConfigFile   string // the responder's configuration
	AdminAddress string // the responder's --admin-listen
	// PodNetNS is a pod's network namespace, for the DNS check; "" skips it.
	PodNetNS string
	// PodResolvConf names the pod's nameserver; "" is the pod's own
	// (/proc/PID/root/etc/resolv.conf) when PodNetNS is /proc/PID/ns/net,
	// else the node's /etc/resolv.conf.
	PodResolvConf string
	// Timeout bounds each network check and each wait for a lock.
	Timeout time.Duration
}

// DefaultTimeout is Options.Timeout when zero.
const DefaultTimeout = 3 * time.Second

// check is one line of the report: its name and how to work it out.
type check struct {
	name string
	run  func(context.Context, *node) Result
}

// checks are run in this order: what the runtime needs, then the rules,
// the responder, its keys and its credential, then a pod's view.
var checks = []check{
	{"plugin-binary", checkBinary},
	{"conflist", checkConflist},
	{"datapath", checkDatapath},
	{"store", checkStore},
	{"base-rules", checkBaseRules},
	{"pod-rules", checkPodRules},
	{"responder", checkResponder},
	{"readyz", checkReadyz},
	{"signing-keys", checkKeys},
	{"config", checkConfig},
	{"kubernetes-pods", checkKubePods},
	{"kubernetes-tokens", checkKubeTokens},
	{"clock-skew", checkClockSkew},
	{"pod-dns", checkDNS},
}

// Run runs every check, in order.
func Run(ctx context.Context, o Options) []Result {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	n := &node{Options: o}
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		r := c.run(ctx, n)
		r.Check = c.name
		out = append(out, r)
	}
	return out
}

// Failed reports whether any check failed.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// WriteTable prints the results as CHECK STATUS DETAIL FIX columns.
func WriteTable(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL\tFIX")
	for _, r := range rs {
		fix := r.Fix
		if fix == "" {
			fix = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Check, r.Status, oneLine(r.Detail), oneLine(fix))
	}
	return tw.Flush()
}

// WriteJSON prints the results as a JSON list.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rs)
}

// plural is "1 base", "2 bases".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func ok(format string, args ...any) Result {
	return Result{Status: OK, Detail: fmt.Sprintf(format, args...)}
}

func skipped(format string, args ...any) Result {
	return Result{Status: Skipped, Detail: fmt.Sprintf(format, args...)}
}

func failed(fix, format string, args ...any) Result {
	return Result{Status: Fail, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func warned(fix, format string, args ...any) Result {
	return Result{Status: Warn, Detail: fmt.Sprintf(format, args...), Fix: fix}
}
