package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// buildGo builds a one-file Go program, src, into dir/name the way
// `make build` builds metabind (static, -trimpath), so that what it costs
// to start compares with metabind's start. Its module lives in the temp
// dir, not in the repository: it needs nothing but the standard library.
func buildGo(dir, name, src string) (string, error) {
	mod := filepath.Join(dir, name+"-src")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module "+name+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(mod, "main.go"), []byte(src), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v: %s", name, err, b)
	}
	return out, nil
}
