package responder

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The issuer's key directory, under the state directory:
//
//	signing-key.pem             the current key (private, PKCS#8 PEM); tokens are signed with it
//	retired-keys/<kid>.pem      a retired key's PUBLIC half, with a Retired-At PEM header
//	signing-key.lock            flock held by a rotation, so two never interleave
//
// Every file is mode 0600 and owned by the user the responder runs as
// (directories 0700); anything else is refused. A retired key is published
// in the JWKS until RetiredKeyPublication after its retirement, so every
// token it signed (at most MaxTokenLifetime long, plus clock skew) still
// verifies. Its private half is not kept: nothing is signed with it again.
const (
	RetiredKeysDir    = "retired-keys"
	SigningKeyLock    = "signing-key.lock"
	retiredAtHeader   = "Retired-At"
	keyCheckInterval  = time.Second
	rotateLockTimeout = 5 * time.Second
)

// RetiredKeyPublication is how long a retired key stays in the JWKS: the
// longest token lifetime plus 5 minutes of clock skew.
const RetiredKeyPublication = MaxTokenLifetime + 5*time.Minute

// RetiredKeysPath is the retired keys' directory under stateDir.
func RetiredKeysPath(stateDir string) string { return filepath.Join(stateDir, RetiredKeysDir) }

// SigningKeyLockPath is the rotation lock under stateDir.
func SigningKeyLockPath(stateDir string) string { return filepath.Join(stateDir, SigningKeyLock) }

// retiredKey is a public key that no longer signs but is still published
// until publishedUntil.
type retiredKey struct {
	kid       string
	pub       *ecdsa.PublicKey
	retiredAt time.Time
}

func (k retiredKey) publishedUntil() time.Time { return k.retiredAt.Add(RetiredKeyPublication) }

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

func readRetiredKey(path string) (retiredKey, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return retiredKey{}, fmt.Errorf("retired key %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return retiredKey{}, fmt.Errorf("retired key %s: no PEM block", path)
	}
	var pub *ecdsa.PublicKey
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return retiredKey{}, fmt.Errorf("retired key %s: %w", path, err)
		}
		ec, ok := k.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			return retiredKey{}, fmt.Errorf("retired key %s: want an ECDSA P-256 public key", path)
		}
		pub = ec
	default: // a private key moved here by hand
		k, err := ParseSigningKey(data)
		if err != nil {
			return retiredKey{}, fmt.Errorf("retired key %s: %w", path, err)
		}
		pub = &k.PublicKey
	}
	at, err := time.Parse(time.RFC3339, block.Headers[retiredAtHeader])
	if err != nil {
		return retiredKey{}, fmt.Errorf("retired key %s: want a %s: <RFC 3339 time> PEM header: %w", path, retiredAtHeader, err)
	}
	kid, err := KeyID(pub)
	if err != nil {
		return retiredKey{}, err
	}
	if want := kid + ".pem"; filepath.Base(path) != want {
		return retiredKey{}, fmt.Errorf("retired key %s: holds key %s, so its name must be %s", path, kid, want)
	}
	return retiredKey{kid: kid, pub: pub, retiredAt: at}, nil
}

// readKeyFile reads a key file after checking that it is a regular file,
// that only its owner can access it and that the owner is this process's
// effective user.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if err := checkOwnerAndMode(path, fi); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// checkKeyDir refuses a key directory that others can access or that
// another user owns: whoever can write there could plant a key the JWKS
// would publish.
func checkKeyDir(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", path)
	}
	return checkOwnerAndMode(path, fi)
}

func checkOwnerAndMode(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		want := "600"
		if fi.IsDir() {
			want = "700"
		}
		return fmt.Errorf("%s is readable by other users (mode %04o); fix it with: chmod %s %s", path, perm, want, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not to this process (uid %d); fix it with: chown %d %s", path, st.Uid, os.Geteuid(), os.Geteuid(), path)
	}
	return nil
}

// writeKeyFile writes data to a temporary file in path's directory (mode
// 0600), syncs it and moves it into place: replacing what is there when
// replace is set, else failing with fs.ErrExist if path exists. A crash
// never leaves half a key.
func writeKeyFile(path string, data []byte, replace bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".key-*.tmp") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func encodePrivateKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode signing key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func encodeRetiredKey(pub *ecdsa.PublicKey, at time.Time) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{
		Type:    "PUBLIC KEY",
		Headers: map[string]string{retiredAtHeader: at.UTC().Format(time.RFC3339)},
		Bytes:   der,
	}), nil
}

