package plugin

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"time"

	"github.com/metabind/metabind/store"
)

// logFileLockTimeout bounds the wait for the log file's lock. Past it a
// line is written without the lock (a rotation may then move it into the
// first backup, which loses nothing) and a rotation is left to the next
// writer.
const logFileLockTimeout = 2 * time.Second

// rotatingFile is the plugin's log file, which every plugin process on
// the node appends to, dozens at once when pods start together. It rotates
// by size: when a write leaves it at maxBytes or more, it becomes path.1,
// path.1 becomes path.2 and so on, and the backup past the last goes.
//
// A rotating file per process (lumberjack) is not safe here: two processes
// that both see the file full both rename, the second renaming the first's
// fresh file (or onto its backup), and a writer holding the old file open
// keeps writing into a backup that may be deleted under it. So no process
// keeps the file open: each line is one write under a shared flock on
// path.lock, to a file opened for it (O_APPEND: concurrent lines never
// interleave), and a rotation renames under the exclusive flock, when no
// writer has the file open. Every line therefore lands whole in the file
// that is current as it is written, and is moved, never dropped, until it
// falls off the last backup.
type rotatingFile struct {
	path     string
	maxBytes int64
	backups  int
}

// Write appends p, one log record, and rotates if the file is full. When
// the file cannot be opened the record goes to stderr, which the runtime
// keeps (stdout belongs to the CNI result).
func (f *rotatingFile) Write(p []byte) (int, error) {
	lock, lockErr := store.LockFile(f.path+".lock", false, logFileLockTimeout)
	out, err := os.OpenFile(f.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		if lockErr == nil {
			lock.Close()
		}
		return os.Stderr.Write(p)
	}
	n, err := out.Write(p)
	st, statErr := out.Stat()
	out.Close()
	if lockErr == nil {
		lock.Close()
	}
	if err == nil && statErr == nil && st.Size() >= f.maxBytes {
		f.rotate()
	}
	return n, err
}

// rotate shifts the backups and makes the file the first, under the
// exclusive lock, unless another process has rotated it meanwhile.
func (f *rotatingFile) rotate() {
	lock, err := store.LockFile(f.path+".lock", true, logFileLockTimeout)
	if err != nil {
		return // the next write tries again
	}
	defer lock.Close()
	if st, err := os.Stat(f.path); err != nil || st.Size() < f.maxBytes {
		return
	}
	if f.backups == 0 {
		os.Remove(f.path)
		return
	}
	os.Remove(f.backup(f.backups))
	for i := f.backups - 1; i >= 1; i-- {
		if err := os.Rename(f.backup(i), f.backup(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return // keep what is there rather than overwrite a backup
		}
	}
	os.Rename(f.path, f.backup(1))
}

// backup is the name of the i-th backup, 1 the newest.
func (f *rotatingFile) backup(i int) string { return f.path + "." + strconv.Itoa(i) }
