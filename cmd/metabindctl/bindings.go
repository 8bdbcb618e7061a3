package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"text/tabwriter"
	"time"

	"github.com/metabind/metabind/store"
)

func runBindings(stateDir string, argv []string, stdout, stderr io.Writer) error {
	if len(argv) == 0 {
		return fmt.Errorf("bindings: want 'list' or 'get IP'")
	}
	verb := argv[0]
	fs := flag.NewFlagSet("bindings "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "table", "output format: table or json")
	positional, err := parseInterleaved(fs, argv[1:])
	if err != nil {
		return errUsage
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	var want netip.Addr
	switch verb {
	case "list":
		if len(positional) != 0 {
			return fmt.Errorf("bindings list takes no arguments, got %q", positional)
		}
	case "get":
		if len(positional) != 1 {
			return fmt.Errorf("bindings get takes one IP")
		}
		ip, err := netip.ParseAddr(positional[0])
		if err != nil {
			return fmt.Errorf("bindings get: %w", err)
		}
		want = ip.Unmap()
	default:
		return fmt.Errorf("bindings: unknown verb %q, want 'list' or 'get IP'", verb)
	}

	l, err := store.List(stateDir, readTimeout)
	if err != nil {
		return err
	}
	if want.IsValid() {
		return getBinding(stdout, l, want, *output)
	}
	if *output == "json" {
		shown := l.Bindings
		if shown == nil {
			shown = []store.Binding{}
		}
		err = encodeJSON(stdout, shown)
	} else {
		err = printTable(stdout, l.Bindings, time.Now())
	}
	// After the list, on stderr: JSON output stays a plain list of bindings.
	warnUnreadable(stderr, l.Unreadable)
	return err
}

func getBinding(stdout io.Writer, l store.Listing, want netip.Addr, output string) error {
	for _, b := range l.Bindings {
		if b.IP == want {
			if output == "json" {
				return encodeJSON(stdout, b)
			}
			return printTable(stdout, []store.Binding{b}, time.Now())
		}
	}
	for _, r := range l.Unreadable {
		if r.Key == want.String() {
			return fmt.Errorf("the binding record of %s could not be read (%v); see docs/OPERATIONS.md", want, r.Err)
		}
	}
	return fmt.Errorf("no binding for %s", want)
}

func encodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// warnUnreadable tells the admin which records the listing left out: their
// IPs are unanswered until rebound.
func warnUnreadable(w io.Writer, skipped []store.UnreadableRecord) {
	switch len(skipped) {
	case 0:
		return
	case 1:
		fmt.Fprintln(w, "metabindctl: warning: 1 binding record could not be read and is skipped (see docs/OPERATIONS.md):")
	default:
		fmt.Fprintf(w, "metabindctl: warning: %d binding records could not be read and are skipped (see docs/OPERATIONS.md):\n", len(skipped))
	}
	for _, r := range skipped {
		fmt.Fprintf(w, "  %s\n", r)
	}
}

func printTable(w io.Writer, bindings []store.Binding, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IP\tNAMESPACE\tPOD\tUID\tCONTAINER\tIFACE\tAGE")
	for _, b := range bindings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			b.IP, orNone(b.Namespace), orNone(b.Pod), orNone(b.PodUID), short(b.ContainerID), b.HostInterface, age(now.Sub(b.Created)))
	}
	return tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// short cuts a container ID to the 13 characters crictl and docker show.
func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

// age prints a duration the way kubectl does: 45s, 12m, 5h, 3d.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// parseInterleaved parses flags wherever they stand ("get IP -o json" as
// well as "get -o json IP"), as kubectl users expect, and returns the
// positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
