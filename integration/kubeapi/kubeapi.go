// Package kubeapi runs a real Kubernetes control plane for tests: etcd,
// kube-apiserver and kube-controller-manager, with certificates made by the
// test, the Node authorizer and the NodeRestriction admission plugin on, and
// a node's own credential (system:node:<name>) to test with. There is no
// kubelet: pods are created with spec.nodeName set and never run, which is
// all the API needs to relate them to a node. With Scheduler, Controllers("*")
// and KubeletRegistersNode it is the control plane of a real node
// (integration/kubenode runs one with a kubelet).
//
// Where it runs. By default every process listens on 127.0.0.1 of the test's
// own network namespace (loopback only; no root needed), which suits a client
// in the test process. With NetNS(path) the processes run inside that
// namespace instead (nsenter --net=path), on its 127.0.0.1: that is where a
// metabind responder started in a throwaway node netns looks for the API, as
// on a node whose apiserver is local. The test process then reaches the API
// through a dialer that makes its sockets in that namespace (AdminConfig,
// AdminClient); a kubeconfig file names https://127.0.0.1:<port>, good for
// processes in the namespace. Running in the namespace needs root; nothing
// touches the host's own network namespace either way.
//
// Binaries: kube-apiserver, kube-controller-manager and kube-scheduler from
// $KUBE_BIN_DIR (default <repo>/.cache/kube, built by scripts/install-deps.sh
// from tools/kube) and etcd from PATH (Debian's etcd-server). When one is missing
// the test is skipped, or fails under CI=true.
package kubeapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/metabind/metabind/integration/testproc"
)

// DefaultNodeName is the node whose credential NodeKubeconfig carries unless
// NodeName says otherwise.
const DefaultNodeName = "node-1"

// startTimeout bounds each wait of Start (the apiserver ready, the default
// ServiceAccount made); a control plane here is ready in a few seconds.
const startTimeout = 90 * time.Second

// Option changes how Start runs the control plane.
type Option func(*options)

type options struct {
	netns       string
	node        string
	scheduler   bool
	controllers string
	noNode      bool
}

// testControllers are the controller-manager's controllers unless
// Controllers says otherwise: only what a test without a kubelet needs
// (default ServiceAccounts, the CA ConfigMap, namespace deletion). Not the
// node lifecycle: with no kubelet reporting, it would taint the node and
// evict its pods.
const testControllers = "serviceaccount-controller,root-ca-certificate-publisher-controller,namespace-controller"

// NetNS runs the control plane inside the network namespace at path.
func NetNS(path string) Option { return func(o *options) { o.netns = path } }

// NodeName names the node of NodeKubeconfig's credential.
func NodeName(name string) Option { return func(o *options) { o.node = name } }

// Scheduler also runs kube-scheduler, so that pods without spec.nodeName
// (DaemonSet pods among them: their controller sets node affinity, not the
// node) are bound to a node.
func Scheduler() Option { return func(o *options) { o.scheduler = true } }

// Controllers sets the controller-manager's --controllers ("*" runs the
// default set, as a real cluster does; naming one that does not exist makes
// it exit).
func Controllers(list ...string) Option {
	return func(o *options) { o.controllers = strings.Join(list, ",") }
}

// KubeletRegistersNode leaves the Node object of NodeName to a kubelet:
// Start does not create it. A kubelet that finds its Node already there
// does not register its taints or addresses.
func KubeletRegistersNode() Option { return func(o *options) { o.noNode = true } }

