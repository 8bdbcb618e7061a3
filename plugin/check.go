package plugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/metabind/metabind/store"
)

// Check verifies that the store binds exactly prevResult's IPs on
// CNI_IFNAME to this attachment through the right host interface, and that
// the chains, jumps and per-IP rules are installed.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	return p.run("CHECK", args, p.check)
}

func (p *Plugin) check(c *call) error {
	ips, side, err := podInterface(c)
	if err != nil || len(ips) == 0 {
		return err
	}
	var bindings []store.Binding
	if err := store.Read(c.conf.StateDir, p.LockTimeout, func(tx *store.Tx) (err error) {
		bindings, err = tx.ByAttachment(c.attachment())
		return err
	}); err != nil {
		return err
	}
	rds := p.redirects(c)
	for _, ip := range ips {
		rd, err := rds.For(ip)
		if err != nil {
			return err
		}
		if err := rd.CheckBase(); err != nil {
			return err
		}
	}
	if len(bindings) != len(ips) {
		return fmt.Errorf("store binds %d IPs to %s, prevResult has %d", len(bindings), c.attachment(), len(ips))
	}
	for _, b := range bindings {
		if !contains(ips, b.IP) {
			return fmt.Errorf("store binds %s to %s, which prevResult does not list", b.IP, c.attachment())
		}
		if b.HostInterface != side.Name || b.Bridged != side.Bridged {
			return fmt.Errorf("binding of %s names host interface %s (bridged %v), the pod's is %s (bridged %v)",
				b.IP, b.HostInterface, b.Bridged, side.Name, side.Bridged)
		}
		rd, err := rds.For(b.IP)
		if err != nil {
			return err
		}
		ok, err := rd.Has(ruleOf(b))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("redirect rule for %s on %s is missing", b.IP, b.HostInterface)
		}
	}
	return nil
}
