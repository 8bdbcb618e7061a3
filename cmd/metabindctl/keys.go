package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/metabind/metabind/responder/issuer"
)

// runKeys is "keys list", "keys rotate" and "keys jwks": the issuer's
// signing keys under the state directory (see responder/issuer/keyfiles.go
// for the layout).
func runKeys(stateDir string, argv []string, stdout, stderr io.Writer, now time.Time) error {
	if len(argv) == 0 {
		return fmt.Errorf("keys: want 'list', 'rotate' or 'jwks'")
	}
	verb := argv[0]
	fs := flag.NewFlagSet("keys "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var output *string
	switch verb {
	case "list":
		output = fs.String("o", "table", "output format: table or json")
	case "rotate", "jwks":
	default:
		return fmt.Errorf("keys: unknown verb %q, want 'list', 'rotate' or 'jwks'", verb)
	}
	positional, err := parseInterleaved(fs, argv[1:])
	if err != nil {
		return errUsage
	}
	if len(positional) != 0 {
		return fmt.Errorf("keys %s takes no arguments, got %q", verb, positional)
	}
	switch verb {
	case "rotate":
		return rotateKeys(stateDir, stdout, now)
	case "jwks":
		return printJWKS(stateDir, stdout, stderr, now)
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	keys, err := issuer.ListKeys(stateDir, now)
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(keys)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tSTATUS\tRETIRED AT\tPUBLISHED UNTIL")
	for _, k := range keys {
		if k.Status == issuer.KeyInvalid {
			fmt.Fprintf(stderr, "metabindctl: warning: %s\n", k.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.KID, k.Status, timeOrNone(k.RetiredAt), timeOrNone(k.PublishedUntil))
	}
	return tw.Flush()
}

func rotateKeys(stateDir string, stdout io.Writer, now time.Time) error {
	rot, err := issuer.RotateSigningKey(stateDir, now)
	if err != nil {
		return err
	}
	if rot.Retired == "" {
		fmt.Fprintf(stdout, "no signing key yet; created %s\n", rot.Current)
		return nil
	}
	fmt.Fprintf(stdout, "retired %s: in the JWKS until %s\n", rot.Retired, rot.PublishedUntil.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "signing key is now %s\n", rot.Current)
	for _, kid := range rot.Pruned {
		fmt.Fprintf(stdout, "deleted %s: no longer published\n", kid)
	}
	fmt.Fprintln(stdout, "a running metabind-responder signs with the new key within a second")
	return nil
}

// jwksIssuer opens the key files for their JWKS alone, which names no
// issuer: the URL is never used.
var jwksIssuer = issuer.Config{URL: "https://jwks.metabindctl.invalid", Lifetime: issuer.DefaultTokenLifetime}

// printJWKS prints the JWKS the responder serves at /openid/v1/jwks at now:
// the current key and the retired keys still published. It is what a
// relying party that cannot fetch the node's issuer is given (a GCP
// workload identity provider's --jwk-json-path).
func printJWKS(stateDir string, stdout, stderr io.Writer, now time.Time) error {
	// ListKeys reads without creating: with no signing key yet there is
	// nothing to print (the responder makes the key at its first start).
	keys, err := issuer.ListKeys(stateDir, now)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.Status == issuer.KeyInvalid {
			fmt.Fprintf(stderr, "metabindctl: warning: not in the JWKS: %s\n", k.Error)
		}
	}
	iss, _, err := issuer.Open(jwksIssuer, stateDir, nil)
	if err != nil {
		return err
	}
	iss.Now = func() time.Time { return now }
	doc := iss.JWKSJSON()
	_, err = fmt.Fprintf(stdout, "%s\n", doc)
	return err
}

func timeOrNone(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
