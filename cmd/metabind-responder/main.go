// Command metabind-responder serves the GCE metadata API to the pods of one
// node, identifying each caller by its IP in the metabind binding store and
// answering with tokens it signs with its own key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/metabind/metabind/kube"
	"github.com/metabind/metabind/reconcile"
	"github.com/metabind/metabind/responder"
	"github.com/metabind/metabind/responder/admin"
	"github.com/metabind/metabind/responder/issuer"
	"github.com/metabind/metabind/responder/metrics"
	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/store"
)

const (
	storeTimeout = 2 * time.Second
	// repairLockTimeout bounds the repair loop's wait for pod changes in
	// flight; ADD and DEL wait longer for it (see plugin.RulesLockTimeout).
	repairLockTimeout = 5 * time.Second
	shutdownTimeout   = 10 * time.Second
	// rulesMaxAge: the readiness check of the rules fails when the repair
	// loop has not looked for this long (it looks every RepairInterval; a
	// look may wait repairLockTimeout for the rules lock).
	rulesMaxAge = 3*reconcile.RepairInterval + repairLockTimeout
	// readyPoll is how often the startup taint's removal looks at readiness.
	readyPoll = time.Second
)

// options are the command line's.
type options struct {
	stateDir, listen, configPath string
	// adminListen is the probes' address; "" serves none.
	adminListen string
	// removeTaint: remove kube.StartupTaint from node nodeName once ready,
	// with the credential of taintKubeconfig ("" in-cluster).
	removeTaint     bool
	nodeName        string
	taintKubeconfig string
}

// defaultGCPercent is the garbage collector's target unless GOGC is set.
// With 1,000 pods each holding a keep-alive connection the live heap is
// about 13 MB (8 MB of it net/http's per-connection buffers) beside 9 MB
// of goroutine stacks; Go's default of 100 lets the heap reach twice that
// before collecting, for an RSS of about 52 MB. At 30 it stays near 40 MB
// for a few percent of one core in collections.
const defaultGCPercent = 30

