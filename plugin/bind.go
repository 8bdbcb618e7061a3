package plugin

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// commitBindings records want in one store transaction, with the bases the
// netconf needs (for the responder's repair loop). It returns the bindings
// whose rules the new ones replace (this attachment's old IPs or
// interfaces) and the IPs whose rule is already in place (a retried ADD).
//
// An IP still bound to another attachment (IPAM handed it on before the old
// holder's DEL reached metabind) is taken over in steps. Binding it to the
// new pod at once would leave the old holder's (veth, IP) rule sending its
// requests to the responder, which knows callers only by address, and they
// would be answered with the new pod's identity. So the old binding is first
// marked released (the responder treats it as unbound: the old holder gets
// 404), then its rules go, and only then is the IP bound to the new pod. If
// this ADD fails or dies in between, the released record stays and says
// whose rules to remove: the retried ADD, the old holder's DEL or a
// reconciliation removes them before anyone is bound to the IP again. An
// unreadable record in the way is taken over the same way, its rules found
// by address since the record cannot say whose they are.
func (p *Plugin) commitBindings(c *call, rds *redirect.Set, want []store.Binding) (superseded []store.Binding, hadRule map[netip.Addr]bool, err error) {
	cleared := map[netip.Addr]bool{} // IPs whose previous holder's rules this ADD removed
	for attempt := 0; attempt < 3; attempt++ {
		var held []store.Binding    // bound to another attachment
		var unreadable []netip.Addr // held by a record nobody can read
		superseded, hadRule = nil, map[netip.Addr]bool{}
		err = p.update(c, func(tx *store.Tx) error {
			held, unreadable = nil, nil
			for _, b := range want {
				old, ok, err := tx.Get(b.IP)
				if err != nil {
					return err
				}
				switch {
				case ok && old.Attachment() != b.Attachment() && !(old.Released && cleared[b.IP]):
					held = append(held, old)
				case !ok && isUnreadable(tx, b.IP) && !cleared[b.IP]:
					unreadable = append(unreadable, b.IP)
				}
			}
			if len(held)+len(unreadable) == 0 {
				return p.putBindings(c, tx, want, &superseded, hadRule)
			}
			for _, old := range held {
				if !old.Released {
					old.Released = true
					if err := tx.Put(old); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil || len(held)+len(unreadable) == 0 {
			return superseded, hadRule, err
		}
		p.checkpoint("add:released")
		var replaced []string
		for _, old := range held {
			rd, err := rds.For(old.IP)
			if err == nil {
				err = rd.Remove(ruleOf(old))
			}
			if err != nil {
				return nil, nil, fmt.Errorf("remove the rules of %s's previous holder %s: %w", old.IP, old.ContainerID, err)
			}
			cleared[old.IP] = true
			replaced = append(replaced, old.IP.String()+" from "+old.Namespace+"/"+old.Pod+" ("+old.ContainerID+")")
		}
		for _, ip := range unreadable {
			if err := p.removeOthersRules(c, rds, ip); err != nil {
				return nil, nil, err
			}
			cleared[ip] = true
			replaced = append(replaced, ip.String()+" from an unreadable record")
		}
		c.log.Warn("IPs were still bound to other containers: their bindings were released and their rules removed first", "replaced", replaced)
	}
	return nil, nil, fmt.Errorf("IPs %v keep being bound by other containers while this ADD takes them over: IPAM is handing them out twice", want)
}

func isUnreadable(tx *store.Tx, ip netip.Addr) bool {
	for _, r := range tx.Unreadable() {
		if r.Key == ip.String() {
			return true
		}
	}
	return false
}

// removeOthersRules removes every per-pod rule for ip that is not this
// attachment's: the rules of a holder whose record cannot be read.
func (p *Plugin) removeOthersRules(c *call, rds *redirect.Set, ip netip.Addr) error {
	rd, err := rds.For(ip)
	if err != nil {
		return err
	}
	owned, err := rd.ListOwned()
	if err != nil {
		return err
	}
	for _, o := range owned {
		if o.IP == ip && (o.ContainerID != c.args.ContainerID || o.IfName != c.args.IfName) {
			if err := rd.Delete(o); err != nil {
				return err
			}
		}
	}
	return nil
}

// putBindings writes want over this attachment's previous bindings.
func (p *Plugin) putBindings(c *call, tx *store.Tx, want []store.Binding, superseded *[]store.Binding, hadRule map[netip.Addr]bool) error {
	ips := make([]netip.Addr, len(want))
	for i, b := range want {
		ips[i] = b.IP
	}
	prior, err := tx.ByAttachment(c.attachment())
	if err != nil {
		return err
	}
	for _, old := range prior {
		if !contains(ips, old.IP) {
			*superseded = append(*superseded, old)
			if err := tx.Delete(old.IP); err != nil {
				return err
			}
		}
	}
	for _, b := range want {
		old, ok, err := tx.Get(b.IP)
		if err != nil {
			return err
		}
		switch {
		case ok && ruleOf(old) == ruleOf(b):
			hadRule[b.IP] = true
		case ok:
			*superseded = append(*superseded, old) // same pod, another interface
		}
		if err := tx.Put(b); err != nil {
			return err
		}
	}
	for _, base := range p.bases(c) {
		if err := tx.RecordBase(base); err != nil {
			return err
		}
	}
	p.checkpoint("add:in-transaction")
	return nil
}

// bases are the base records of this call's netconf, one per family.
func (p *Plugin) bases(c *call) []store.Base {
	out := []store.Base{{Metadata: c.conf.Metadata, Responder: c.conf.Responder, Extra: extra(c.conf.ContainerCredentials), Backend: c.backend, Recorded: p.Now().UTC()}}
	if c.conf.Metadata6.IsValid() {
		out = append(out, store.Base{Metadata: c.conf.Metadata6, Responder: c.conf.Responder6, Extra: extra(c.conf.ContainerCredentials6), Backend: c.backend, Recorded: p.Now().UTC()})
	}
	return out
}

// extra is a base's list of extra redirected addresses: none for an unset
// key.
func extra(addrs ...netip.AddrPort) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range addrs {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// RulesLockTimeout bounds a pod change's wait for the rules lock: longer
// than a reconciliation waits for it (5 s for the repair loop, 10 s for
// GC) plus its work, so a reconciliation delays pod changes but does not
// fail them.
const RulesLockTimeout = 20 * time.Second

// lockRules takes the rules lock shared for a pod change (see
// store.LockRulesShared), creating the state directory if needed.
func (p *Plugin) lockRules(c *call) (io.Closer, error) {
	if err := os.MkdirAll(c.conf.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	return store.LockRulesShared(c.conf.StateDir, RulesLockTimeout)
}

// warnAboutInput notes what will make the pod's requests fail although
// ADD succeeds, so an admin reading the log finds the cause.
func (p *Plugin) warnAboutInput(c *call) {
	var warnings []string
	if c.pod.K8S_POD_NAME == "" {
		warnings = append(warnings, "CNI_ARGS carry no K8S_POD_NAME: the binding matches no identity rule")
	}
	if c.pod.K8S_POD_UID == "" {
		warnings = append(warnings, "CNI_ARGS carry no K8S_POD_UID: every token request from this pod will be answered 404 (tokens are bound to the pod's UID)")
	}
	if !c.conf.Metadata6.IsValid() {
		for _, ip := range podIPs(c.conf.Result, c.args.IfName, true) {
			if ip.Is6() {
				warnings = append(warnings, "the pod has IPv6 address "+ip.String()+" but metadataAddress6 is unset: its IPv6 metadata traffic is neither redirected nor blocked")
				break
			}
		}
	}
	for _, w := range warnings {
		c.log.Warn(w)
	}
}
