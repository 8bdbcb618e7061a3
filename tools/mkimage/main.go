// Command mkimage assembles the DaemonSet's image, one manifest per
// platform, into an OCI layout tarball that `ctr images import` reads; no
// Docker daemon and no registry. `make image` runs it:
//
//	mkimage -name ghcr.io/metabind/metabind:v0.4.0 -out bin/image/metabind.oci.tar \
//	    -platform linux/amd64,linux/arm64 \
//	    -rootfs '.cache/image/rootfs-{arch}' -bin 'bin/image/{arch}'
//
// Each platform's image has two layers: the tree under -rootfs (from
// scripts/image-rootfs.sh: iptables and its libraries) and the files under
// -bin, at /usr/local/bin. {arch} in either path stands for the platform's
// architecture.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/metabind/metabind/internal/ociimage"
)

func main() {
	var o options
	flag.StringVar(&o.name, "name", "", "the image's reference, e.g. ghcr.io/metabind/metabind:v0.4.0 (required)")
	flag.StringVar(&o.out, "out", "", "the OCI layout tarball to write (required)")
	platforms := flag.String("platform", "linux/amd64,linux/arm64", "comma-separated platforms, os/arch[/variant]")
	flag.StringVar(&o.rootfs, "rootfs", "", "the base filesystem of each platform; {arch} is the architecture (required)")
	flag.StringVar(&o.bin, "bin", "", "the directory whose files go to /usr/local/bin; {arch} is the architecture (required)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: mkimage -name REF -out FILE -rootfs DIR -bin DIR [-platform LIST]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 || o.name == "" || o.out == "" || o.rootfs == "" || o.bin == "" {
		flag.Usage()
		os.Exit(2)
	}
	var err error
	if o.platforms, err = parsePlatforms(*platforms); err == nil {
		err = write(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// write assembles the image o describes and writes it to o.out.
func write(o options) error {
	img, err := assemble(o)
	if err != nil {
		return err
	}
	if err := ociimage.WriteFile(o.out, img); err != nil {
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	fi, err := os.Stat(o.out)
	if err != nil {
		return err
	}
	var names []string
	for _, p := range o.platforms {
		names = append(names, platformString(p))
	}
	fmt.Printf("mkimage: %s (%s): %s, %.1f MiB\n", o.name, strings.Join(names, ", "), o.out, float64(fi.Size())/(1<<20))
	return nil
}
