package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/metabind/metabind/reconcile"
	"github.com/metabind/metabind/store"
)

// gcLockTimeout bounds GC's wait for ADDs and DELs in flight to finish
// (see reconcile.Run): longer than theirs, since it waits for all of them.
const gcLockTimeout = 10 * time.Second

// gcGrace is how young a binding GC leaves alone whatever the list says.
const gcGrace = 10 * time.Second

// GC (CNI 1.1) removes the bindings and rules of every attachment that is
// not in the runtime's list of valid attachments, and any per-pod rule left
// without a binding; it restores the rules of bindings that lost them. It
// keeps going past errors and reports them all.
//
// A GC without a list (cnitool sends none) collects nothing: an absent list
// is not an empty one, and reading it as "nothing is valid" would unbind
// every pod on the node.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	return p.run("GC", args, p.gc)
}

func (p *Plugin) gc(c *call) error {
	valid, given, err := validAttachments(c.args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if !given {
		c.note("collected", 0, "reason", "no cni.dev/valid-attachments in the request")
		return nil
	}
	// The list is this network's: another network's bindings (a second
	// conflist, a Multus delegate, another runtime sharing the state dir)
	// are not its to judge, nor are records older than schema 2, which do
	// not say which network wrote them.
	//
	// Nor are bindings younger than gcGrace: the runtime made its list
	// before it called GC, and a pod whose ADD committed in between is
	// not on it.
	now := p.Now()
	keep := func(b store.Binding) bool {
		return b.Network != c.conf.Name || valid[b.Attachment()] || now.Sub(b.Created) < gcGrace
	}
	rds, err := p.redirects(c).All()
	if err != nil {
		return err
	}
	// The netconf's bases are recorded as ADD records them: a GC with
	// another backend switches the node for good.
	rep, err := reconcile.Run(reconcile.Options{StateDir: c.conf.StateDir, LockTimeout: gcLockTimeout, Redirects: rds, Keep: keep, Record: p.bases(c)})
	c.note("removedBindings", len(rep.RemovedBindings), "removedRules", len(rep.RemovedRules), "restoredRules", len(rep.RestoredRules), "baseRepairs", rep.BaseRepairs, "unreadableRecords", rep.Unreadable)
	if err != nil {
		return err
	}
	return errors.Join(rep.Errors...)
}

// validAttachments reads the runtime's list: cni.dev/valid-attachments, or
// the key libcni 1.2.0-1.2.2 wrote, cni.dev/attachments. given is false
// when neither is there (or both are null).
func validAttachments(stdin []byte) (valid map[store.Attachment]bool, given bool, err error) {
	var in struct {
		Valid *[]types.GCAttachment `json:"cni.dev/valid-attachments"`
		Old   *[]types.GCAttachment `json:"cni.dev/attachments"`
	}
	if err := json.Unmarshal(stdin, &in); err != nil {
		return nil, false, fmt.Errorf("GC attachments: %w", err)
	}
	list := in.Valid
	if list == nil {
		list = in.Old
	}
	if list == nil {
		return nil, false, nil
	}
	valid = make(map[store.Attachment]bool, len(*list))
	for _, a := range *list {
		valid[store.Attachment{ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}
	return valid, true, nil
}
