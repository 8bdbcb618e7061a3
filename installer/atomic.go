package installer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// backupSuffix names the copy of a config file's original bytes, taken
// before its first change. Runtimes ignore the extension.
const backupSuffix = ".metabind-backup"

// writeAtomic replaces path with what write produces: a temp file in the same
// dir named by pattern (os.CreateTemp; a name the runtime ignores), synced,
// given mode, then renamed over path. On error path keeps its old bytes and
// the temp file is gone.
func writeAtomic(path, pattern string, mode fs.FileMode, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = write(f); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeConf replaces a config file atomically with data.
func writeConf(path string, data []byte, mode fs.FileMode) error {
	return writeAtomic(path, "."+filepath.Base(path)+".metabind-tmp*", mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// saveBackup keeps data as path's backup unless one exists already.
func saveBackup(path string, data []byte, mode fs.FileMode) error {
	_, err := os.Lstat(path + backupSuffix)
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return writeConf(path+backupSuffix, data, mode)
}

// readFile returns a file's bytes and permission bits.
func readFile(path string) ([]byte, fs.FileMode, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, err
	}
	data, err := os.ReadFile(path)
	return data, fi.Mode().Perm(), err
}