// Cluster is a running control plane. Its helpers report failures with
// t.Fatal: call them from the test's goroutine.
type Cluster struct {
	// AdminClient and AdminConfig act as system:masters.
	AdminClient kubernetes.Interface
	AdminConfig *rest.Config
	// AdminKubeconfig and NodeKubeconfig are kubeconfig files with the
	// certificates embedded; the node's is user system:node:<NodeName> in
	// group system:nodes.
	AdminKubeconfig string
	NodeKubeconfig  string
	NodeName        string
	// Server is https://127.0.0.1:<port> (in NetNS when given).
	Server string
	// Issuer is the service-account issuer: the iss of its tokens, the
	// apiserver's only API audience. JWKSURL is its /openid/v1/jwks.
	Issuer  string
	JWKSURL string
	// CAFile is the CA that signs the apiserver's serving certificate and
	// every client certificate (PEM).
	CAFile string
	// NetNS is the namespace the control plane runs in ("" for the test's).
	NetNS string
	// StartupTime is how long Start took, from the first process started
	// to the namespace "default" having its default ServiceAccount.
	StartupTime time.Duration

	t         testing.TB
	dir       string
	root      string
	pki       *pki
	spawn     *testproc.Spawner
	etcd      *testproc.Proc
	apiserver *testproc.Proc
	kcm       *testproc.Proc
	scheduler *testproc.Proc // nil without Scheduler
	stopOnce  sync.Once
}