func main() {
	var o options
	flag.StringVar(&o.stateDir, "state-dir", "/var/lib/metabind", "directory holding the binding store and the issuer's signing key")
	flag.StringVar(&o.listen, "listen", "169.254.169.252:988", "IP:port to serve on, or several separated by commas (dual stack: 169.254.169.252:988,[fd00:ec2::252]:988); each IP is added to a dummy link metabind0 if no interface has it")
	flag.StringVar(&o.configPath, "config", "/etc/metabind/responder.yaml", "responder configuration file (YAML or JSON); reloaded on SIGHUP and when its content changes (looked at every 2s)")
	flag.StringVar(&o.adminListen, "admin-listen", admin.DefaultAddress, "IP:port of the node-local admin server (/healthz, /readyz for the kubelet's probes, /metrics for Prometheus); empty disables it. Keep it on loopback: pods could reach any other address")
	flag.BoolVar(&o.removeTaint, "remove-startup-taint", false, "once every readiness check first passes, remove the taint "+kube.StartupTaint+" from this node (needs get and patch on nodes)")
	flag.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name in the Kubernetes API (default $NODE_NAME): the configuration's node.name when the file has none, and the node --remove-startup-taint acts on")
	flag.StringVar(&o.taintKubeconfig, "taint-kubeconfig", "", "kubeconfig file whose credential removes the startup taint; default the in-cluster ServiceAccount's (not the node's: NodeRestriction forbids a node to change its own taints)")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn or error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "metabind-responder: --log-level: %v\n", err)
		os.Exit(2)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	logs := newLogBatch(os.Stderr)
	log := slog.New(batchingHandler{Handler: slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}), batch: logs})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, log, o)
	if err != nil {
		log.Error("metabind-responder failed", "error", err.Error())
	}
	logs.Close()
	if err != nil {
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, o options) error {
	stateDir, listen, configPath := o.stateDir, o.listen, o.configPath
	var addrs []netip.AddrPort
	for _, a := range strings.Split(listen, ",") {
		addr, err := netip.ParseAddrPort(strings.TrimSpace(a))
		if err != nil {
			return fmt.Errorf("--listen %q: %w", a, err)
		}
		addrs = append(addrs, addr)
	}
	var adminAddr netip.AddrPort
	if o.adminListen != "" {
		var err error
		if adminAddr, err = netip.ParseAddrPort(o.adminListen); err != nil {
			return fmt.Errorf("--admin-listen %q: %w", o.adminListen, err)
		}
		warning, err := admin.CheckAddress(adminAddr, addrs)
		if err != nil {
			return err
		}
		if warning != "" {
			log.Warn(warning)
		}
	}
	// Every address must be one the per-veth source check covers.
	bases, err := store.ReadBases(stateDir, storeTimeout)
	if err != nil {
		return fmt.Errorf("read the responder addresses the plugin recorded: %w", err)
	}
	for _, addr := range addrs {
		warning, err := server.CheckListenAddress(addr, bases)
		if err != nil {
			return err
		}
		if warning != "" {
			log.Warn(warning)
		}
	}
	cfg, err := responder.LoadNodeConfig(configPath, o.nodeName)
	if err != nil {
		return err
	}
	if o.nodeName != "" && cfg.Node.Name != o.nodeName {
		return fmt.Errorf("--node-name %q and node.name %q of %s name different nodes: leave node.name out of the file", o.nodeName, cfg.Node.Name, configPath)
	}
	// The issuer follows `metabindctl keys rotate` by itself: it checks the
	// key files at most once a second and rereads them when they change.
	iss, keyCreated, err := issuer.Open(cfg.Issuer, stateDir, log)
	if err != nil {
		return err
	}
	view := store.NewView(stateDir, storeTimeout)
	defer view.Close()
	reg := metrics.NewRegistry()
	m := metrics.New(reg)
	view.OnReload = m.StoreReloaded
	view.OnCorrupt = func(key string, err error) {
		log.Warn("skipping an unreadable binding record; that IP gets 404 until it is rebound", "ip", key, "error", err.Error())
	}
	if n, err := view.Len(); err != nil {
		// Not fatal: every request rereads the store and answers 503 until it
		// can.
		log.Warn("binding store not readable yet", "stateDir", stateDir, "error", err.Error())
	} else {
		log.Info("binding store loaded", "stateDir", stateDir, "bindings", n)
	}

	var listeners []net.Listener
	for _, addr := range addrs {
		addedTo, err := server.EnsureListenAddress(addr.Addr())
		if err != nil {
			return fmt.Errorf("listen address %s: %w", addr.Addr(), err)
		}
		ln, err := net.Listen("tcp", addr.String())
		if err != nil {
			return err
		}
		log.Info("listening", "listen", ln.Addr().String(), "addressAddedTo", addedTo)
		listeners = append(listeners, ln)
	}
	var adminLn net.Listener
	if o.adminListen != "" {
		if adminLn, err = net.Listen("tcp", adminAddr.String()); err != nil {
			return fmt.Errorf("--admin-listen: %w", err)
		}
		log.Info("admin server listening", "adminListen", adminLn.Addr().String())
	}

	// The rules the plugin installed are kept whole from here, without
	// waiting for a pod event: a firewall reload that flushes INPUT, or a
	// deleted chain, is undone within reconcile.RepairInterval.
	repairer := &reconcile.Repairer{StateDir: stateDir, LockTimeout: repairLockTimeout, Log: log.With("component", "repair"),
		OnRepair: m.RulesRepaired}
	// Addresses accepted before the plugin recorded any (the responder
	// starts before the first pod) are checked again once it has.
	warned := map[netip.AddrPort]bool{}
	repairer.OnBases = func(bases []store.Base) {
		for _, addr := range addrs {
			if _, err := server.CheckListenAddress(addr, bases); err != nil && !warned[addr] {
				warned[addr] = true
				log.Error("listening where the source check does not look; restart with the netconf's responderAddress", "error", err.Error())
			}
		}
	}
	go repairer.Run(ctx, reconcile.RepairInterval)

	h, informerSynced, err := newResponder(ctx, cfg, view, iss, log, m)
	if err != nil {
		return err
	}
	checks := []admin.Check{admin.StoreCheck(view), admin.RulesCheck(repairer, rulesMaxAge)}
	if informerSynced != nil {
		checks = append(checks, admin.KubernetesCheck(informerSynced))
	}
	checks = append(checks, admin.SigningKeyCheck(iss.KeyID))
	if o.removeTaint {
		if err := removeTaintWhenReady(ctx, o, cfg, checks, log); err != nil {
			return err
		}
	}
	go h.Watch(ctx, view, log.With("component", "prefetch"))
	// h's configuration changes with the file (reload.go); the server
	// serves whichever is in force.
	srv := server.NewHTTPServer(h, log)
	log.Info("metabind-responder serving",
		"listen", listen,
		"issuer", iss.URL(),
		"kid", iss.KeyID(),
		"keyCreated", keyCreated,
		"stateDir", stateDir,
		"config", configPath,
		"identities", len(cfg.Identities),
		"kubernetes", cfg.Kubernetes != nil,
		"requestsPerSecond", *cfg.Limits.RequestsPerSecond,
		"burst", *cfg.Limits.Burst,
	)

	// SIGHUP, or a change of the file, reloads the configuration.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go watchConfig(ctx, configFile{path: configPath, nodeName: o.nodeName}, h, hup, log.With("component", "reload"))

	served := make(chan error, len(listeners)+1)
	for _, ln := range listeners {
		go func() { served <- srv.Serve(ln) }()
	}
	var adminSrv *admin.Server
	if adminLn != nil {
		adminSrv = admin.NewServer(checks, log.With("component", "admin"))
		adminSrv.Handle("GET /metrics", metrics.Handler(reg))
		go func() { served <- adminSrv.Serve(adminLn) }()
	}
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	servers := len(listeners)
	if adminSrv != nil {
		// Last: the probes answer while the metadata requests drain.
		if err := adminSrv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutdown of the admin server: %w", err)
		}
		servers++
	}
	for range servers {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	return nil
}

