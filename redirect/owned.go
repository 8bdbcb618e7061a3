package redirect

import (
	"fmt"
	"net/netip"
	"strings"
)

// Owned is a per-pod rule as found in the tables: what GC compares with the
// bindings when it looks for rules that lost theirs.
type Owned struct {
	Table, Chain string
	Spec         []string // as listed, to delete it by
	ContainerID  string
	IfName       string
	IP           netip.Addr
	Interface    string // -i or --physdev-in
	Bridged      bool   // Interface is a bridge port (--physdev-in)
	// To is where a DNAT piece sends the pod's traffic (--to-destination).
	To netip.AddrPort
}

// Is reports whether o is the piece of rule that lives in o's chain.
func (o Owned) Is(rule Rule) bool {
	return o.ContainerID == rule.ContainerID && o.IfName == rule.IfName && o.IP == rule.IP && o.Interface == rule.HostInterface &&
		(o.Chain != NATChain || o.To == rule.Responder)
}

func (o Owned) String() string {
	return fmt.Sprintf("%s %s %s", o.Table, o.Chain, strings.Join(o.Spec, " "))
}

// ListOwned returns every per-pod rule in NATChain and SourceChain (two
// invocations). The chains' own final rules are not per-pod and not listed.
func (r *Redirect) ListOwned() ([]Owned, error) {
	var out []Owned
	for _, tc := range [][2]string{{"nat", NATChain}, {"filter", SourceChain}} {
		lines, err := r.tables.List(tc[0], tc[1])
		if err != nil {
			if isNotExist(err) || chainInMissingTable(err) {
				continue
			}
			return nil, fmt.Errorf("list %s %s: %w", tc[0], tc[1], err)
		}
		for _, line := range lines {
			spec, ok := ruleFromListing(line)
			if !ok {
				continue
			}
			o, ok := parseOwned(spec)
			if !ok {
				continue
			}
			o.Table, o.Chain = tc[0], tc[1]
			out = append(out, o)
		}
	}
	return out, nil
}

// Delete removes a listed rule; one already gone is not an error.
func (r *Redirect) Delete(o Owned) error {
	if err := r.tables.Delete(o.Table, o.Chain, o.Spec...); err != nil && !isNotExist(err) {
		return fmt.Errorf("remove %s: %w", o, err)
	}
	return nil
}

// parseOwned reads a listed spec; ok only for a per-pod rule (its comment
// names an attachment: "metabind:<containerID>/<ifname>", no spaces).
func parseOwned(spec []string) (Owned, bool) {
	var o Owned
	comment, ok := valueOf(spec, "--comment")
	if !ok {
		return o, false
	}
	if o.ContainerID, o.IfName, ok = parseComment(comment); !ok {
		return o, false
	}
	if src, ok := valueOf(spec, "-s"); ok {
		if p, err := netip.ParsePrefix(src); err == nil && p.IsSingleIP() {
			o.IP = p.Addr()
		} else if a, err := netip.ParseAddr(src); err == nil {
			o.IP = a
		}
	}
	if in, ok := valueOf(spec, "-i"); ok {
		o.Interface = in
	} else if in, ok := valueOf(spec, "--physdev-in"); ok {
		o.Interface, o.Bridged = in, true
	}
	if to, ok := valueOf(spec, "--to-destination"); ok {
		o.To, _ = netip.ParseAddrPort(to)
	}
	o.Spec = spec
	return o, o.IP.IsValid() && o.Interface != ""
}

// parseComment reads the attachment a per-pod comment names
// ("metabind:<containerID>/<ifname>", no spaces).
func parseComment(comment string) (containerID, ifName string, ok bool) {
	att, ok := strings.CutPrefix(comment, CommentPrefix)
	if !ok || strings.ContainsAny(att, " \"") {
		return "", "", false
	}
	i := strings.LastIndexByte(att, '/')
	if i <= 0 || i == len(att)-1 {
		return "", "", false
	}
	return att[:i], att[i+1:], true
}

func valueOf(spec []string, flag string) (string, bool) {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == flag {
			return spec[i+1], true
		}
	}
	return "", false
}

func containsPair(spec []string, flag, value string) bool {
	v, ok := valueOf(spec, flag)
	return ok && v == value
}

// chainInMissingTable recognises how iptables-nft 1.8.9 answers a listing
// of a chain in a table that does not exist yet (a node before its first
// ADD): "chain `X' in table `nat' is incompatible, use 'nft' tool". Only
// iptables creates metabind's chains, so for them this means "not there".
func chainInMissingTable(err error) bool {
	return strings.Contains(err.Error(), "is incompatible, use 'nft' tool")
}

// DeleteBatch removes listed rules in one iptables-restore run; it fails
// whole (ErrBatch) if any is gone already, and the caller then deletes one
// by one.
func (r *Redirect) DeleteBatch(rules []Owned) error {
	if r.restore == nil {
		return fmt.Errorf("%w: no iptables-restore on this Redirect", ErrBatch)
	}
	var b batch
	for _, o := range rules {
		b.line(o.Table, "-D", o.Chain, o.Spec)
	}
	return r.restore(b.String())
}
