package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/metabind/metabind/store"
)

// Status (CNI 1.1) succeeds when ADD can be served: the state directory is
// usable, the binding store reads, the responder is ready (only with
// requireResponder: its admin server's /readyz answers 200) and iptables
// runs. Otherwise it answers CNI error 50 (plugin not available) saying
// which.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	return p.run("STATUS", args, p.status)
}

func (p *Plugin) status(c *call) error {
	var err error
	unavailable := func(what string, err error) error {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("metabind cannot serve ADD: %s", what), err.Error())
	}
	if err := os.MkdirAll(c.conf.StateDir, 0o700); err != nil {
		return unavailable("state directory "+c.conf.StateDir+" is not usable", err)
	}
	// A store that is busy is working; only one that cannot be read is not.
	err = store.Read(c.conf.StateDir, p.LockTimeout, func(*store.Tx) error { return nil })
	if err != nil && !errors.Is(err, store.ErrBusy) {
		return unavailable("binding store "+store.DBPath(c.conf.StateDir)+" cannot be read", err)
	}
	if c.conf.RequireResponder {
		ctx, cancel := context.WithTimeout(context.Background(), ReadyzTimeout)
		err := responderReady(ctx, c.conf.AdminAddress)
		cancel()
		if err != nil {
			return unavailable("the responder at "+c.conf.AdminAddress+" is not ready (requireResponder)", err)
		}
	}
	all, err := p.redirects(c).All()
	for _, rd := range all {
		if err == nil {
			err = rd.Ready()
		}
	}
	if err != nil {
		return unavailable("the "+c.backend+" redirect backend does not run", err)
	}
	return nil
}