// Start runs etcd, kube-apiserver and kube-controller-manager (and
// kube-scheduler with Scheduler) with their data in a new directory under
// dir, waits until the API serves and namespaces get their default
// ServiceAccount, and stops everything and removes the data in t.Cleanup.
func Start(t testing.TB, dir string, opts ...Option) *Cluster {
	t.Helper()
	o := options{node: DefaultNodeName, controllers: testControllers}
	for _, opt := range opts {
		opt(&o)
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	binDir := BinDir(root)
	bins := map[string]string{}
	needed := []string{"kube-apiserver", "kube-controller-manager"}
	if o.scheduler {
		needed = append(needed, "kube-scheduler")
	}
	for _, b := range needed {
		p := filepath.Join(binDir, b)
		if _, err := os.Stat(p); err != nil {
			Unavailable(t, fmt.Sprintf("needs %s in %s (KUBE_BIN_DIR): run scripts/install-deps.sh (make test does)", b, binDir))
		}
		bins[b] = p
	}
	if bins["etcd"], err = exec.LookPath("etcd"); err != nil {
		Unavailable(t, "needs etcd (Debian etcd-server): run scripts/install-deps.sh (make test does)")
	}
	if o.netns != "" {
		if os.Geteuid() != 0 {
			Unavailable(t, "needs root to run the control plane in a network namespace")
		}
		if _, err := exec.LookPath("nsenter"); err != nil {
			Unavailable(t, "needs nsenter (util-linux)")
		}
	}

	dir, err = os.MkdirTemp(dir, "kubeapi-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, dir: dir, root: root, NodeName: o.node, NetNS: o.netns, spawn: testproc.NewSpawner()}
	t.Cleanup(c.Stop)
	if o.netns != "" {
		if err := ns.WithNetNSPath(o.netns, func(ns.NetNS) error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			return netlink.LinkSetUp(lo)
		}); err != nil {
			t.Fatalf("kubeapi: loopback up in %s: %v", o.netns, err)
		}
	}
	ports, err := c.FreePorts(3)
	if err != nil {
		t.Fatalf("kubeapi: free ports: %v", err)
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	c.Server = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	c.Issuer = c.Server
	c.JWKSURL = c.Server + "/openid/v1/jwks"

	if c.pki, err = newPKI(filepath.Join(dir, "pki"), o.node); err != nil {
		t.Fatalf("kubeapi: certificates: %v", err)
	}
	c.CAFile = c.pki.caCert
	c.AdminConfig = &rest.Config{
		Host:            c.Server,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.pki.caPEM, CertData: c.pki.admin.cert, KeyData: c.pki.admin.key},
		QPS:             100,
		Burst:           200,
		UserAgent:       "kubeapi-test-admin",
	}
	if o.netns != "" {
		c.AdminConfig.Dial = DialIn(o.netns)
	}
	if c.AdminClient, err = kubernetes.NewForConfig(c.AdminConfig); err != nil {
		t.Fatal(err)
	}
	c.AdminKubeconfig = filepath.Join(dir, "admin.kubeconfig")
	c.NodeKubeconfig = filepath.Join(dir, "node.kubeconfig")
	for path, kp := range map[string]keyPair{c.AdminKubeconfig: c.pki.admin, c.NodeKubeconfig: c.pki.node} {
		if err := c.writeKubeconfig(path, kp); err != nil {
			t.Fatalf("kubeapi: %v", err)
		}
	}

	began := time.Now()
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	c.etcd = c.newProc("etcd", bins["etcd"],
		"--name=kubeapi",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubeapi="+peerURL,
		"--logger=zap", "--log-level=warn",
	)
	c.apiserver = c.newProc("kube-apiserver", bins["kube-apiserver"],
		"--advertise-address=127.0.0.1",
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(apiPort),
		"--endpoint-reconciler-type=none",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer="+c.Issuer,
		"--service-account-key-file="+c.pki.saPub,
		"--service-account-signing-key-file="+c.pki.saKey,
		"--api-audiences="+c.Issuer,
		"--client-ca-file="+c.pki.caCert,
		"--tls-cert-file="+c.pki.serverCert,
		"--tls-private-key-file="+c.pki.serverKey,
		"--etcd-servers="+etcdURL,
		"--service-cluster-ip-range=10.96.0.0/24",
		"--cert-dir="+filepath.Join(dir, "apiserver"),
		"--profiling=false",
	)
	c.kcm = c.newProc("kube-controller-manager", bins["kube-controller-manager"],
		"--kubeconfig="+c.AdminKubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file="+c.pki.saKey,
		"--root-ca-file="+c.pki.caCert,
		"--controllers="+o.controllers,
		// Not the host's /usr/libexec/kubernetes/kubelet-plugins.
		"--flex-volume-plugin-dir="+filepath.Join(dir, "flexvolume"),
		"--profiling=false",
	)
	if o.scheduler {
		c.scheduler = c.newProc("kube-scheduler", bins["kube-scheduler"],
			"--kubeconfig="+c.AdminKubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
			"--profiling=false",
		)
	}
	for _, p := range []*testproc.Proc{c.etcd, c.apiserver} {
		if err := p.Start(c.spawn); err != nil {
			t.Fatalf("kubeapi: %v", err)
		}
	}
	if err := c.waitReady(); err != nil {
		t.Fatalf("kubeapi: %v", err)
	}
	apiReady := time.Since(began)
	for _, p := range []*testproc.Proc{c.kcm, c.scheduler} {
		if p == nil {
			continue
		}
		if err := p.Start(c.spawn); err != nil {
			t.Fatalf("kubeapi: %v", err)
		}
	}
	if !o.noNode {
		c.ensureNode(o.node)
	}
	if err := c.waitServiceAccount("default", "default"); err != nil {
		t.Fatalf("kubeapi: %v\n%s log:\n%s", err, c.kcm.Name, c.kcm.Tail(40))
	}
	c.StartupTime = time.Since(began)
	where := "127.0.0.1"
	if o.netns != "" {
		where += " in " + o.netns
	}
	t.Logf("kubeapi: control plane at %s (%s): API ready in %v, default ServiceAccount in %v",
		c.Server, where, apiReady.Round(time.Millisecond), c.StartupTime.Round(time.Millisecond))
	return c
}

// BinDir is where the Kubernetes binaries are: $KUBE_BIN_DIR, by default
// <root>/.cache/kube.
func BinDir(root string) string {
	if dir := os.Getenv("KUBE_BIN_DIR"); dir != "" {
		return dir
	}
	return filepath.Join(root, ".cache/kube")
}

// Unavailable stops a test that cannot run here: a skip on a developer's
// machine, a failure under CI (CI=true), where every test must run.
func Unavailable(t testing.TB, problem string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run under CI: %s", problem)
	}
	t.Skipf("skipped: %s", problem)
}

