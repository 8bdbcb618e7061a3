package plugin

import (
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// commitBindings records want in one store transaction, with the bases the
// netconf needs (for the responder's repair loop). It returns the bindings
// whose rules the new ones replace (this attachment's old IPs or
// interfaces) and the IPs whose rule is already in place (a retried ADD).
//
// An IP still bound to another attachment (IPAM handed it on before the old
// holder's DEL reached metabind) is taken over in two steps. Binding it to
// the new pod at once would leave the old holder's (veth, IP) rule sending
// its requests to the responder for as long as it takes to remove that
// rule, and the responder, which knows callers only by address, would
// answer them with the new pod's identity. So the old binding goes first
// (the old holder's requests meet no binding: 404), then its rules, and
// only then is the IP bound to the new pod.
func (p *Plugin) commitBindings(c *call, rds *redirect.Set, want []store.Binding) (superseded []store.Binding, hadRule map[netip.Addr]bool, err error) {
	for attempt := 0; ; attempt++ {
		var taken []store.Binding
		superseded, hadRule = nil, map[netip.Addr]bool{}
		err = p.update(c, func(tx *store.Tx) error {
			taken = nil
			for _, b := range want {
				old, ok, err := tx.Get(b.IP)
				if err != nil {
					return err
				}
				if ok && old.Attachment() != b.Attachment() {
					taken = append(taken, old)
				}
			}
			if len(taken) > 0 {
				for _, old := range taken {
					if err := tx.Delete(old.IP); err != nil {
						return err
					}
				}
				return nil
			}
			return p.putBindings(c, tx, want, &superseded, hadRule)
		})
		if err != nil || len(taken) == 0 {
			return superseded, hadRule, err
		}
		if attempt > 0 {
			// Two containers claim the IP at once: IPAM is handing it
			// out twice, and neither may have it by default.
			return nil, nil, fmt.Errorf("IP %s was bound to container %s while this ADD took it over from another", taken[0].IP, taken[0].ContainerID)
		}
		var replaced []string
		for _, old := range taken {
			rd, err := rds.For(old.IP)
			if err == nil {
				err = rd.Remove(ruleOf(old))
			}
			if err != nil {
				return nil, nil, fmt.Errorf("remove the rules of %s's previous holder %s: %w", old.IP, old.ContainerID, err)
			}
			replaced = append(replaced, old.IP.String()+" from "+old.Namespace+"/"+old.Pod+" ("+old.ContainerID+")")
		}
		c.note("warning", "IPs were still bound to other containers; their bindings and rules were removed first", "replaced", replaced)
	}
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
	out := []store.Base{{Metadata: c.conf.Metadata, Responder: c.conf.Responder, Backend: "iptables", Recorded: p.Now().UTC()}}
	if c.conf.Metadata6.IsValid() {
		out = append(out, store.Base{Metadata: c.conf.Metadata6, Responder: c.conf.Responder6, Backend: "iptables", Recorded: p.Now().UTC()})
	}
	return out
}

// lockRules takes the rules lock shared for a pod change (see
// store.LockRulesShared), creating the state directory if needed.
func (p *Plugin) lockRules(c *call) (io.Closer, error) {
	if err := os.MkdirAll(c.conf.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	return store.LockRulesShared(c.conf.StateDir, p.LockTimeout)
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
