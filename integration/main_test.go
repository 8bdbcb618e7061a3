// Package integration drives metabind the way a container runtime does: the
// real plugin binary chained after the real reference plugins through
// libcni, in a throwaway "node" netns with real veths and iptables, the real
// responder binary, and real metadata clients inside the pods' netns. Nothing
// here touches the host's own network namespace.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var (
	binDir         string // metabind, metabind-responder, metabindctl
	testhookBinDir string // metabind built with -tags metabind_testhooks: it dies at plugin.CrashEnv's checkpoint
	podClient      string // integration/podclient: the real Go metadata clients
	awsClient      string // integration/awsclient: aws-sdk-go-v2's default credential chain
	cniPluginsDir  string // ptp, bridge, host-local, ... (scripts/install-deps.sh)
	setupProblem   string // why the tests cannot run here, if they cannot
)

func TestMain(m *testing.M) {
	root, _ := filepath.Abs("..")
	cniPluginsDir = envOr("CNI_PLUGINS_DIR", filepath.Join(root, ".cache/cni/bin"))
	var cleanup func()
	setupProblem, cleanup = prepare(root)
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func prepare(root string) (problem string, cleanup func()) {
	cleanup = func() {}
	if os.Geteuid() != 0 {
		return "needs root (network namespaces, veths, iptables)", cleanup
	}
	for _, tool := range []string{"iptables", "ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("needs %s: run scripts/install-deps.sh (make test does)", tool), cleanup
		}
	}
	for _, p := range []string{"ptp", "bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(cniPluginsDir, p)); err != nil {
			return fmt.Sprintf("needs the reference CNI plugins in %s: run scripts/install-deps.sh (make test does)", cniPluginsDir), cleanup
		}
	}
	dir, err := os.MkdirTemp("", "metabind-bin-")
	if err != nil {
		return err.Error(), cleanup
	}
	cleanup = func() { os.RemoveAll(dir) }
	// make test hands over the binaries it built (the test-hook plugin in
	// METABIND_TESTHOOK_BIN_DIR); alone, build them here.
	pkgs := []string{"./integration/podclient", "./integration/awsclient"}
	if binDir = os.Getenv("METABIND_BIN_DIR"); binDir == "" {
		binDir = dir
		pkgs = append(pkgs, "./cmd/...")
	}
	builds := [][]string{append([]string{"build", "-o", dir + "/"}, pkgs...)}
	if testhookBinDir = os.Getenv("METABIND_TESTHOOK_BIN_DIR"); testhookBinDir == "" {
		testhookBinDir = filepath.Join(dir, "test")
		builds = append(builds, []string{"build", "-tags", "metabind_testhooks", "-o", testhookBinDir + "/metabind", "./cmd/metabind"})
	}
	for _, args := range builds {
		build := exec.Command("go", args...)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Sprintf("go %v: %v\n%s", args, err, out), cleanup
		}
	}
	podClient = filepath.Join(dir, "podclient")
	awsClient = filepath.Join(dir, "awsclient")
	return "", cleanup
}

// requireEnv stops a test that cannot run here: a skip on a developer's
// machine, a failure under CI (CI=true), where every test must run.
func requireEnv(t *testing.T) {
	t.Helper()
	if setupProblem != "" {
		cannotRun(t, setupProblem)
	}
}

// cannotRun skips t on a developer's machine and fails it under CI.
func cannotRun(t *testing.T, problem string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run under CI: %s", problem)
	}
	t.Skipf("skipped: %s", problem)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
