package installer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// copyBinary puts src at binDir/metabind unless the same bytes are there.
func copyBinary(src, binDir string) (line string, changed bool, err error) {
	dst := filepath.Join(binDir, pluginType)
	want, err := fileSum(src)
	if err != nil {
		return "", false, fmt.Errorf("plugin binary: %w", err)
	}
	have, err := fileSum(dst)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	if bytes.Equal(have, want) {
		return fmt.Sprintf("%s is up to date", dst), false, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", false, err
	}
	in, err := os.Open(src)
	if err != nil {
		return "", false, err
	}
	defer in.Close()
	err = writeAtomic(dst, "."+pluginType+".tmp-*", 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
	if err != nil {
		return "", false, fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return fmt.Sprintf("copied %s to %s", src, dst), true, nil
}

// removeBinary removes binDir/metabind if it is there.
func removeBinary(binDir string) (line string, changed bool, err error) {
	dst := filepath.Join(binDir, pluginType)
	err = os.Remove(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("no %s to remove", dst), false, nil
	}
	if err != nil {
		return "", false, err
	}
	return fmt.Sprintf("removed %s", dst), true, nil
}

// sameBinary reports whether binDir/metabind has src's bytes.
func sameBinary(src, binDir string) (bool, error) {
	want, err := fileSum(src)
	if err != nil {
		return false, fmt.Errorf("plugin binary: %w", err)
	}
	have, err := fileSum(filepath.Join(binDir, pluginType))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return bytes.Equal(have, want), err
}

func fileSum(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
