package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/metabind/metabind/doctor"
)

// runDoctor checks the node's metabind set-up and prints one line per check;
// it fails when any check does.
func runDoctor(stateDir string, argv []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := doctor.Options{}
	fs.StringVar(&o.StateDir, "state-dir", stateDir, "metabind state directory (the plugin's stateDir, the responder's --state-dir)")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "the runtime's CNI config directory")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", "/opt/cni/bin", "the runtime's CNI plugin directory")
	fs.StringVar(&o.ConfigFile, "config", "/etc/metabind/responder.yaml", "the responder's configuration file")
	fs.StringVar(&o.AdminAddress, "admin-address", "127.0.0.1:9988", "the responder's --admin-listen")
	fs.StringVar(&o.PodNetNS, "pod-netns", "", "a pod's network namespace (/proc/PID/ns/net), to resolve metadata.google.internal as the pod does; empty skips that check")
	fs.StringVar(&o.PodResolvConf, "pod-resolv-conf", "", "the pod's resolv.conf, whose first nameserver is asked (default: /proc/PID/root/etc/resolv.conf for --pod-netns /proc/PID/ns/net, else /etc/resolv.conf)")
	fs.DurationVar(&o.Timeout, "timeout", doctor.DefaultTimeout, "bound of each network check and lock wait")
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(argv); err != nil {
		return errUsage
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("doctor takes no arguments, got %q", fs.Args())
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	return report(stdout, doctor.Run(context.Background(), o), *output)
}

// report prints the results and fails when a check failed.
func report(stdout io.Writer, results []doctor.Result, output string) error {
	var err error
	if output == "json" {
		err = doctor.WriteJSON(stdout, results)
	} else {
		err = doctor.WriteTable(stdout, results)
	}
	if err != nil {
		return err
	}
	n := 0
	for _, r := range results {
		if r.Status == doctor.Fail {
			n++
		}
	}
	if n > 0 {
		return fmt.Errorf("doctor: %d of %d checks failed", n, len(results))
	}
	return nil
}
