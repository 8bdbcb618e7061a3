package redirect

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The nftables backend's objects. Like the iptables chain names they are
// part of the node's state: never rename them.
//
//	table ip metabind (ip6 metabind for IPv6)
//	  map pod_dnat    { ifname . ipv4_addr : ipv4_addr . inet_service }  (veth, pod IP) -> responder
//	  set pod_src     { ifname . ipv4_addr }                             (veth, pod IP) bound
//	  map bridge_dnat { ipv4_addr : ipv4_addr . inet_service }           bridged pod IP -> responder
//	  set bridge_src  { ipv4_addr }                                      bridged pod IP bound
//	  chain prerouting { type nat hook prerouting priority dstnat - 10 }
//	    per redirected address A: A from (iifname . ip saddr) in @pod_dnat, or from a
//	    bridge with ip saddr in @bridge_dnat: dnat to the mapped responder
//	  chain input { type filter hook input priority filter - 10 }
//	    to the responder, not from lo: jump source; to A, not from lo: reject
//	  chain forward { type filter hook forward priority filter - 10 }
//	    to A: reject
//	  chain source
//	    iifname . ip saddr @pod_src accept; iifkind bridge, ip saddr @bridge_src accept; reject
//	table bridge metabind4 (metabind6)
//	  set ports { ifname . ipv4_addr }  (bridge port, pod IP) bound
//	  chain prerouting { type filter hook prerouting priority -200 }
//	    ip to A or the responder, (iifname . ip saddr) not in @ports: drop
//
// A pod's ADD is one netlink transaction adding its elements, its DEL one
// deleting them: nothing grows with the number of pods but the sets' hash
// tables.
//
// Priorities. NAT: the first nat chain of a hook that maps a connection
// decides it, so prerouting runs at dstnat - 10, before iptables-nft's
// PREROUTING and kube-proxy's nftables chains (dstnat): a bound pod's
// metadata traffic goes to the responder whatever they hold. Filter: a
// reject (a drop) in any base chain is final, and an accept ends only the
// chain it is in, so metabind's block and source check hold whatever
// another table (Calico's "accept everything from pods") accepts, at any
// priority; filter - 10 only runs them first. Bridge: -200 runs before
// br_netfilter (0) hands bridged frames to the IP hooks, on the frame as
// the pod sent it. On a bridge the IP hooks see the bridge as the input
// interface, so the port is checked in the bridge table (physdev's job in
// the iptables backend) and the IP side checks "came in by a bridge" and the
// address.
// Set names avoid nft's keywords, so `nft list map ip metabind pod_dnat`
// works as typed.
const (
	NFTTable       = "metabind"
	nftPrerouting  = "prerouting"
	nftInput       = "input"
	nftForward     = "forward"
	nftSource      = "source"
	nftSetDNAT     = "pod_dnat"
	nftSetSource   = "pod_src"
	nftSetBDNAT    = "bridge_dnat"
	nftSetBSource  = "bridge_src"
	nftSetPorts    = "ports"
	nftPriorityNAT = -110
	nftPriorityFil = -10
	nftPriorityBr  = -200
)

// nftBridgeTables are the names of the bridge tables by family.
var nftBridgeTables = [2]string{"metabind4", "metabind6"}

// NFT is the nftables backend: one family's redirect, programmed through
// netlink (no process runs on ADD or DEL).
type NFT struct {
	family    int
	f         fam
	metadata  netip.AddrPort
	responder netip.AddrPort
	extra     []netip.AddrPort
	// dial opens a connection; tests and the benchmark may point it at a
	// network namespace.
	dial func() (*nftables.Conn, error)
}

// NewNFT returns the nftables backend for a metadata address (and the
// extra addresses of its family). It sends nothing yet.
func NewNFT(metadata, responder netip.AddrPort, extra ...netip.AddrPort) (*NFT, error) {
	f := Family(metadata.Addr())
	return &NFT{family: f, f: fams[f], metadata: metadata, responder: responder, extra: slices.Clone(extra),
		dial: func() (*nftables.Conn, error) { return nftables.New() }}, nil
}

// nftSupported reports whether the kernel answers nftables requests.
func nftSupported() bool {
	c, err := nftables.New()
	if err != nil {
		return false
	}
	_, err = c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	return err == nil
}

