package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/metabind/metabind/store"
)

// rotateLockTimeout bounds a rotation's wait for another one.
const rotateLockTimeout = 5 * time.Second

// lockKeys takes the rotation lock, waiting at most timeout; closing the
// result releases it.
func lockKeys(stateDir string, timeout time.Duration) (unlock func(), err error) {
	path := SigningKeyLockPath(stateDir)
	l, err := store.LockFile(path, true, timeout)
	if errors.Is(err, store.ErrBusy) {
		return nil, fmt.Errorf("key lock %s: another rotation holds it for more than %v", path, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("key lock: %w", err)
	}
	return func() { l.Close() }, nil
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
