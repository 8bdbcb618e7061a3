package plugin

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/metabind/metabind/plugin/redirect"
	"github.com/metabind/metabind/store"
)

// errNoPrevResult is ADD's answer when metabind is not chained after a
// plugin that gives the pod addresses.
var errNoPrevResult = errors.New("metabind is a chained plugin and needs prevResult: list it after the plugin that creates the pod interface (e.g. ptp or bridge)")

// Add binds the pod's IPs on CNI_IFNAME to its identity and redirects its
// metadata traffic from its veth. It passes prevResult through unchanged.
//
// Order matters. The bindings are committed first, in one short store
// transaction; only then does the redirect open. So the responder never
// sees a pod's traffic before its binding exists (a handed-over IP is never
// answered with the previous owner's identity), the store's lock is never
// held across iptables, and a failure at any step leaves at worst a binding
// with no redirect: a pod that is turned away, never one that is answered
// wrongly. A failed ADD takes back what it did.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	return p.run("ADD", args, p.add)
}

func (p *Plugin) add(c *call) error {
	ips, side, err := podInterface(c)
	if err != nil {
		return err
	}
	if len(ips) == 0 {
		c.note("bound", 0, "reason", "no IPv4 address on the pod interface in prevResult")
		return printResult(c)
	}
	if c.pod.K8S_POD_NAME == "" {
		c.note("warning", "CNI_ARGS carry no K8S_POD_NAME: the binding matches no identity rule")
	}
	rds := p.redirects(c)
	want := p.bindings(c, ips, side, rds)

	// 1. The bindings, in one transaction.
	var (
		superseded []store.Binding         // their rules go once the new ones are in
		hadRule    = map[netip.Addr]bool{} // a retried ADD: the rule may be there already
		replaced   []string
	)
	err = p.update(c, func(tx *store.Tx) error {
		prior, err := tx.ByAttachment(c.attachment())
		if err != nil {
			return err
		}
		for _, old := range prior {
			if !contains(ips, old.IP) {
				superseded = append(superseded, old)
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
				superseded = append(superseded, old)
				if old.Attachment() != b.Attachment() {
					// IPAM handed the IP over while the store still bound it.
					replaced = append(replaced, b.IP.String()+" from "+old.Namespace+"/"+old.Pod+" ("+old.ContainerID+")")
				}
			}
			if err := tx.Put(b); err != nil {
				return err
			}
		}
		p.checkpoint("add:in-transaction")
		return nil
	})
	if err != nil {
		return err
	}
	p.checkpoint("add:committed")
	if len(replaced) > 0 {
		c.note("warning", "IPs were still bound to other containers; their bindings were replaced", "replaced", replaced)
	}

	// 2. The redirect: the new rules, then away with the ones they replace.
	added, err := p.redirect(c, rds, want, hadRule)
	if err == nil {
		for _, old := range superseded {
			var rd *redirect.Redirect
			if rd, err = rds.For(old.IP); err == nil {
				err = rd.Remove(ruleOf(old))
			}
			if err != nil {
				break
			}
		}
	}
	if err != nil {
		p.takeBack(c, want, rds, added)
		return err
	}
	p.checkpoint("add:rules-added")
	c.note("ips", ips, "hostInterface", side.Name, "bridged", side.Bridged, "podUID", c.pod.K8S_POD_UID)
	return printResult(c)
}

// redirect installs the rules of want. The usual case is one
// iptables-restore run per address family that also proves the base whole
// (Redirect.AddBatch). When the batch is refused (the node's first ADD, a
// base someone damaged, a retried ADD whose rules may exist) it sets the
// base up and adds rule by rule, each piece checked first. It returns the
// rules it added.
func (p *Plugin) redirect(c *call, rds *Redirects, want []store.Binding, hadRule map[netip.Addr]bool) ([]redirect.Rule, error) {
	var added []redirect.Rule
	for _, fam := range []int{0, 1} {
		var rules []redirect.Rule
		var rd *redirect.Redirect
		retried := false
		for _, b := range want {
			if family(b.IP) != fam {
				continue
			}
			var err error
			if rd, err = rds.For(b.IP); err != nil {
				return added, err
			}
			rules = append(rules, ruleOf(b))
			retried = retried || hadRule[b.IP]
		}
		if len(rules) == 0 {
			continue
		}
		if !retried {
			verify := p.baseDue(c, fam)
			err := rd.AddBatch(rules, verify)
			if err == nil {
				added = append(added, rules...)
				if verify {
					p.baseVerified(c, fam)
				}
				continue
			}
			if !errors.Is(err, redirect.ErrBatch) {
				return added, err
			}
			c.note("batchRefused", err.Error())
		}
		if err := p.ensureBase(c, rd, fam); err != nil {
			return added, err
		}
		for _, r := range rules {
			fresh, err := rd.Add(r)
			if fresh {
				added = append(added, r)
			}
			if err != nil {
				return added, err
			}
		}
	}
	return added, nil
}

