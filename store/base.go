package store

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Base is what the node's chains and jumps need for one pair of addresses:
// the plugin records it at ADD so that a long-running process (the
// responder's repair loop) can rebuild the base after a firewall reload
// without reading the runtime's conflist.
type Base struct {
	Metadata  netip.AddrPort `json:"metadata"`
	Responder netip.AddrPort `json:"responder"`
	// Extra are the other addresses of Metadata's family redirected like it
	// (netconf containerCredentialsAddress, or its IPv6 key). Records
	// written before it existed have none.
	Extra []netip.AddrPort `json:"extra,omitempty"`
	// Backend is what programs the redirect: "iptables" or "nftables"
	// ("" in records written before backends had names: iptables).
	Backend  string    `json:"backend"`
	Recorded time.Time `json:"recorded"`
}

func (b Base) key() []byte { return []byte(b.Metadata.String() + " " + b.Responder.String()) }

// Key tells bases apart by everything their rules depend on (Recorded
// aside).
func (b Base) Key() string {
	k := b.Backend + " " + string(b.key())
	for _, a := range b.Extra {
		k += " " + a.String()
	}
	return k
}

// RecordBase stores b unless the same addresses and backend are recorded
// already (a switch of backends rewrites the record, keeping its extra
// addresses): an ADD calls it in its own transaction, where it costs one read.
// A record of the same metadata and responder addresses gains b's extra
// addresses it lacks and keeps its own: two networks of the node may
// differ in them, and the jumps of either must be kept whole, not those of
// whichever ADD ran last.
func (t *Tx) RecordBase(b Base) error {
	bk := t.tx.Bucket(bucketBases)
	if bk == nil {
		return fmt.Errorf("binding store has no %s bucket", bucketBases)
	}
	if v := bk.Get(b.key()); v != nil {
		// A record of another backend (a switch) keeps its extra
		// addresses too: they may be another network's.
		var old Base
		if json.Unmarshal(v, &old) == nil {
			extra := slices.Clone(old.Extra)
			for _, a := range b.Extra {
				if !slices.Contains(extra, a) {
					extra = append(extra, a)
				}
			}
			if old.Backend == b.Backend && len(extra) == len(old.Extra) {
				return nil
			}
			b.Extra = extra
		}
	}
	v, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return bk.Put(b.key(), v)
}

// Bases returns every recorded base, skipping records it cannot read.
func (t *Tx) Bases() []Base {
	bk := t.tx.Bucket(bucketBases)
	if bk == nil {
		return nil
	}
	var out []Base
	bk.ForEach(func(_, v []byte) error {
		var b Base
		if json.Unmarshal(v, &b) == nil && b.Metadata.IsValid() && b.Responder.IsValid() {
			out = append(out, b)
		}
		return nil
	})
	return out
}

// ReadBases returns the bases recorded under dir (none without a store).
func ReadBases(dir string, timeout time.Duration) ([]Base, error) {
	var out []Base
	err := Read(dir, timeout, func(tx *Tx) error {
		out = tx.Bases()
		return nil
	})
	return out, err
}
