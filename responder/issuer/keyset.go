package issuer

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// keyCheckInterval is how often, at most, an issuer stats its key files.
const keyCheckInterval = time.Second

// keySet is the keys on disk: the current one and the retired ones, newest
// retirement first. problems lists retired key files that were skipped
// (never published: an unreadable key only makes tokens fail to verify).
type keySet struct {
	current  signingKey
	retired  []retiredKey
	problems []error
}

// readKeySet reads the current key (required) and every retired key.
func readKeySet(stateDir string) (*keySet, error) {
	key, err := readSigningKey(SigningKeyPath(stateDir))
	if err != nil {
		return nil, err
	}
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	ks := &keySet{current: signingKey{kid: kid, key: key}}
	retired, problems := readRetiredKeys(stateDir)
	ks.problems = problems
	for _, r := range retired {
		if r.kid != kid { // a rotation that stopped half-way: the key is still current
			ks.retired = append(ks.retired, r)
		}
	}
	return ks, nil
}

// logProblems warns about each retired key file that was skipped.
func (ks *keySet) logProblems(log *slog.Logger) {
	for _, p := range ks.problems {
		log.Warn("skipping a retired signing key; tokens it signed no longer verify", "error", p.Error())
	}
}

// readRetiredKeys reads retired-keys/*.pem; names starting with '.' are a
// rotation's temporary files.
func readRetiredKeys(stateDir string) ([]retiredKey, []error) {
	dir := RetiredKeysPath(stateDir)
	if err := checkKeyDir(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{err}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, []error{fmt.Errorf("retired keys: %w", err)}
	}
	var keys []retiredKey
	var problems []error
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".pem") {
			continue
		}
		k, err := readRetiredKey(filepath.Join(dir, name))
		if err != nil {
			problems = append(problems, err)
			continue
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return keys[a].retiredAt.After(keys[b].retiredAt) })
	return keys, problems
}

// keyStamp identifies the state of the key files cheaply (two stats), so
// the issuer rereads them only when they changed.
type keyStamp struct {
	current, retired fileStamp
}

type fileStamp struct {
	ok         bool
	dev, ino   uint64
	size       int64
	mtim, ctim syscall.Timespec
}

func statKeys(stateDir string) keyStamp {
	return keyStamp{current: statFile(SigningKeyPath(stateDir)), retired: statFile(RetiredKeysPath(stateDir))}
}

func statFile(path string) fileStamp {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fileStamp{}
	}
	return fileStamp{ok: true, dev: st.Dev, ino: st.Ino, size: st.Size, mtim: st.Mtim, ctim: st.Ctim}
}
