package aws

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"
)

// KeySize is the length of the secret that MACs session tokens.
const KeySize = 32

// Session token TTL bounds, in seconds, as EC2 takes them.
const (
	MinTokenTTL = 1
	MaxTokenTTL = 21600
)

// Session tokens are stateless: version (1 byte) || expiry (8 bytes, Unix
// seconds, big endian) || HMAC-SHA256(key, tokenDomain || version ||
// expiry || pod UID), in unpadded base64url. A token names no pod: it is
// valid only for the pod whose UID makes its MAC, so a token minted for
// one pod is refused from any other, and from a pod that reuses its IP.
const (
	tokenVersion = 1
	tokenDomain  = "metabind aws session token\x00"
	tokenBytes   = 1 + 8 + sha256.Size
)

var tokenLen = base64.RawURLEncoding.EncodedLen(tokenBytes)

// sessions mints and checks session tokens with one key.
type sessions struct{ key []byte }

func newSessions(key []byte) sessions {
	if len(key) != KeySize {
		panic(fmt.Sprintf("aws: session token key is %d bytes, want %d", len(key), KeySize))
	}
	return sessions{key: append([]byte(nil), key...)}
}

func (s sessions) mac(dst []byte, expiry uint64, podUID string) []byte {
	m := hmac.New(sha256.New, s.key)
	var head [9]byte
	head[0] = tokenVersion
	binary.BigEndian.PutUint64(head[1:], expiry)
	m.Write([]byte(tokenDomain))
	m.Write(head[:])
	m.Write([]byte(podUID))
	return m.Sum(dst)
}

// mint returns a token of podUID valid until expiry.
func (s sessions) mint(podUID string, expiry time.Time) string {
	b := make([]byte, 9, tokenBytes)
	b[0] = tokenVersion
	exp := uint64(expiry.Unix())
	binary.BigEndian.PutUint64(b[1:], exp)
	b = s.mac(b, exp, podUID)
	return base64.RawURLEncoding.EncodeToString(b)
}

// verify returns tok's expiry if it is a token of podUID (never of an
// empty one) valid at now.
func (s sessions) verify(tok, podUID string, now time.Time) (time.Time, bool) {
	if podUID == "" || len(tok) != tokenLen {
		return time.Time{}, false
	}
	var b [tokenBytes]byte
	if n, err := base64.RawURLEncoding.Decode(b[:], []byte(tok)); err != nil || n != tokenBytes || b[0] != tokenVersion {
		return time.Time{}, false
	}
	exp := binary.BigEndian.Uint64(b[1:9])
	var sum [sha256.Size]byte
	if !hmac.Equal(s.mac(sum[:0], exp, podUID), b[9:]) {
		return time.Time{}, false
	}
	expiry := time.Unix(int64(exp), 0)
	if !now.Before(expiry) {
		return time.Time{}, false
	}
	return expiry, true
}
