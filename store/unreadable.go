package store

import (
	"fmt"
	"net/netip"
	"slices"
)

// UnreadableRecord is a binding record that could not be decoded: not
// JSON, or stored under another key than its own IP. Every reader skips it
// and reports it: its IP counts as unbound (the responder does not answer
// it, the plugin's next ADD of the IP replaces the record) and every other
// binding reads as usual. How to recover: docs/OPERATIONS.md.
type UnreadableRecord struct {
	Key string // what it is stored under: an IP, unless the damage hit the key
	Err error  // why it could not be read
}

// String is "KEY: reason", the key quoted when it is not an IP.
func (r UnreadableRecord) String() string {
	key := r.Key
	if _, err := netip.ParseAddr(key); err != nil {
		key = fmt.Sprintf("%q", key)
	}
	return key + ": " + r.Err.Error()
}

// Unreadable returns the records this transaction's reads (Get, ForEach,
// ByAttachment) have skipped so far, each once, in the order met.
func (t *Tx) Unreadable() []UnreadableRecord { return slices.Clone(t.unreadable) }

func (t *Tx) skip(key []byte, err error) {
	for _, r := range t.unreadable {
		if r.Key == string(key) {
			return
		}
	}
	t.unreadable = append(t.unreadable, UnreadableRecord{Key: string(key), Err: err})
}
