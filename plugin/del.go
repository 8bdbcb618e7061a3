package plugin

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// Del removes the bindings and rules of CNI_CONTAINERID + CNI_IFNAME. It is
// idempotent and needs neither prevResult nor the netns: containerd sends a
// second DEL at sandbox removal with both empty.
//
// The bindings go first, in one short transaction, then the rules: between
// the two the pod's traffic still reaches the responder, which no longer
// knows the IP and answers 404.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	return p.run("DEL", args, p.del)
}

func (p *Plugin) del(c *call) error {
	// Held until the rules are out, so a reconciliation never sees the
	// binding gone and the rules still there (and restores nothing).
	lock, err := p.lockRules(c)
	if err != nil {
		return err
	}
	defer lock.Close()
	st, err := store.Open(c.conf.StateDir, p.LockTimeout)
	if err != nil {
		return err
	}
	bindings, err := st.Remove(func(tx *store.Tx) ([]store.Binding, error) {
		return tx.ByAttachment(c.attachment())
	})
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if len(bindings) > 0 {
		p.checkpoint("del:committed")
	}

	if len(bindings) == 0 && c.args.Netns == "" {
		c.note("removed", 0) // the sandbox is gone and so is everything we had
		return nil
	}
	rds := p.redirects(c)
	if len(bindings) == 0 {
		// Nothing recorded, but an ADD that died between its commit and
		// its rule, or lost state, may have left a rule: find it by its
		// comment.
		all, err := rds.All()
		if err != nil {
			return err
		}
		found := 0
		for _, rd := range all {
			n, err := rd.RemoveByComment(c.args.ContainerID, c.args.IfName)
			found += n
			if err != nil {
				return err
			}
		}
		c.note("removed", 0, "rulesFoundByComment", found)
		return nil
	}
	// One iptables-restore run per family; if it is refused (a piece is
	// already gone), piece by piece, each missing piece being fine.
	for _, fam := range []int{0, 1} {
		var rules []redirect.Rule
		var rd redirect.Backend
		for _, b := range bindings {
			if redirect.Family(b.IP) == fam {
				if rd, err = rds.For(b.IP); err != nil {
					return err
				}
				rules = append(rules, ruleOf(b))
			}
		}
		if len(rules) == 0 {
			continue
		}
		if err := rd.RemoveBatch(rules); err == nil {
			continue
		} else if !errors.Is(err, redirect.ErrBatch) {
			return err
		}
		for _, r := range rules {
			if err := rd.Remove(r); err != nil {
				return err
			}
		}
	}
	p.checkpoint("del:rules-removed")
	c.note("removed", len(bindings))
	return nil
}
