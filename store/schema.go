package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout this binary writes. An older store is read
// as it is and migrated by the first writer (see initSchema). A newer one is
// read and written only when the compatVersion it records says this binary
// may (see readSchema); otherwise it is refused rather than misread.
//
//	1: bindings, attachments
//	2: bindings carry the CNI network name; the bases bucket records what
//	   the node's chains and jumps need; meta records compatVersion
const SchemaVersion = 2

// CompatVersion is the oldest schema whose binaries may read AND write a
// store of this SchemaVersion; it is stored beside it, so a binary rolled
// back across an additive change keeps serving. Raise SchemaVersion alone
// for a change older binaries can ignore (a new bucket, a new JSON field
// they drop and whose absence in their records reads as before). Raise
// CompatVersion to the new SchemaVersion too when older binaries would
// misread or corrupt the new layout: a renamed or re-keyed bucket, a field
// whose meaning changes, a record an older GC or DEL would wrongly delete.
//
// It is 2, not 1: a schema 1 binary neither records bases nor knows which
// network a binding belongs to, so its writes would be wrong here. Schema 1
// binaries predate the key and refuse any newer store whatever it says; the
// key serves binaries from schema 2 on.
const CompatVersion = 2

var (
	keySchema = []byte("schemaVersion")
	keyCompat = []byte("compatVersion") // since schema 2; see CompatVersion
)

// ErrNewerSchema is wrapped by the error of every open and read of a store
// whose layout this binary may not read.
var ErrNewerSchema = errors.New("binding store written by a newer, incompatible release")

// schema is what a store's meta bucket records about its layout.
type schema struct {
	version int // 0: a new store, nothing recorded yet
	compat  int // 0: not recorded (written before compatVersion existed)
}

// readSchema reads the store's versions and refuses a store this binary
// cannot read: every open and every read goes through it.
func readSchema(tx *bolt.Tx) (schema, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return schema{}, nil
	}
	var sc schema
	v, err := strconv.Atoi(string(meta.Get(keySchema)))
	if err != nil || v < 1 {
		return sc, fmt.Errorf("binding store has schema version %q; this binary reads versions 1 to %d", meta.Get(keySchema), SchemaVersion)
	}
	sc.version = v
	if c := meta.Get(keyCompat); c != nil {
		n, err := strconv.Atoi(string(c))
		if err != nil || n < 1 || n > v {
			return sc, fmt.Errorf("binding store of schema version %d has compatVersion %q, want 1 to %d", v, c, v)
		}
		sc.compat = n
	}
	if v > SchemaVersion && (sc.compat == 0 || sc.compat > SchemaVersion) {
		return sc, sc.newerError()
	}
	return sc, nil
}

func (sc schema) newerError() error {
	need, why := sc.version, "no compatVersion"
	if sc.compat != 0 {
		need, why = sc.compat, fmt.Sprintf("compatVersion %d", sc.compat)
	}
	self := filepath.Base(os.Args[0])
	return fmt.Errorf("%w: the store has schema version %d and %s, so only binaries of schema %d or newer may use it; "+
		"this %s is schema %d: upgrade %s (the metabind DaemonSet) to a release of schema %d or newer",
		ErrNewerSchema, sc.version, why, need, self, SchemaVersion, self, need)
}

// settled reports that an opening writer has nothing to record: the store
// is at SchemaVersion with its compatVersion, or newer (and readable, or
// readSchema would have refused it), whose versions it must keep.
func (sc schema) settled() bool {
	return sc.version > SchemaVersion || sc.version == SchemaVersion && sc.compat != 0
}

// initSchema creates a new store's buckets or migrates an older one to
// SchemaVersion, in the opening writer's one transaction, so a node keeps
// every binding across an upgrade and no reader sees half a migration.
//
// 1 -> 2 only adds the bases bucket and compatVersion: records written at 1
// read as bindings with an empty network (which conflist wrote them cannot
// be known, so a network's GC leaves them alone; `metabindctl gc` collects
// them once their netns is gone). A schema 2 store written before
// compatVersion existed gains the key and nothing else.
//
// A newer store this binary may write keeps its versions: a rolled-back
// binary never lowers them, so the newer binaries still find their layout.
func initSchema(tx *bolt.Tx) error {
	sc, err := readSchema(tx)
	if err != nil {
		return err
	}
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	for _, name := range buckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	if sc.settled() {
		return nil
	}
	if err := meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
		return err
	}
	return meta.Put(keyCompat, []byte(strconv.Itoa(CompatVersion)))
}

// buckets are the buckets of SchemaVersion's layout besides meta.
var buckets = [][]byte{bucketBindings, bucketAttachments, bucketBases}

func hasBuckets(tx *bolt.Tx) bool {
	for _, name := range buckets {
		if tx.Bucket(name) == nil {
			return false
		}
	}
	return true
}

// Versions returns the schema version and compatVersion the store records
// (0 for what it does not record: a new store, or one written before
// compatVersion existed).
func (t *Tx) Versions() (version, compat int) {
	sc, _ := readSchema(t.tx) // every Read has checked it already
	return sc.version, sc.compat
}
