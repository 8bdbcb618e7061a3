package redirect

import (
	"fmt"
	"net/netip"

	"github.com/metabind/metabind/store"
)

// Backend programs the redirect of one address family: its base (the
// block, the source check, the DNAT hook) and the per-pod rules. Two
// implement it, as portmap keeps portmap_iptables.go and
// portmap_nftables.go behind one interface: *Redirect (iptables, through
// iptables-restore and go-iptables) and *NFT (nftables, through netlink).
// Per-pod rules are found, matched and deleted through Owned whatever the
// backend, so reconcile, doctor and metabindctl read both the same way.
type Backend interface {
	// Name is what store.Base.Backend records: BackendIPTables or
	// BackendNFTables.
	Name() string
	Family() int
	Metadata() netip.AddrPort
	Extra() []netip.AddrPort
	// Ready tells whether the backend works at all on this node (STATUS).
	Ready() error

	// Add installs what of rule is missing, Remove deletes it (what is
	// already gone is not an error), Has reports whether all of it is in.
	Add(rule Rule) (bool, error)
	Remove(rule Rule) error
	Has(rule Rule) (bool, error)
	// AddBatch and RemoveBatch change many rules at once and fail whole
	// with ErrBatch when they cannot (a missing base, a piece already
	// gone); callers fall back to Add and Remove. verify also proves the
	// base whole.
	AddBatch(rules []Rule, verify bool) error
	RemoveBatch(rules []Rule) error
	RemoveByComment(containerID, ifName string) (int, error)

	// ListOwned returns every per-pod piece found on the node; Delete and
	// DeleteBatch remove listed ones.
	ListOwned() ([]Owned, error)
	Delete(o Owned) error
	DeleteBatch(owned []Owned) error

	// AuditBase lists what is wrong with the base (reads only), CheckBase
	// returns the first of it, EnsureBase repairs it. EnsureBaseWith does
	// the same, and when it installs the base from nothing it puts seed's
	// per-pod rules in before the base takes effect: switching backends on
	// a node with live pods never refuses a bound pod.
	AuditBase() ([]string, error)
	CheckBase() error
	EnsureBase() ([]string, error)
	EnsureBaseWith(seed []Rule) ([]string, error)

	// Present reports whether any of the backend's objects of this family
	// are on the node; RemoveAll removes them all (the base of every
	// address, and every per-pod rule): the old backend's side of a switch.
	Present() (bool, error)
	RemoveAll() error

	// SetAfterPiece sets the crash tests' checkpoint between the pieces of
	// a rule added or removed one by one.
	SetAfterPiece(func())
}

var (
	_ Backend = (*Redirect)(nil)
	_ Backend = (*NFT)(nil)
)

// The netconf's and store.Base's names of the backends. Never rename them:
// they are recorded in every node's store.
const (
	BackendIPTables = "iptables"
	BackendNFTables = "nftables"
	BackendAuto     = "auto"
)

// DefaultBackend is the backend of a netconf without "backend": nftables
// where the kernel answers its netlink requests, iptables elsewhere. A
// recorded base without a backend is iptables (ForBase): it was written
// before backends had names.
const DefaultBackend = BackendAuto

// Maker creates the Backend of one metadata address and the other
// addresses of its family redirected like it (a backend's constructor, or
// a test's).
type Maker func(metadata, responder netip.AddrPort, extra ...netip.AddrPort) (Backend, error)

// MakerFor returns the constructor of a backend by name: "iptables",
// "nftables", "auto" (nftables where the kernel has it) or "" (the
// default). Resolve "auto" first (Resolve) to record what was picked.
func MakerFor(name string) (Maker, error) {
	switch Resolve(name) {
	case BackendIPTables:
		return func(m, r netip.AddrPort, extra ...netip.AddrPort) (Backend, error) { return New(m, r, extra...) }, nil
	case BackendNFTables:
		return func(m, r netip.AddrPort, extra ...netip.AddrPort) (Backend, error) { return NewNFT(m, r, extra...) }, nil
	}
	return nil, fmt.Errorf("unknown redirect backend %q (want %q, %q or %q)", name, BackendAuto, BackendNFTables, BackendIPTables)
}

// Resolve turns a netconf's backend into the one that runs: "" is
// DefaultBackend, "auto" is nftables where the kernel answers nftables'
// netlink requests and iptables elsewhere. Other names are returned as they
// are.
func Resolve(name string) string {
	if name == "" {
		name = DefaultBackend
	}
	if name != BackendAuto {
		return name
	}
	if nftSupported() {
		return BackendNFTables
	}
	return BackendIPTables
}

// Other is the backend a node switches away from: the one that is not
// name.
func Other(name string) string {
	if Resolve(name) == BackendNFTables {
		return BackendIPTables
	}
	return BackendNFTables
}

// ForBase makes the backend a recorded base names, for its addresses. A
// record with no backend was written by iptables-only releases.
func ForBase(b store.Base) (Backend, error) {
	name := b.Backend
	if name == "" {
		name = BackendIPTables
	}
	mk, err := MakerFor(name)
	if err != nil {
		return nil, err
	}
	return mk(b.Metadata, b.Responder, b.Extra...)
}

// Retire removes the objects of the backend rd is not (the other one's
// base and per-pod rules of rd's family), if there are any: the last step
// of a switch, once rd's base and every live binding's rules are in. It
// reports whether it removed anything.
func Retire(rd Backend) (bool, error) {
	mk, err := MakerFor(Other(rd.Name()))
	if err != nil {
		return false, err
	}
	// Present and RemoveAll find the objects by name and comment, not by
	// responder address: the metadata address stands in for it.
	old, err := mk(rd.Metadata(), rd.Metadata(), rd.Extra()...)
	if err != nil {
		return false, err
	}
	if ok, err := old.Present(); err != nil || !ok {
		return false, nil // a backend that cannot run here holds nothing
	}
	if err := old.RemoveAll(); err != nil {
		return false, fmt.Errorf("remove the %s redirect after switching to %s: %w", old.Name(), rd.Name(), err)
	}
	return true, nil
}
