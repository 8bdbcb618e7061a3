package plugin

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/metabind/metabind/store"
)

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
	keep := func(b store.Binding) bool { return valid[b.Attachment()] }
	rep, err := Reconcile(c.conf.StateDir, p.LockTimeout, p.redirects(c), keep, false, p.Now())
	c.note("removedBindings", len(rep.RemovedBindings), "removedRules", len(rep.RemovedRules), "restoredRules", len(rep.RestoredRules))
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
