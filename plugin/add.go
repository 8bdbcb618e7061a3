package plugin

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/metabind/metabind/plugin/redirect"
	"github.com/metabind/metabind/store"
)

// errNoPrevResult is ADD's answer when metabind is not chained after a
// plugin that gives the pod addresses.
var errNoPrevResult = errors.New("metabind is a chained plugin and needs prevResult: list it after the plugin that creates the pod interface (e.g. ptp or bridge)")

// Add binds the pod's IPs on CNI_IFNAME to its identity and redirects its
// metadata traffic from its veth. It passes prevResult through unchanged.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	return p.run("ADD", args, p.add)
}

func (p *Plugin) add(c *call) error {
	if c.conf.Result == nil {
		return errNoPrevResult
	}
	ips := podIPs(c.conf.Result, c.args.IfName)
	if len(ips) == 0 {
		c.log.Warn("no IPv4 address on the pod interface in prevResult; nothing to bind")
		return printResult(c)
	}
	if c.pod.K8S_POD_NAME == "" {
		c.log.Warn("CNI_ARGS carry no K8S_POD_NAME; the binding has no pod identity and will match no identity rule")
	}
	side, err := findHostSide(c.conf.Result, c.args.IfName, c.args.Netns)
	if err != nil {
		return err
	}

	st, err := p.openStore(c)
	if err != nil {
		return err
	}
	defer st.Close()
	rd, err := p.NewRedirect(c.conf.Metadata, c.conf.Responder)
	if err != nil {
		return err
	}

	created := p.Now().UTC()
	want := make([]store.Binding, len(ips))
	for i, ip := range ips {
		want[i] = store.Binding{
			IP:               ip,
			ContainerID:      c.args.ContainerID,
			IfName:           c.args.IfName,
			NetNS:            c.args.Netns,
			HostInterface:    side.Name,
			Bridged:          side.Bridged,
			Namespace:        string(c.pod.K8S_POD_NAMESPACE),
			Pod:              string(c.pod.K8S_POD_NAME),
			PodUID:           string(c.pod.K8S_POD_UID),
			InfraContainerID: string(c.pod.K8S_POD_INFRA_CONTAINER_ID),
			Annotations:      c.conf.RuntimeConfig.PodAnnotations,
			Created:          created,
		}
	}

	// Everything happens inside one store transaction: if any step fails
	// the bindings roll back and the rules this ADD added are taken out
	// again, so a failed ADD leaves the node as it found it.
	var added []redirect.Rule
	err = st.Update(func(tx *store.Tx) error {
		if err := rd.EnsureBase(); err != nil {
			return err
		}
		// New rules first, so the pod is never without its redirect.
		for _, b := range want {
			fresh, err := rd.Add(ruleOf(b))
			if err != nil {
				return err
			}
			if fresh {
				added = append(added, ruleOf(b))
			}
		}
		// Then the rules this ADD supersedes: an IP that IPAM handed over
		// from another container, or one this attachment no longer has.
		for _, b := range want {
			old, ok, err := tx.Get(b.IP)
			if err != nil {
				return err
			}
			if !ok || ruleOf(old) == ruleOf(b) {
				continue
			}
			if old.Attachment() != b.Attachment() {
				c.log.Warn("IP was still bound to another container; replacing its binding",
					"ip", b.IP, "previousContainerID", old.ContainerID, "previousPod", old.Namespace+"/"+old.Pod)
			}
			if err := rd.Remove(ruleOf(old)); err != nil {
				return err
			}
		}
		prior, err := tx.ByAttachment(c.attachment())
		if err != nil {
			return err
		}
		for _, old := range prior {
			if contains(ips, old.IP) {
				continue
			}
			if err := rd.Remove(ruleOf(old)); err != nil {
				return err
			}
			if err := tx.Delete(old.IP); err != nil {
				return err
			}
		}
		for _, b := range want {
			if err := tx.Put(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		for _, r := range added {
			if rerr := rd.Remove(r); rerr != nil {
				c.log.Error("could not take back a rule of the failed ADD", "ip", r.IP, "error", rerr)
			}
		}
		return err
	}
	c.log.Info("bound", "ips", ips, "hostInterface", side.Name, "bridged", side.Bridged, "podUID", c.pod.K8S_POD_UID)
	return printResult(c)
}