func (n *NFT) Name() string             { return BackendNFTables }
func (n *NFT) Family() int              { return n.family }
func (n *NFT) Metadata() netip.AddrPort { return n.metadata }
func (n *NFT) Extra() []netip.AddrPort  { return slices.Clone(n.extra) }
func (n *NFT) SetAfterPiece(func())     {} // a rule is one transaction: no piece boundary to crash at

func (n *NFT) Ready() error {
	c, err := n.dial()
	if err == nil {
		_, err = c.ListTablesOfFamily(n.f.table)
	}
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

func (n *NFT) ipTable() *nftables.Table {
	return &nftables.Table{Family: n.f.table, Name: NFTTable}
}

func (n *NFT) bridgeTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyBridge, Name: nftBridgeTables[n.family]}
}

// sets are the backend's sets, empty, as created.
func (n *NFT) sets() []*nftables.Set {
	ifAddr := nftables.MustConcatSetType(nftables.TypeIFName, n.f.addr)
	to := nftables.MustConcatSetType(n.f.addr, nftables.TypeInetService)
	ip, br := n.ipTable(), n.bridgeTable()
	return []*nftables.Set{
		{Table: ip, Name: nftSetDNAT, KeyType: ifAddr, IsMap: true, DataType: to},
		{Table: ip, Name: nftSetSource, KeyType: ifAddr},
		{Table: ip, Name: nftSetBDNAT, KeyType: n.f.addr, IsMap: true, DataType: to},
		{Table: ip, Name: nftSetBSource, KeyType: n.f.addr},
		{Table: br, Name: nftSetPorts, KeyType: ifAddr},
	}
}

func (n *NFT) set(name string) *nftables.Set {
	for _, s := range n.sets() {
		if s.Name == name {
			return s
		}
	}
	panic("no nftables set " + name)
}

// chains are the backend's chains.
func (n *NFT) chains() []*nftables.Chain {
	ip, br := n.ipTable(), n.bridgeTable()
	prio := nftables.ChainPriorityRef
	return []*nftables.Chain{
		{Table: ip, Name: nftPrerouting, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: prio(nftPriorityNAT)},
		{Table: ip, Name: nftInput, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: prio(nftPriorityFil)},
		{Table: ip, Name: nftForward, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: prio(nftPriorityFil)},
		{Table: ip, Name: nftSource},
		{Table: br, Name: nftPrerouting, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: prio(nftPriorityBr)},
	}
}

func (n *NFT) chain(bridge bool, name string) *nftables.Chain {
	t := n.ipTable()
	if bridge {
		t = n.bridgeTable()
	}
	return &nftables.Chain{Table: t, Name: name}
}

// rules are the base rules this NFT owns, the source chain's included.
func (n *NFT) rules() []nftRule {
	return append(n.f.baseRules(append([]netip.AddrPort{n.metadata}, n.extra...), n.responder), n.f.sourceRules()...)
}

// tableFor is the table of set name.
func (n *NFT) tableFor(set string) *nftables.Table {
	if set == nftSetPorts {
		return n.bridgeTable()
	}
	return n.ipTable()
}

