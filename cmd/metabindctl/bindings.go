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

	all, err := store.ReadAll(stateDir, readTimeout)
	if err != nil {
		return err
	}
	shown := all
	if want.IsValid() {
		shown = nil
		for _, b := range all {
			if b.IP == want {
				shown = append(shown, b)
			}
		}
		if len(shown) == 0 {
			return fmt.Errorf("no binding for %s", want)
		}
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if want.IsValid() {
			return enc.Encode(shown[0])
		}
		if shown == nil {
			shown = []store.Binding{}
		}
		return enc.Encode(shown)
	}
	return printTable(stdout, shown, time.Now())
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
