package plugin

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/metabind/metabind/redirect"
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
	p.warnAboutInput(c)
	if len(ips) == 0 {
		c.note("bound", 0, "reason", "no IPv4 address on the pod interface in prevResult")
		return printResult(c)
	}
	rds := p.redirects(c)
	want := p.bindings(c, ips, side, rds)

	// Held until this ADD's rules are in: a reconciliation (GC) waits for
	// it, so it never takes the fresh binding's rules for orphans.
	lock, err := p.lockRules(c)
	if err != nil {
		return err
	}
	defer lock.Close()

	// 1. The bindings, in one transaction.
	superseded, hadRule, err := p.commitBindings(c, rds, want)
	if err != nil {
		return err
	}
	p.checkpoint("add:committed")

	// 2. The redirect: the new rules, then away with the ones they replace.
	added, err := p.redirect(c, rds, want, hadRule)
	if err == nil {
		for _, old := range superseded {
			var rd redirect.Backend
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
func (p *Plugin) redirect(c *call, rds *redirect.Set, want []store.Binding, hadRule map[netip.Addr]bool) ([]redirect.Rule, error) {
	var added []redirect.Rule
	for _, fam := range []int{0, 1} {
		var rules []redirect.Rule
		var rd redirect.Backend
		retried := false
		for _, b := range want {
			if redirect.Family(b.IP) != fam {
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

// setupTimeout bounds the wait for another ADD's set-up or repair.
const setupTimeout = 30 * time.Second

// ensureBase makes sure the chains and jumps are installed and on top of
// their built-in chains, after a batch was refused: on a node's first ADD,
// after a firewall reload or a deleted chain, or when another agent has put
// rules above metabind's. It audits first (reads only), so ADDs that meet a
// whole base change nothing; the repair itself has a lock of its own (never
// the store's), under which it audits again.
//
// A base installed from nothing comes with the rules of every live binding
// of the family (seed): on a node switching backends, the pods bound under
// the other one are never refused by this one's source check. Then the
// other backend's objects go, so a pod bound from now on is never refused
// by the other's.
func (p *Plugin) ensureBase(c *call, rd redirect.Backend, family int) error {
	if problems, err := rd.AuditBase(); err != nil || len(problems) == 0 {
		return err
	}
	lock, err := store.LockFile(filepath.Join(c.conf.StateDir, []string{"iptables.lock", "ip6tables.lock"}[family]), true, setupTimeout)
	if err != nil {
		return err
	}
	defer lock.Close()
	var seed []redirect.Rule
	err = store.Read(c.conf.StateDir, p.LockTimeout, func(tx *store.Tx) error {
		return tx.ForEach(func(b store.Binding) error {
			if !b.Released && redirect.Family(b.IP) == family {
				seed = append(seed, ruleOf(b))
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	repaired, err := rd.EnsureBaseWith(seed)
	if len(repaired) > 0 {
		c.note("baseInstalled", repaired) // what was missing and is now in place
	}
	if err != nil || len(repaired) == 0 {
		return err
	}
	if retired, err := redirect.Retire(rd); err != nil {
		c.note("retireError", err.Error())
	} else if retired {
		c.note("retired", redirect.Other(rd.Name()))
	}
	return nil
}

// bindings are the records an ADD writes, one per IP.
func (p *Plugin) bindings(c *call, ips []netip.Addr, side hostSide, rds *redirect.Set) []store.Binding {
	created := p.Now().UTC()
	out := make([]store.Binding, len(ips))
	for i, ip := range ips {
		out[i] = store.Binding{
			IP:               ip,
			Network:          c.conf.Name,
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
func (p *Plugin) takeBack(c *call, want []store.Binding, rds *redirect.Set, added []redirect.Rule) {
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
