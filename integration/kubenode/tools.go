package kubenode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metabind/metabind/integration/kubeapi"
)

// cniPlugins are the reference plugins CNIBinDir gets (loopback too:
// containerd brings up each pod's lo with it).
var cniPlugins = []string{"ptp", "bridge", "host-local", "loopback", "portmap"}

// tools are the binaries the node runs (the control plane's are kubeapi's
// business).
type tools struct {
	root                                   string // the repository
	kubelet, coredns                       string
	containerd, ctr, runc, crictl, nsenter string
	cniPluginsDir                          string
}

// lookTools finds every binary or stops the test (Unavailable).
func lookTools(t testing.TB) tools {
	t.Helper()
	root, err := kubeapi.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	kubeBin := kubeapi.BinDir(root)
	tl := tools{root: root, cniPluginsDir: os.Getenv("CNI_PLUGINS_DIR")}
	if tl.cniPluginsDir == "" {
		tl.cniPluginsDir = filepath.Join(root, ".cache/cni/bin")
	}
	var missing []string
	// look finds name in dir, or on PATH when dir is "".
	look := func(name, dir string) string {
		if dir == "" {
			if p, err := exec.LookPath(name); err == nil {
				return p
			}
			missing = append(missing, name)
			return ""
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			missing = append(missing, p)
		}
		return p
	}
	tl.kubelet = look("kubelet", kubeBin)
	tl.coredns = look("coredns", kubeBin)
	tl.containerd = look("containerd", "")
	tl.ctr = look("ctr", "")
	tl.runc = look("runc", "")
	tl.nsenter = look("nsenter", "")
	look("containerd-shim-runc-v2", "")
	tl.crictl = look("crictl", tl.cniPluginsDir)
	for _, p := range cniPlugins {
		look(p, tl.cniPluginsDir)
	}
	if len(missing) > 0 {
		kubeapi.Unavailable(t, fmt.Sprintf("needs %s: run scripts/install-deps.sh and scripts/install-containerd.sh (make test does)",
			strings.Join(missing, ", ")))
	}
	return tl
}