// removeTaintWhenReady starts removing the startup taint from the node once
// every readiness check passes, in the background for as long as ctx lives.
func removeTaintWhenReady(ctx context.Context, o options, cfg *responder.Config, checks []admin.Check, log *slog.Logger) error {
	node := cfg.Node.Name // --node-name's, when given
	cs, err := kube.NewTaintClient(o.taintKubeconfig, node)
	if err != nil {
		return fmt.Errorf("--remove-startup-taint: %w", err)
	}
	log = log.With("component", "startup-taint", "node", node, "taint", kube.StartupTaint)
	log.Info("the startup taint is removed once ready", "kubeconfig", o.taintKubeconfig)
	go admin.RemoveTaintWhenReady(ctx, checks, readyPoll, func(ctx context.Context) (bool, error) {
		return kube.RemoveTaint(ctx, cs, node, kube.StartupTaint)
	}, log)
	return nil
}

// newResponder assembles the responder: standalone, or in Kubernetes mode
// with the node's credential. The pod informer syncs in the background: until
// it has, a pod is looked up with a GET (and a request while the API is out
// of reach is answered 503). informerSynced tells when it has (nil
// standalone).
func newResponder(ctx context.Context, cfg *responder.Config, view *store.View, iss *issuer.Issuer, log *slog.Logger, m *metrics.Metrics) (
	h *responder.Live, informerSynced func() bool, err error) {
	if cfg.Kubernetes == nil {
		h, err := responder.NewLive(cfg, view, iss, nil, log, responder.WithMetrics(m))
		return h, nil, err
	}
	kc, err := kube.New(kube.Config{Kubeconfig: cfg.Kubernetes.Kubeconfig, NodeName: cfg.Node.Name, TokenLifetime: cfg.Kubernetes.Lifetime},
		log.With("component", "kubernetes"))
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes: %w", err)
	}
	h, err = responder.NewLive(cfg, view, iss, kc, log, responder.WithMetrics(m))
	if err != nil {
		return nil, nil, err
	}
	kc.OnPodGone(h.ForgetPod)
	go func() {
		if err := kc.Start(ctx); err != nil && ctx.Err() == nil {
			log.Error("kubernetes: pod informer stopped", "error", err.Error())
		}
	}()
	log.Info("kubernetes mode", "node", cfg.Node.Name, "kubeconfig", cfg.Kubernetes.Kubeconfig, "audiences", cfg.Kubernetes.Audiences, "tokenLifetime", cfg.Kubernetes.Lifetime.String())
	return h, kc.HasSynced, nil
}