// verifyEvery is how often an ADD's batch also proves the base whole. In
// between, batches only add (O(1) whatever the node holds); a missing chain
// still fails them, and a missing jump is found within this long.
const verifyEvery = 10 * time.Second

func verifiedStamp(c *call, fam int) string {
	return filepath.Join(c.conf.StateDir, []string{"base4.verified", "base6.verified"}[fam])
}

// baseDue reports whether this ADD's batch should prove the base.
func (p *Plugin) baseDue(c *call, fam int) bool {
	fi, err := os.Stat(verifiedStamp(c, fam))
	return err != nil || p.Now().Sub(fi.ModTime()) >= verifyEvery || fi.ModTime().After(p.Now())
}

// baseVerified records that the base was just proved whole.
func (p *Plugin) baseVerified(c *call, fam int) {
	path := verifiedStamp(c, fam)
	now := p.Now()
	if err := os.Chtimes(path, now, now); err != nil {
		os.WriteFile(path, nil, 0o600)
	}
}

// setupTimeout bounds the wait for another ADD's one-time iptables set-up.
const setupTimeout = 30 * time.Second

// ensureBase makes sure the chains and jumps are installed: two checks on
// every ADD, and on a node's first ADD the set-up itself. The set-up has a
// lock of its own (never the store's): one ADD takes it exclusively and
// installs; the ADDs that arrive meanwhile wait for it shared, so they all
// go on together the moment it is done, each after its own two checks.
func (p *Plugin) ensureBase(c *call, rd *redirect.Redirect, family int) error {
	if ok, err := rd.BaseInstalled(); err != nil || ok {
		return err
	}
	if err := os.MkdirAll(c.conf.StateDir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(c.conf.StateDir, []string{"iptables.lock", "ip6tables.lock"}[family])
	deadline := time.Now().Add(setupTimeout)
	for {
		if lock, err := store.LockFile(path, true, 0); err == nil {
			defer lock.Close()
			if ok, err := rd.BaseInstalled(); err != nil || ok {
				return err
			}
			c.note("setUp", "chains and jumps")
			return rd.EnsureBase()
		}
		// Someone is setting up: wait until they are done, then look.
		lock, err := store.LockFile(path, false, time.Until(deadline))
		if err != nil {
			return err
		}
		lock.Close()
		if ok, err := rd.BaseInstalled(); err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("iptables set-up did not complete within %v", setupTimeout)
		}
	}
}

// bindings are the records an ADD writes, one per IP.
func (p *Plugin) bindings(c *call, ips []netip.Addr, side hostSide, rds *Redirects) []store.Binding {
	created := p.Now().UTC()
	out := make([]store.Binding, len(ips))
	for i, ip := range ips {
		out[i] = store.Binding{
			IP:               ip,
			ContainerID:      c.args.ContainerID,
			IfName:           c.args.IfName,
			NetNS:            c.args.Netns,
			HostInterface:    side.Name,
			Bridged:          side.Bridged,
			Responder:        rds.Responder(ip),
			Namespace:        string(c.pod.K8S_POD_NAMESPACE),
			Pod:              string(c.pod.K8S_POD_NAME),
			PodUID:           string(c.pod.K8S_POD_UID),
			InfraContainerID: string(c.pod.K8S_POD_INFRA_CONTAINER_ID),
			Annotations:      c.conf.RuntimeConfig.PodAnnotations,
			Created:          created,
		}
	}
	return out
}

// takeBack undoes a failed ADD: its bindings (where this attachment still
// holds them) and the rules it added. Failures are logged; the runtime's
// DEL after a failed ADD cleans up what is left.
func (p *Plugin) takeBack(c *call, want []store.Binding, rds *Redirects, added []redirect.Rule) {
	err := p.update(c, func(tx *store.Tx) error {
		for _, b := range want {
			cur, ok, err := tx.Get(b.IP)
			if err != nil {
				return err
			}
			if ok && cur.Attachment() == b.Attachment() {
				if err := tx.Delete(b.IP); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		c.note("takeBackBindingsError", err.Error())
	}
	for _, r := range added {
		rd, err := rds.For(r.IP)
		if err == nil {
			err = rd.Remove(r)
		}
		if err != nil {
			c.note("takeBackRuleError", err.Error())
		}
	}
}