// put queues elements' addition (del: deletion) on c: one message per
// set.
func (n *NFT) put(c *nftables.Conn, els []element, del bool) error {
	bySet := map[string][]nftables.SetElement{}
	for _, e := range els {
		bySet[e.set] = append(bySet[e.set], e.el)
	}
	for _, s := range n.sets() {
		if len(bySet[s.Name]) == 0 {
			continue
		}
		var err error
		if del {
			err = c.SetDeleteElements(s, bySet[s.Name])
		} else {
			err = c.SetAddElements(s, bySet[s.Name])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// chunk is how many elements one transaction carries: a netlink batch
// must fit the socket's buffers. A pod's ADD or DEL is one transaction;
// only bulk repairs (a seed, a GC) take more.
const chunk = 600

// apply adds (del: deletes) the elements of rules.
func (n *NFT) apply(rules []Rule, del bool) error {
	var els []element
	for _, r := range rules {
		els = append(els, r.elements()...)
	}
	return n.commit(els, del)
}

// commit adds (del: deletes) elements in transactions of chunk each.
func (n *NFT) commit(els []element, del bool) error {
	for len(els) > 0 {
		k := min(len(els), chunk)
		c, err := n.dial()
		if err != nil {
			return err
		}
		if err := n.put(c, els[:k], del); err != nil {
			return err
		}
		if err := c.Flush(); err != nil {
			return err
		}
		els = els[k:]
	}
	return nil
}

// AddBatch adds the elements of rules in one transaction; with verify it
// first audits the base (netlink dumps, no process). A missing table or set
// fails it (ErrBatch).
func (n *NFT) AddBatch(rules []Rule, verify bool) error {
	if verify {
		problems, err := n.AuditBase()
		if err != nil || len(problems) > 0 {
			return fmt.Errorf("%w: nftables base: %v %v", ErrBatch, problems, err)
		}
	}
	if err := n.apply(rules, false); err != nil {
		return fmt.Errorf("%w: nftables: %v", ErrBatch, err)
	}
	return nil
}

// RemoveBatch deletes the elements of rules in one transaction; one
// already gone fails it whole (ErrBatch).
func (n *NFT) RemoveBatch(rules []Rule) error {
	if err := n.apply(rules, true); err != nil {
		return fmt.Errorf("%w: nftables: %v", ErrBatch, err)
	}
	return nil
}

// Add adds what of rule is missing, in one transaction.
func (n *NFT) Add(rule Rule) (bool, error) {
	ok, err := n.Has(rule)
	if err != nil || ok {
		return false, err
	}
	if err := n.apply([]Rule{rule}, false); err != nil {
		return false, fmt.Errorf("redirect %s on %s: nftables: %w", rule.IP, rule.HostInterface, err)
	}
	return true, nil
}

// Remove deletes rule's elements: in one transaction, or one by one when
// some are gone already.
func (n *NFT) Remove(rule Rule) error {
	if n.apply([]Rule{rule}, true) == nil {
		return nil
	}
	for _, e := range rule.elements() {
		if err := n.deleteElement(e); err != nil {
			return fmt.Errorf("remove redirect %s on %s: %w", rule.IP, rule.HostInterface, err)
		}
	}
	return nil
}

// deleteElement deletes one element; one not there is fine.
func (n *NFT) deleteElement(e element) error {
	c, err := n.dial()
	if err != nil {
		return err
	}
	if err := n.put(c, []element{e}, true); err != nil {
		return err
	}
	if err := c.Flush(); err != nil && !isNFTNotExist(err) {
		return fmt.Errorf("nftables: delete from %s: %w", e.set, err)
	}
	return nil
}

// isNFTNotExist reports whether err says the object is not there (ENOENT).
// google/nftables wraps some netlink errors with %v (GetSetElements' and
// GetSets' "receiveAckAware: ..."), losing the errno: a set in a deleted
// table then reads as a failure, not as missing, and ListOwned and Has fail
// until the base is back. Those are matched by their text.
func isNFTNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || (err != nil && strings.HasSuffix(err.Error(), ": "+unix.ENOENT.Error()))
}

// Has reports whether all of rule's elements are in their sets.
func (n *NFT) Has(rule Rule) (bool, error) {
	c, err := n.dial()
	if err != nil {
		return false, err
	}
	for _, e := range rule.elements() {
		els, err := c.GetSetElements(n.set(e.set))
		if err != nil {
			if isNFTNotExist(err) {
				return false, nil
			}
			return false, fmt.Errorf("nftables: list %s: %w", e.set, err)
		}
		if !slices.ContainsFunc(els, func(x nftables.SetElement) bool {
			return bytes.Equal(x.Key, e.el.Key) && bytes.Equal(x.Val, e.el.Val)
		}) {
			return false, nil
		}
	}
	return true, nil
}

// ListOwned returns every element of the per-pod sets as an Owned: the
// DNAT maps' as NATChain pieces, the source sets' (and the bridge port
// set's) as SourceChain ones.
func (n *NFT) ListOwned() ([]Owned, error) {
	c, err := n.dial()
	if err != nil {
		return nil, err
	}
	var out []Owned
	for _, s := range n.sets() {
		els, err := c.GetSetElements(s)
		if err != nil {
			if isNFTNotExist(err) {
				continue
			}
			return nil, fmt.Errorf("nftables: list %s: %w", s.Name, err)
		}
		for _, el := range els {
			if o, ok := n.owned(s.Name, el); ok {
				out = append(out, o)
			}
		}
	}
	return out, nil
}

// owned reads an element back: its key, its data and its comment
// ("metabind:<containerID>/<ifname> <host interface>").
func (n *NFT) owned(set string, el nftables.SetElement) (Owned, bool) {
	o := Owned{Table: n.tableFor(set).Name, Chain: SourceChain, Bridged: set != nftSetSource && set != nftSetDNAT}
	if set == nftSetDNAT || set == nftSetBDNAT {
		o.Chain = NATChain
	}
	att, host, _ := strings.Cut(el.Comment, " ")
	o.Spec = []string{"element", set, el.Comment}
	var ok bool
	if o.ContainerID, o.IfName, ok = parseComment(att); !ok {
		return o, false
	}
	o.Interface = host
	key := el.Key
	if len(key) == unix.IFNAMSIZ+int(n.f.alen) {
		o.Interface = string(bytes.TrimRight(key[:unix.IFNAMSIZ], "\x00"))
		key = key[unix.IFNAMSIZ:]
	}
	o.IP, _ = netip.AddrFromSlice(key)
	if o.Chain == NATChain && len(el.Val) >= int(n.f.alen)+2 {
		a, _ := netip.AddrFromSlice(el.Val[:n.f.alen])
		o.To = netip.AddrPortFrom(a, uint16(el.Val[n.f.alen])<<8|uint16(el.Val[n.f.alen+1]))
	}
	o.Spec = append(o.Spec, o.Interface, o.IP.String())
	return o, o.IP.IsValid() && o.Interface != ""
}

// element is the set element o was read from.
func (n *NFT) element(o Owned) (element, bool) {
	if len(o.Spec) < 2 || o.Spec[0] != "element" {
		return element{}, false
	}
	r := Rule{HostInterface: o.Interface, Bridged: o.Bridged, IP: o.IP, Responder: o.To}
	for _, e := range r.elements() {
		if e.set == o.Spec[1] {
			e.el.Val = nil // deleted by key
			return e, true
		}
	}
	return element{}, false
}

// Delete removes a listed element; one already gone is not an error.
func (n *NFT) Delete(o Owned) error {
	e, ok := n.element(o)
	if !ok {
		return fmt.Errorf("remove %s: not an nftables element of metabind's", o)
	}
	return n.deleteElement(e)
}

// DeleteBatch removes listed elements in one transaction (ErrBatch if
// any is gone).
func (n *NFT) DeleteBatch(owned []Owned) error {
	els := make([]element, len(owned))
	for i, o := range owned {
		var ok bool
		if els[i], ok = n.element(o); !ok {
			return fmt.Errorf("%w: %s is not an nftables element of metabind's", ErrBatch, o)
		}
	}
	if err := n.commit(els, true); err != nil {
		return fmt.Errorf("%w: nftables: %v", ErrBatch, err)
	}
	return nil
}

// RemoveByComment deletes the elements whose comment names the
// attachment.
func (n *NFT) RemoveByComment(containerID, ifName string) (int, error) {
	owned, err := n.ListOwned()
	if err != nil {
		return 0, err
	}
	var mine []Owned
	for _, o := range owned {
		if o.ContainerID == containerID && o.IfName == ifName {
			mine = append(mine, o)
		}
	}
	if len(mine) == 0 || n.DeleteBatch(mine) == nil {
		return len(mine), nil
	}
	for i, o := range mine {
		if err := n.Delete(o); err != nil {
			return i, err
		}
	}
	return len(mine), nil
}

// Present reports whether either of the family's tables exists.
func (n *NFT) Present() (bool, error) {
	have, err := n.tables()
	return have[0] || have[1], err
}

// tables reports which of the ip/ip6 table and the bridge table exist.
func (n *NFT) tables() ([2]bool, error) {
	var have [2]bool
	c, err := n.dial()
	if err != nil {
		return have, err
	}
	for i, t := range []*nftables.Table{n.ipTable(), n.bridgeTable()} {
		ts, err := c.ListTablesOfFamily(t.Family)
		if err != nil {
			return have, fmt.Errorf("nftables: list tables: %w", err)
		}
		have[i] = slices.ContainsFunc(ts, func(x *nftables.Table) bool { return x.Name == t.Name })
	}
	return have, nil
}

// RemoveAll deletes the family's tables, with every base and element, in
// one transaction.
func (n *NFT) RemoveAll() error {
	have, err := n.tables()
	if err != nil || !have[0] && !have[1] {
		return err
	}
	c, err := n.dial()
	if err != nil {
		return err
	}
	for i, t := range []*nftables.Table{n.ipTable(), n.bridgeTable()} {
		if have[i] {
			c.DelTable(t)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete metabind's tables: %w", err)
	}
	return nil
}

// comment reads a rule's comment from its user data.
func comment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}
