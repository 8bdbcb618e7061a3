package main

import (
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/metabind/metabind/doctor"
	"github.com/metabind/metabind/store"
)

// runRules is "rules list": the per-pod rules, each with its binding, the
// rules no binding owns and the bindings without their rules.
func runRules(stateDir string, argv []string, stdout, stderr io.Writer) error {
	if len(argv) > 0 && argv[0] == "backend" {
		return runRulesBackend(stateDir, argv[1:], stdout, stderr)
	}
	if len(argv) == 0 || argv[0] != "list" {
		return fmt.Errorf("rules: want 'list' or 'backend'")
	}
	fs := flag.NewFlagSet("rules list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(argv[1:]); err != nil {
		return errUsage
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("rules list takes no arguments, got %q", fs.Args())
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	p, err := doctor.ListPodRules(stateDir, readTimeout)
	if err != nil {
		return err
	}
	if *output == "json" {
		err = encodeJSON(stdout, rulesJSON(p))
	} else {
		err = printRules(stdout, p)
	}
	warnUnreadable(stderr, p.Unreadable)
	return err
}

// rulesJSON is the listing with empty lists as [], not null.
func rulesJSON(p doctor.PodRules) any {
	nonNil := func(b []store.Binding) []store.Binding {
		if b == nil {
			return []store.Binding{}
		}
		return b
	}
	rules := p.Rules
	if rules == nil {
		rules = []doctor.PodRule{}
	}
	return struct {
		Rules    []doctor.PodRule `json:"rules"`   // binding null: an orphan
		Missing  []store.Binding  `json:"missing"` // bindings without their rules
		Orphans  int              `json:"orphans"`
		Bindings int              `json:"bindings"`
	}{rules, nonNil(p.Missing), len(p.Orphans()), len(p.Bindings)}
}

func printRules(w io.Writer, p doctor.PodRules) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAMILY\tCHAIN\tIP\tIFACE\tCONTAINER\tPOD\tSTATUS")
	for _, r := range p.Rules {
		pod, status := "<none>", "ORPHAN: no binding"
		if b := r.Binding; b != nil {
			pod, status = orNone(b.Namespace)+"/"+orNone(b.Pod), "ok"
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%s/%s\t%s\t%s\n",
			r.Family, r.Rule.Table, r.Rule.Chain, r.Rule.IP, r.Rule.Interface, short(r.Rule.ContainerID), r.Rule.IfName, pod, status)
	}
	for _, b := range p.Missing {
		fmt.Fprintf(tw, "%s\t-\t%s\t%s\t%s/%s\t%s/%s\tMISSING: binding without its rules\n",
			map[bool]string{true: "IPv6", false: "IPv4"}[b.IP.Is6()], b.IP, b.HostInterface, short(b.ContainerID), b.IfName, orNone(b.Namespace), orNone(b.Pod))
	}
	fmt.Fprintf(tw, "\n%d rules, %d bindings: %d without a binding (ORPHAN), %d bindings without their rules (MISSING)\n",
		len(p.Rules), len(p.Bindings), len(p.Orphans()), len(p.Missing))
	return tw.Flush()
}
