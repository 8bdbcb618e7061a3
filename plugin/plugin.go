package plugin

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// SupportedVersions are the CNI spec versions metabind accepts. 0.3.x is
// what calico, flannel and kindnet still ship; below it a chained plugin
// gets no prevResult. ADD and DEL work at every one; skel refuses CHECK
// below 0.4.0 and GC and STATUS below 1.1.0 (CNI error 2) before a verb
// runs. ADD prints prevResult back in the conflist's version.
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Plugin runs the CNI verbs. Its fields are what tests replace.
type Plugin struct {
	// LockTimeout bounds the wait for the binding store; past it a verb
	// fails with CNI error 11 (try again later) and changes nothing.
	LockTimeout time.Duration
	// NewRedirect, if set, makes the redirect of one metadata address
	// whatever the netconf's backend (tests); nil: the netconf's backend.
	NewRedirect redirect.Maker
	// Now stamps new bindings.
	Now func() time.Time
	// Checkpoint is called at each step of ADD and DEL where a crash would
	// leave a different state; the crash tests kill the plugin there.
	Checkpoint func(step string)
}

// New returns the plugin as the metabind binary runs it. Only a binary
// built with -tags metabind_testhooks has a checkpoint (crash_testhook.go).
func New() *Plugin {
	return &Plugin{LockTimeout: 3 * time.Second, Now: time.Now, Checkpoint: testCheckpoint()}
}

// Funcs are the verbs for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

// call is one verb's parsed input and logger.
type call struct {
	args *skel.CmdArgs
	conf *NetConf
	pod  PodArgs
	log  *slog.Logger
	// attrs are what the verb did, for its one log line.
	attrs []any
	verb  string // "add", "del", ...: names the crash checkpoints
	// backend is the netconf's backend resolved ("auto" decided), what
	// the verb programs and records.
	backend string
}

// note adds key/value pairs to the verb's log line.
func (c *call) note(kv ...any) { c.attrs = append(c.attrs, kv...) }

func (c *call) attachment() store.Attachment {
	return store.Attachment{ContainerID: c.args.ContainerID, IfName: c.args.IfName}
}

// run parses the input, opens the log and logs one line for the verb with
// its outcome.
func (p *Plugin) run(verb string, args *skel.CmdArgs, fn func(*call) error) error {
	start := time.Now()
	conf, err := ParseConfig(args.StdinData)
	var unknown *UnknownKeysError
	if verb == "DEL" && errors.As(err, &unknown) {
		// DEL must not fail on what the runtime cannot fix: remove the
		// pod's bindings and rules, and say what is wrong in the log.
		conf, err = parseValues(args.StdinData)
	} else {
		unknown = nil
	}
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	pod, err := ParseArgs(args.Args)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	log := openLog(conf, args).With("pod", string(pod.K8S_POD_NAMESPACE)+"/"+string(pod.K8S_POD_NAME))
	c := &call{args: args, conf: conf, pod: pod, log: log, verb: strings.ToLower(verb), backend: redirect.Resolve(conf.Backend)}
	if unknown != nil {
		log.Warn("the netconf has unknown keys; DEL goes on, every other verb refuses it", "error", unknown.Error())
	}
	err = fn(c)
	attrs := append([]any{"verb", verb, "ms", float64(time.Since(start).Microseconds()) / 1000}, c.attrs...)
	if err != nil {
		log.Error("metabind "+verb+" failed", append(attrs, "error", err)...)
		if errors.Is(err, store.ErrBusy) {
			return types.NewError(types.ErrTryAgainLater, err.Error(), "")
		}
		return err
	}
	log.Info("metabind "+verb+" done", attrs...)
	return nil
}

// update runs fn in one store transaction and releases the store at once:
// the lock is held for the transaction alone, never across iptables.
func (p *Plugin) update(c *call, fn func(*store.Tx) error) error {
	st, err := store.Open(c.conf.StateDir, p.LockTimeout)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.Update(fn)
}

// ruleOf is the redirect that stands for a binding.
func ruleOf(b store.Binding) redirect.Rule { return redirect.RuleFor(b) }

// maker makes the redirects of this call's backend.
func (p *Plugin) maker(c *call) redirect.Maker {
	if p.NewRedirect != nil {
		return p.NewRedirect
	}
	mk, err := redirect.MakerFor(c.backend)
	if err != nil { // ParseConfig admits known names only
		return func(netip.AddrPort, netip.AddrPort, ...netip.AddrPort) (redirect.Backend, error) { return nil, err }
	}
	return mk
}

// redirects are the redirect sides of this call's netconf.
func (p *Plugin) redirects(c *call) *redirect.Set {
	rds := redirect.NewSet(p.maker(c), c.conf.Metadata, c.conf.Responder, c.conf.Metadata6, c.conf.Responder6).
		AlsoRedirect(c.conf.ContainerCredentials, c.conf.ContainerCredentials6)
	rds.AfterPiece = func() { p.checkpoint(c.verb + ":first-rule-piece") }
	return rds
}

// podInterface reads what ADD and CHECK need from prevResult: the pod's
// addresses on CNI_IFNAME (IPv6 ones only when metadataAddress6 is set)
// and the node end of its veth. With no address there is nothing to bind
// and no error.
func podInterface(c *call) ([]netip.Addr, hostSide, error) {
	if c.conf.ResultErr != nil {
		return nil, hostSide{}, c.conf.ResultErr
	}
	if c.conf.Result == nil {
		return nil, hostSide{}, errNoPrevResult
	}
	ips := podIPs(c.conf.Result, c.args.IfName, c.conf.Metadata6.IsValid())
	if len(ips) == 0 {
		return nil, hostSide{}, nil
	}
	side, err := findHostSide(c.conf.Result, c.args.IfName, c.args.Netns)
	return ips, side, err
}

// podIPs returns the addresses prevResult assigns to ifName in the pod:
// IPv4, and IPv6 with ipv6.
func podIPs(result *current.Result, ifName string, ipv6 bool) []netip.Addr {
	var out []netip.Addr
	for _, ipc := range result.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(result.Interfaces) || result.Interfaces[i].Name != ifName {
				continue
			}
		}
		ip, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is6() && (!ipv6 || ip.IsLinkLocalUnicast()) {
			continue // IPv6 needs metadataAddress6; link-local never reaches it
		}
		if !contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out
}

func contains(ips []netip.Addr, ip netip.Addr) bool {
	for _, x := range ips {
		if x == ip {
			return true
		}
	}
	return false
}

func printResult(c *call) error {
	return types.PrintResult(c.conf.Result, c.conf.CNIVersion)
}

func (p *Plugin) checkpoint(step string) {
	if p.Checkpoint != nil {
		p.Checkpoint(step)
	}
}
