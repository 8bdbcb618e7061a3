package kubenode

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/metabind/metabind/integration/kubeapi"
	"github.com/metabind/metabind/internal/ociimage"
)

// PauseImage is the image of every pod sandbox: integration/pause, built by
// Start with BuildPauseImage and imported (no registry is reachable to pull
// the real one from). Test pods may run it too, with imagePullPolicy Never.
const PauseImage = "localhost/metabind/pause:kubenode"

// BuildPauseImage builds integration/pause as a static binary into dir and
// writes it there as a single-layer OCI image layout tarball named
// PauseImage, whose path it returns.
func BuildPauseImage(t testing.TB, dir string) string {
	t.Helper()
	root, err := kubeapi.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "pause")
	build := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, "./integration/pause")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("kubenode: build the pause binary: %v\n%s", err, out)
	}
	pause, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(dir, "pause-oci.tar")
	err = ociimage.WriteFile(tarball, ociimage.Image{Name: PauseImage, Manifests: []ociimage.Manifest{{
		Platform: ociimage.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   ociimage.Config{Entrypoint: []string{"/pause"}},
		Layers:   []ociimage.Layer{{{Path: "pause", Mode: 0o755, Data: pause}}},
	}}})
	if err != nil {
		t.Fatalf("kubenode: write the pause image: %v", err)
	}
	return tarball
}
