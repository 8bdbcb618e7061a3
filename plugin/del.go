package plugin

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/metabind/metabind/store"
)

// Del removes the bindings and rules of CNI_CONTAINERID + CNI_IFNAME. It is
// idempotent and needs neither prevResult nor the netns: containerd sends a
// second DEL at sandbox removal with both empty.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	return p.run("DEL", args, p.del)
}

func (p *Plugin) del(c *call) error {
	st, err := p.openStore(c)
	if err != nil {
		return err
	}
	defer st.Close()
	removed := 0
	err = st.Update(func(tx *store.Tx) error {
		bindings, err := tx.ByAttachment(c.attachment())
		if err != nil {
			return err
		}
		if len(bindings) == 0 && c.args.Netns == "" {
			return nil // the sandbox is gone and so is everything we had
		}
		rd, err := p.NewRedirect(c.conf.Metadata, c.conf.Responder)
		if err != nil {
			return err
		}
		if len(bindings) == 0 {
			// Nothing recorded, but an ADD that died between its rule and
			// its commit may have left a rule: find it by its comment.
			removed, err = rd.RemoveByComment(c.args.ContainerID, c.args.IfName)
			return err
		}
		for _, b := range bindings {
			if err := rd.Remove(ruleOf(b)); err != nil {
				return err
			}
			if err := tx.Delete(b.IP); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.log.Info("unbound", "removed", removed)
	return nil
}
