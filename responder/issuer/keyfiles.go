package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The issuer's key files, under the state directory:
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
	SigningKeyFile  = "signing-key.pem"
	RetiredKeysDir  = "retired-keys"
	SigningKeyLock  = "signing-key.lock"
	retiredAtHeader = "Retired-At"
)

// RetiredKeyPublication is how long a retired key stays in the JWKS: the
// longest token lifetime plus 5 minutes of clock skew.
const RetiredKeyPublication = MaxTokenLifetime + 5*time.Minute

// SigningKeyPath is the issuer key's path under stateDir.
func SigningKeyPath(stateDir string) string { return filepath.Join(stateDir, SigningKeyFile) }

// RetiredKeysPath is the retired keys' directory under stateDir.
func RetiredKeysPath(stateDir string) string { return filepath.Join(stateDir, RetiredKeysDir) }

// SigningKeyLockPath is the rotation lock under stateDir.
func SigningKeyLockPath(stateDir string) string { return filepath.Join(stateDir, SigningKeyLock) }

// LoadSigningKey reads the P-256 key at path (PKCS#8 or SEC1 PEM), or, when
// there is none, creates one with mode 0600 (and its directory with 0700).
// created reports the latter. A key file that group or others can access
// is refused.
func LoadSigningKey(path string) (key *ecdsa.PrivateKey, created bool, err error) {
	key, err = readSigningKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create state dir: %w", err)
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generate signing key: %w", err)
	}
	switch err := writeSigningKey(path, key); {
	case errors.Is(err, fs.ErrExist):
		// Another process created one first; use it.
		key, err = readSigningKey(path)
		return key, false, err
	case err != nil:
		return nil, false, err
	}
	return key, true, nil
}

func readSigningKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	key, err := ParseSigningKey(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return key, nil
}

// ParseSigningKey decodes a P-256 private key from PEM, PKCS#8 ("PRIVATE
// KEY") or SEC1 ("EC PRIVATE KEY").
func ParseSigningKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want an ECDSA P-256 key", key)
	}
	if ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key is on %s, want P-256", ec.Curve.Params().Name)
	}
	return ec, nil
}

// writeSigningKey writes key to path unless a key is there already
// (fs.ErrExist then); see writeKeyFile.
func writeSigningKey(path string, key *ecdsa.PrivateKey) error {
	data, err := encodePrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeKeyFile(path, data, false); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("write signing key: %w", err)
	}
	return nil
}

// KeyID is the Kubernetes-style key ID: base64url (no padding) of the
// SHA-256 of the public key's PKIX DER.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// retiredKey is a public key that no longer signs but is still published
// until publishedUntil.
type retiredKey struct {
	kid       string
	pub       *ecdsa.PublicKey
	retiredAt time.Time
}

func (k retiredKey) publishedUntil() time.Time { return k.retiredAt.Add(RetiredKeyPublication) }

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