// lockKeys takes the rotation lock, waiting at most timeout.
func lockKeys(stateDir string, timeout time.Duration) (unlock func(), err error) {
	path := SigningKeyLockPath(stateDir)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("key lock: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("key lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("key lock %s: another rotation holds it for more than %v", path, timeout)
		}
		time.Sleep(5 * time.Millisecond) // poll the lock; the deadline bounds it
	}
}

// Rotation is what RotateSigningKey did.
type Rotation struct {
	Current        string    // the new current key's ID
	Retired        string    // the previous key's ID; "" when there was none
	RetiredAt      time.Time // when Retired stopped signing
	PublishedUntil time.Time // until when Retired stays in the JWKS
	Pruned         []string  // retired keys deleted: no longer published
}

// RotateSigningKey retires the current key and makes a new one, under the
// rotation lock: first the old public key is written to
// retired-keys/<kid>.pem with its retirement time now, then the new key
// replaces signing-key.pem (temporary file and rename). A responder picks
// the change up within a second (it checks the files, see Issuer) and
// keeps publishing the retired key for RetiredKeyPublication. Retired keys
// whose publication has ended are deleted. When there is no current key,
// one is created and nothing is retired.
func RotateSigningKey(stateDir string, now time.Time) (*Rotation, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	unlock, err := lockKeys(stateDir, rotateLockTimeout)
	if err != nil {
		return nil, err
	}
	defer unlock()

	keyPath := SigningKeyPath(stateDir)
	old, created, err := LoadSigningKey(keyPath)
	if err != nil {
		return nil, err
	}
	oldKID, err := KeyID(&old.PublicKey)
	if err != nil {
		return nil, err
	}
	if created {
		return &Rotation{Current: oldKID}, nil
	}

	dir := RetiredKeysPath(stateDir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := checkKeyDir(dir); err != nil {
		return nil, err
	}
	retired, err := encodeRetiredKey(&old.PublicKey, now)
	if err != nil {
		return nil, err
	}
	if err := writeKeyFile(filepath.Join(dir, oldKID+".pem"), retired, true); err != nil {
		return nil, fmt.Errorf("retire key %s: %w", oldKID, err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	pemKey, err := encodePrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := writeKeyFile(keyPath, pemKey, true); err != nil {
		return nil, fmt.Errorf("write signing key: %w", err)
	}

	rot := &Rotation{Current: kid, Retired: oldKID, RetiredAt: now.UTC().Truncate(time.Second)}
	rot.PublishedUntil = rot.RetiredAt.Add(RetiredKeyPublication)
	keys, _ := readRetiredKeys(stateDir)
	for _, k := range keys {
		if !k.publishedUntil().After(now) {
			if err := os.Remove(filepath.Join(dir, k.kid+".pem")); err != nil {
				return rot, fmt.Errorf("prune retired key %s: %w", k.kid, err)
			}
			rot.Pruned = append(rot.Pruned, k.kid)
		}
	}
	if len(rot.Pruned) > 0 {
		syncDir(dir)
	}
	return rot, nil
}

// KeyInfo describes one key file for metabindctl keys list.
type KeyInfo struct {
	KID string `json:"kid"`
	// Status is current (signs tokens), retired (published in the JWKS
	// until PublishedUntil), expired (no longer published; the next
	// rotation deletes it) or invalid (skipped; Error says why).
	Status         string    `json:"status"`
	RetiredAt      time.Time `json:"retiredAt,omitzero"`
	PublishedUntil time.Time `json:"publishedUntil,omitzero"`
	File           string    `json:"file"`
	Error          string    `json:"error,omitempty"`
}

// Key statuses.
const (
	KeyCurrent = "current"
	KeyRetired = "retired"
	KeyExpired = "expired"
	KeyInvalid = "invalid"
)

// ListKeys describes the current key and every retired key file at now,
// current first, then by retirement, newest first.
func ListKeys(stateDir string, now time.Time) ([]KeyInfo, error) {
	keyPath := SigningKeyPath(stateDir)
	key, err := readSigningKey(keyPath)
	if err != nil {
		return nil, err
	}
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	out := []KeyInfo{{KID: kid, Status: KeyCurrent, File: keyPath}}
	retired, problems := readRetiredKeys(stateDir)
	for _, k := range retired {
		info := KeyInfo{KID: k.kid, Status: KeyRetired, RetiredAt: k.retiredAt, PublishedUntil: k.publishedUntil(),
			File: filepath.Join(RetiredKeysPath(stateDir), k.kid+".pem")}
		if !info.PublishedUntil.After(now) {
			info.Status = KeyExpired
		}
		out = append(out, info)
	}
	for _, p := range problems {
		out = append(out, KeyInfo{KID: "-", Status: KeyInvalid, Error: p.Error()})
	}
	return out, nil
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
