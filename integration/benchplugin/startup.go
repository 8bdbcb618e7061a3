package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// startup measures what every CNI verb pays before the plugin does
// anything: exec, the Go runtime and package initialisation, and answering
// CNI_COMMAND=VERSION. It compares metabind (and portmap, another Go
// plugin) with an empty Go program built the way `make build` builds
// metabind (buildGo), in alternating rounds of execs each, and
// prints the median per exec of each binary.
// extra adds binaries to compare (NAME=PATH each), e.g. an older build.
func startup(binDir, cniDir string, rounds, execs int, extra []string) error {
	binDir, _ = filepath.Abs(binDir)
	cniDir, _ = filepath.Abs(cniDir)
	dir, err := os.MkdirTemp("", "metabind-bench-startup-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	empty, err := buildGo(dir, "empty-main", "package main\n\nfunc main() {}\n")
	if err != nil {
		return err
	}
	type bin struct {
		name, path string
		size       int64
		times      []time.Duration
	}
	bins := []*bin{{name: "empty Go main", path: empty}, {name: "metabind VERSION", path: filepath.Join(binDir, "metabind")}}
	if _, err := os.Stat(filepath.Join(cniDir, "portmap")); err == nil {
		bins = append(bins, &bin{name: "portmap VERSION", path: filepath.Join(cniDir, "portmap")})
	}
	for _, e := range extra {
		name, path, ok := strings.Cut(e, "=")
		if !ok {
			return fmt.Errorf("-startup-also %q: want NAME=PATH", e)
		}
		bins = append(bins, &bin{name: name, path: path})
	}
	for _, b := range bins {
		st, err := os.Stat(b.path)
		if err != nil {
			return err
		}
		b.size = st.Size()
	}
	// Round -1 warms the page cache.
	for round := -1; round < rounds; round++ {
		for _, b := range bins {
			for range execs {
				d, err := execVersion(b.path)
				if err != nil {
					return fmt.Errorf("%s: %w", b.name, err)
				}
				if round >= 0 {
					b.times = append(b.times, d)
				}
			}
		}
	}
	fmt.Printf("0. Plugin start-up: exec to exit answering CNI_COMMAND=VERSION, %d rounds x %d execs per binary, alternating\n\n", rounds, execs)
	fmt.Printf("%-36s %10s %10s %10s %10s\n", "binary", "p50", "p95", "size", "/ empty")
	base := pct(bins[0].times, 50)
	for i, b := range bins {
		ratio := fmt.Sprintf("%9.2fx", float64(pct(b.times, 50))/float64(base))
		if i == 0 {
			ratio = ""
		}
		target := ""
		if b.name == "metabind VERSION" {
			target = "   (target <= 1.5x)"
		}
		fmt.Printf("%-36s %10s %10s %7.1f MB %10s%s\n", b.name, msf(pct(b.times, 50)), msf(pct(b.times, 95)), float64(b.size)/1e6, ratio, target)
	}
	return nil
}

var versionStdin = []byte(`{"cniVersion":"1.1.0"}`)

func execVersion(path string) (time.Duration, error) {
	cmd := exec.Command(path)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = bytes.NewReader(versionStdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out.Bytes())
	}
	return d, nil
}

func msf(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