// Stop kills the control plane and removes its data. Start registers it with
// t.Cleanup; calling it earlier is fine.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		for _, p := range []*testproc.Proc{c.scheduler, c.kcm, c.apiserver, c.etcd} {
			if p != nil {
				p.Kill()
			}
		}
		if c.t.Failed() {
			c.t.Logf("kubeapi: control plane logs (end):\n%s", c.Logs(40))
		}
		c.spawn.Close()
		os.RemoveAll(c.dir)
	})
}

// StopAPIServer kills kube-apiserver (etcd and the controller-manager stay):
// an API outage. StartAPIServer brings it back on the same address.
func (c *Cluster) StopAPIServer() {
	c.t.Helper()
	c.apiserver.Kill()
}

// StartAPIServer starts kube-apiserver again after StopAPIServer and waits
// until it serves.
func (c *Cluster) StartAPIServer() {
	c.t.Helper()
	if c.apiserver.Running() {
		return
	}
	if err := c.apiserver.Start(c.spawn); err != nil {
		c.t.Fatalf("kubeapi: %v", err)
	}
	if err := c.waitReady(); err != nil {
		c.t.Fatalf("kubeapi: %v", err)
	}
}

// Logs is the last lines of each control-plane process's log, for a test
// that failed.
func (c *Cluster) Logs(lines int) string {
	var b strings.Builder
	for _, p := range []*testproc.Proc{c.etcd, c.apiserver, c.kcm, c.scheduler} {
		if p != nil {
			fmt.Fprintf(&b, "--- %s (%s):\n%s\n", p.Name, p.LogPath, p.Tail(lines))
		}
	}
	return b.String()
}

func (c *Cluster) newProc(name string, argv ...string) *testproc.Proc {
	if c.NetNS != "" {
		argv = append([]string{"nsenter", "--net=" + c.NetNS, "--"}, argv...)
	}
	return testproc.New(name, filepath.Join(c.dir, name+".log"), argv...)
}

// waitReady polls the apiserver's /readyz until it answers 200.
func (c *Cluster) waitReady() error {
	hc, err := rest.HTTPClientFor(c.AdminConfig)
	if err != nil {
		return err
	}
	hc.Timeout = 2 * time.Second
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(startTimeout)
	last := "no answer"
	for {
		for _, p := range []*testproc.Proc{c.etcd, c.apiserver} {
			if !p.Running() {
				return fmt.Errorf("%s exited (%v); log:\n%s", p.Name, p.Err(), p.Tail(40))
			}
		}
		resp, err := hc.Get(c.Server + "/readyz")
		if err == nil {
			b := make([]byte, 512)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, b[:n])
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready within %v (%s); log:\n%s", startTimeout, last, c.apiserver.Tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// FreePorts finds n free TCP ports on 127.0.0.1 where the control plane
// runs.
func (c *Cluster) FreePorts(n int) ([]int, error) {
	var ports []int
	find := func() error {
		var lns []net.Listener
		defer func() {
			for _, ln := range lns {
				ln.Close()
			}
		}()
		for range n {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			lns = append(lns, ln)
			ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		}
		return nil
	}
	if c.NetNS == "" {
		return ports, find()
	}
	return ports, ns.WithNetNSPath(c.NetNS, func(ns.NetNS) error { return find() })
}

// DialIn dials from inside the network namespace at path: the socket is
// made there, the connection then used from anywhere.
func DialIn(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := ns.WithNetNSPath(path, func(ns.NetNS) error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

func (c *Cluster) writeKubeconfig(path string, kp keyPair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubeapi"] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: c.pki.caPEM}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.cert, ClientKeyData: kp.key}
	cfg.Contexts["kubeapi"] = &clientcmdapi.Context{Cluster: "kubeapi", AuthInfo: "user"}
	cfg.CurrentContext = "kubeapi"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return nil
}

// RepoRoot is the directory of the main module's go.mod, above the working
// directory (go test runs in the package's directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			line, _ := bufio.NewReader(f).ReadString('\n')
			f.Close()
			if strings.TrimSpace(line) == "module github.com/metabind/metabind" {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("kubeapi: not inside the metabind module (no go.mod naming it above the working directory)")
		}
		dir = parent
	}
}
