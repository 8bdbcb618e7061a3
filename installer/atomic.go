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

// errConflict: the file changed between our read and our write (the
// primary CNI wrote it); nothing was written.
var errConflict = errors.New("changed since it was read")

// writeAtomic replaces path with what write produces: a temp file in the same
// dir named by pattern (os.CreateTemp; a name the runtime ignores), synced,
// given mode, then renamed over path. On error path keeps its old bytes and
// the temp file is gone. A symlink at path is followed: its target is
// replaced and the link stays (a CNI agent that manages the link still
// sees its file). unchanged, when not nil, is checked just before the
// rename.
func writeAtomic(path, pattern string, mode fs.FileMode, write func(io.Writer) error, unchanged ...func() error) (err error) {
	if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if path, err = filepath.EvalSymlinks(path); err != nil {
			return err
		}
	}
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
	for _, check := range unchanged {
		if err = check(); err != nil {
			return err
		}
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

// writeConfIfUnchanged is writeConf, refused with errConflict when path is
// no longer the file read (another inode, size or modification time).
func writeConfIfUnchanged(path string, data []byte, mode fs.FileMode, read fs.FileInfo) error {
	return writeAtomic(path, "."+filepath.Base(path)+".metabind-tmp*", mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}, func() error { return sameAsRead(path, read) })
}

// removeIfUnchanged removes path unless it changed since it was read.
func removeIfUnchanged(path string, read fs.FileInfo) error {
	if err := sameAsRead(path, read); err != nil {
		return err
	}
	return os.Remove(path)
}

func sameAsRead(path string, read fs.FileInfo) error {
	now, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !os.SameFile(now, read) || now.Size() != read.Size() || !now.ModTime().Equal(read.ModTime()) {
		return fmt.Errorf("%s: %w", path, errConflict)
	}
	return nil
}

// saveBackup keeps data as path's backup. An existing backup is kept
// unless refresh: data is then the primary's own newer config.
func saveBackup(path string, data []byte, mode fs.FileMode, refresh bool) error {
	if !refresh {
		_, err := os.Lstat(path + backupSuffix)
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return writeConf(path+backupSuffix, data, mode)
}

// readFile returns a file's bytes and permission bits.
func readFile(path string) ([]byte, fs.FileMode, error) {
	data, mode, _, err := readFileInfo(path)
	return data, mode, err
}

// readFileInfo is readFile with the file's info as it was read.
func readFileInfo(path string) ([]byte, fs.FileMode, fs.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, nil, err
	}
	data, err := os.ReadFile(path)
	return data, fi.Mode().Perm(), fi, err
}
