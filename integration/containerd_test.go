package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/metabind/metabind/integration/kubenode"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// The pod of testdata/containerd/pod.json, and the pause image the test
// builds (no registry is reachable, so it cannot be pulled).
const (
	crPodName      = "api-1"
	crPodNamespace = "payments"
	crPodUID       = "5f0c7a2e-3d41-4b8e-9a6c-1e2f3a4b5c6d"
	crPodTeam      = "payments" // its annotation example.com/team
	pauseImage     = kubenode.PauseImage
)

// TestContainerdEndToEnd runs a pod through a real container runtime:
// containerd's CRI plugin, driven by crictl, calls the conflist ptp +
// host-local + metabind itself, so the CNI_ARGS, capability args, prevResult
// and the two DELs of a pod's teardown are containerd's own, not the
// harness's.
func TestContainerdEndToEnd(t *testing.T) {
	start := time.Now()
	requireEnv(t)
	tools := lookContainerdTools(t)
	n := newNode(t, chain{name: "ptp", subnet: "10.197.40.0/24"})
	n.startResponder(t, responderConfig)
	phase := time.Now()
	cd := startContainerd(t, n, tools)
	t.Logf("containerd ready in %v", time.Since(phase).Round(time.Millisecond))
	phase = time.Now()
	cd.importImage(t, kubenode.BuildPauseImage(t, cd.dir))
	t.Logf("pause image built and imported in %v", time.Since(phase).Round(time.Millisecond))
	phase = time.Now()

	// crictl runp: containerd sets up the sandbox and runs the CNI ADD.
	id := strings.TrimSpace(cd.crictl(t, "runp", filepath.Join("testdata", "containerd", "pod.json")))
	if len(id) != 64 {
		t.Fatalf("crictl runp printed %q, want a sandbox ID", id)
	}
	sb := cd.inspectPod(t, id)
	netnsPath := sb.netnsPath()
	if sb.Status.State != "SANDBOX_READY" || netnsPath == "" {
		t.Fatalf("sandbox %s: state %q, netns %q", id, sb.Status.State, netnsPath)
	}

	// The binding carries what containerd said about the pod.
	bindings, err := store.ReadAll(n.stateDir, time.Second)
	if err != nil {
		t.Fatalf("read the store: %v", err)
	}
	if len(bindings) != 1 {
		t.Fatalf("after runp: %d bindings, want 1: %+v", len(bindings), bindings)
	}
	b := bindings[0]
	if b.Namespace != crPodNamespace || b.Pod != crPodName || b.PodUID != crPodUID ||
		b.Annotations["example.com/team"] != crPodTeam || b.ContainerID != id || b.InfraContainerID != id ||
		b.IfName != "eth0" || b.NetNS != netnsPath || b.IP.String() != sb.Status.Network.IP {
		t.Errorf("binding from containerd's ADD: %+v\nwant pod %s/%s uid %s, annotation example.com/team=%s, sandbox %s, netns %s, IP %s",
			b, crPodNamespace, crPodName, crPodUID, crPodTeam, id, netnsPath, sb.Status.Network.IP)
	}
	if dnat, source := metabindRules(t, n, id); len(dnat) == 0 || len(source) == 0 {
		t.Errorf("after runp, rules for the sandbox: DNAT %q, SOURCE %q; want both", dnat, source)
	}

	// The real Go metadata clients, inside the pod's netns, get the pod's
	// identity; the tokens name the pod as containerd described it.
	podNS, err := ns.GetNS(netnsPath)
	if err != nil {
		t.Fatalf("open the pod's netns %s: %v", netnsPath, err)
	}
	t.Cleanup(func() { podNS.Close() })
	p := &pod{namespace: crPodNamespace, name: crPodName, uid: crPodUID, ns: podNS, ip: b.IP}
	got, err := p.sdk(t)
	if err != nil {
		t.Fatal(err)
	}
	want := identityOf[crPodNamespace]
	if got.ProjectID != "test-project" || got.Email != want.email || got.AccessToken == "" || got.IDToken == "" {
		t.Errorf("SDK in the containerd pod: project %q, email %q, access token %t, ID token %t; want test-project, %s and both tokens",
			got.ProjectID, got.Email, got.AccessToken != "", got.IDToken != "", want.email)
	}
	keys := p.jwks(t)
	podNS.Close() // holding it would keep the pod's netns (and veth) past its DEL
	claims, err := verify(got.IDToken, keys, defaultAudience)
	if err != nil {
		t.Fatalf("ID token does not verify against the served JWKS: %v", err)
	}
	checkClaims(t, p, claims, want.sa, want.email)

	// crictl stopp: the first DEL (netns, prevResult) takes binding and rules.
	cd.crictl(t, "stopp", id)
	if bindings, err := store.ReadAll(n.stateDir, time.Second); err != nil || len(bindings) != 0 {
		t.Errorf("after stopp: bindings %+v, %v; want none", bindings, err)
	}
	if dnat, source := metabindRules(t, n, id); len(dnat)+len(source) != 0 {
		t.Errorf("after stopp, rules left for the sandbox: DNAT %q, SOURCE %q", dnat, source)
	}
	// crictl rmp: the second DEL, with no netns and no prevResult.
	cd.crictl(t, "rmp", id)
	if bindings, err := store.ReadAll(n.stateDir, time.Second); err != nil || len(bindings) != 0 {
		t.Errorf("after rmp: bindings %+v, %v; want none", bindings, err)
	}
	if dnat, source := metabindRules(t, n, id); len(dnat)+len(source) != 0 {
		t.Errorf("after rmp, rules left for the sandbox: DNAT %q, SOURCE %q", dnat, source)
	}
	if left := strings.TrimSpace(cd.crictl(t, "pods", "-q")); left != "" {
		t.Errorf("after rmp, containerd still has pods: %s", left)
	}
	if _, err := os.Stat(netnsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pod's netns %s is still there (%v)", netnsPath, err)
	}
	dels := pluginCalls(t, n, "DEL", id)
	if len(dels) != 2 || dels[0].NetNS != netnsPath || dels[1].NetNS != "" {
		t.Errorf("metabind's DELs for the sandbox (netns of each): %+v; want two, the first with %s, the second with none",
			dels, netnsPath)
	}
	t.Logf("pod created, served and removed through containerd in %v (test so far %v)",
		time.Since(phase).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// containerdTools are the runtime's binaries: containerd, ctr and runc from
// Debian's packages, crictl from scripts/install-containerd.sh.
type containerdTools struct {
	containerd, ctr, runc, crictl string
}

func lookContainerdTools(t *testing.T) containerdTools {
	t.Helper()
	var missing []string
	look := func(name string, dirs ...string) string {
		for _, d := range dirs {
			if fi, err := os.Stat(filepath.Join(d, name)); err == nil && fi.Mode().IsRegular() {
				return filepath.Join(d, name)
			}
		}
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, name)
		}
		return p
	}
	tools := containerdTools{
		containerd: look("containerd"),
		ctr:        look("ctr"),
		runc:       look("runc", "/usr/sbin", "/usr/bin"),
		crictl:     look("crictl", cniPluginsDir),
	}
	look("containerd-shim-runc-v2")
	if len(missing) > 0 {
		msg := fmt.Sprintf("needs %s: run scripts/install-containerd.sh (make test does)", strings.Join(missing, ", "))
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot run under CI: %s", msg)
		}
		t.Skip("skipped: " + msg)
	}
	return tools
}

// containerd is a containerd of the test's own, running in the node netns.
type containerd struct {
	n            *node
	tools        containerdTools
	dir          string // root, state, socket, configs and logs
	socket       string
	crictlConfig string
	logPath      string
	cmd          *exec.Cmd
	exited       chan struct{}
}

// startContainerd writes the conflist and containerd's config, starts
// containerd inside the node netns and waits until its CRI plugin reports
// runtime and network ready. Cleanup removes any pod left, stops containerd
// by PID and takes back whatever it left.
func startContainerd(t *testing.T, n *node, tools containerdTools) *containerd {
	t.Helper()
	cd := &containerd{n: n, tools: tools, dir: filepath.Join(n.dir, "containerd")}
	cd.socket = filepath.Join(cd.dir, "containerd.sock")
	cd.logPath = filepath.Join(cd.dir, "containerd.log")
	cniBin, cniConf := filepath.Join(cd.dir, "cni-bin"), filepath.Join(cd.dir, "cni-conf")
	for _, d := range []string{cniBin, cniConf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// containerd takes one CNI bin_dir: link metabind and the reference
	// plugins (loopback too: containerd brings up the pod's lo with it).
	links := map[string]string{"metabind": binDir}
	for _, p := range []string{"ptp", "host-local", "loopback"} {
		links[p] = cniPluginsDir
	}
	for name, dir := range links {
		if err := os.Symlink(filepath.Join(dir, name), filepath.Join(cniBin, name)); err != nil {
			t.Fatal(err)
		}
	}
	// Debian's containerd 1.6 carries libcni 1.1: CNI spec 1.0.0 at most.
	renderTemplate(t, "10-metabind.conflist", filepath.Join(cniConf, "10-metabind.conflist"), map[string]string{
		"IPAMDir": filepath.Join(n.dir, "ipam"), "StateDir": n.stateDir, "LogFile": n.logFile,
	})
	config := filepath.Join(cd.dir, "config.toml")
	renderTemplate(t, "config.toml", config, map[string]string{
		"Root": filepath.Join(cd.dir, "root"), "State": filepath.Join(cd.dir, "state"), "Socket": cd.socket,
		"Opt": filepath.Join(cd.dir, "opt"), "SandboxImage": pauseImage, "Runc": tools.runc,
		"RuncRoot": filepath.Join(cd.dir, "runc"), "CNIBinDir": cniBin, "CNIConfDir": cniConf,
	})
	cd.crictlConfig = filepath.Join(cd.dir, "crictl.yaml")
	crictlConfig := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n", cd.socket, cd.socket)
	if err := os.WriteFile(cd.crictlConfig, []byte(crictlConfig), 0o644); err != nil {
		t.Fatal(err)
	}

	// containerd puts its shims' sockets under /run/containerd/s whatever
	// its state dir; take the directories back if they were not there.
	_, statErr := os.Stat("/run/containerd")
	hadRunDir := statErr == nil

	logf, err := os.Create(cd.logPath)
	if err != nil {
		t.Fatal(err)
	}
	// nsenter execs containerd in place: the PID is containerd's. (ip netns
	// exec would lose the cgroup mounts containerd needs.)
	cd.cmd = exec.Command("nsenter", "--net="+n.ns.Path(), "--", tools.containerd, "--config", config)
	cd.cmd.Stdout, cd.cmd.Stderr = logf, logf
	if err := cd.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start containerd: %v", err)
	}
	cd.exited = make(chan struct{})
	go func() {
		cd.cmd.Wait()
		logf.Close()
		close(cd.exited)
	}()
	t.Cleanup(func() {
		cd.stop(t)
		if !hadRunDir {
			os.Remove("/run/containerd/s")
			os.Remove("/run/containerd")
		}
		if t.Failed() {
			b, _ := os.ReadFile(cd.logPath)
			t.Logf("containerd log:\n%s", b)
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	for {
		ready, why := cd.ready()
		if ready {
			return cd
		}
		select {
		case <-cd.exited:
			t.Fatalf("containerd exited before it was ready: %v", cd.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd not ready within 20s: %s", why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready asks the CRI plugin whether runtime and network are ready (the
// network is once it has loaded the conflist).
func (cd *containerd) ready() (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := cd.crictlErr(ctx, "info")
	if err != nil {
		return false, err.Error()
	}
	var info struct {
		Status struct {
			Conditions []struct {
				Type    string `json:"type"`
				Status  bool   `json:"status"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return false, fmt.Sprintf("crictl info: %v", err)
	}
	ready := map[string]bool{}
	var why []string
	for _, c := range info.Status.Conditions {
		ready[c.Type] = c.Status
		if !c.Status {
			why = append(why, fmt.Sprintf("%s: %s %s", c.Type, c.Reason, c.Message))
		}
	}
	return ready["RuntimeReady"] && ready["NetworkReady"], strings.Join(why, "; ")
}

// stop removes the pods a failed test left (through CRI, so their DELs
// run), stops containerd by its PID, kills any shim or pause process that
// outlived it, and unmounts what is left under its directory.
func (cd *containerd) stop(t *testing.T) {
	select {
	case <-cd.exited:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := cd.crictlErr(ctx, "pods", "-q"); err == nil && strings.TrimSpace(out) != "" {
			if out, err := cd.crictlErr(ctx, "rmp", "--force", "--all"); err != nil {
				t.Logf("crictl rmp --force --all: %v\n%s", err, out)
			}
		}
		cd.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-cd.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("containerd (pid %d) did not stop within 10s of SIGTERM: killed", cd.cmd.Process.Pid)
			cd.cmd.Process.Kill()
			<-cd.exited
		}
	}
	for _, msg := range kubenode.ReapStrays(filepath.Join(cd.dir, "state"), cd.socket) {
		t.Error(msg)
	}
	for _, m := range mountsUnder(cd.dir) {
		t.Errorf("mount left under containerd's directory: %s", m)
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", m, err)
		}
	}
}

// crictl runs crictl against this containerd and returns its stdout.
func (cd *containerd) crictl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := cd.crictlErr(ctx, args...)
	if err != nil {
		t.Fatalf("crictl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (cd *containerd) crictlErr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, cd.tools.crictl, append([]string{"--config", cd.crictlConfig}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// importImage imports an OCI layout tarball into the k8s.io namespace, where
// the CRI plugin looks, and waits until the CRI plugin has seen every image
// the tarball names.
func (cd *containerd) importImage(t *testing.T, tarball string) {
	t.Helper()
	names, err := kubenode.ImageNames(tarball)
	if err != nil {
		t.Fatalf("%s: %v", tarball, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cd.tools.ctr, "--address", cd.socket, "--namespace", "k8s.io",
		"images", "import", tarball).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", tarball, err, out)
	}
	for _, name := range names {
		deadline := time.Now().Add(10 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := cd.crictlErr(ctx, "inspecti", name)
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the CRI plugin does not see %s within 10s of its import: %v\nctr said: %s", name, err, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// sandboxInspect is the part of `crictl inspectp -o json` the test reads.
type sandboxInspect struct {
	Status struct {
		ID      string `json:"id"`
		State   string `json:"state"`
		Network struct {
			IP string `json:"ip"`
		} `json:"network"`
	} `json:"status"`
	Info struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct {
					Type string `json:"type"`
					Path string `json:"path"`
				} `json:"namespaces"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	} `json:"info"`
}

func (cd *containerd) inspectPod(t *testing.T, id string) sandboxInspect {
	t.Helper()
	out := cd.crictl(t, "inspectp", "-o", "json", id)
	var sb sandboxInspect
	if err := json.Unmarshal([]byte(out), &sb); err != nil {
		t.Fatalf("crictl inspectp: %v\n%s", err, out)
	}
	return sb
}

// netnsPath is the pod's network namespace as containerd created it.
func (sb sandboxInspect) netnsPath() string {
	for _, n := range sb.Info.RuntimeSpec.Linux.Namespaces {
		if n.Type == "network" {
			return n.Path
		}
	}
	return ""
}

// renderTemplate fills testdata/containerd/NAME into dst; quote makes a
// JSON (and TOML) string.
func renderTemplate(t *testing.T, name, dst string, data map[string]string) {
	t.Helper()
	tmpl, err := template.New(name).Funcs(template.FuncMap{
		"quote": func(s string) (string, error) {
			b, err := json.Marshal(s)
			return string(b), err
		},
	}).Option("missingkey=error").ParseFiles(filepath.Join("testdata", "containerd", name))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, data); err != nil {
		t.Fatalf("render %s: %v", name, err)
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// metabindRules are metabind's per-pod pieces on the node that belong to
// the sandbox, as the node's backend lists them.
func metabindRules(t *testing.T, n *node, id string) (dnat, source []redirect.Owned) {
	t.Helper()
	for _, o := range n.owned(t) {
		switch {
		case o.ContainerID != id:
		case o.Chain == redirect.NATChain:
			dnat = append(dnat, o)
		default:
			source = append(source, o)
		}
	}
	return dnat, source
}

// pluginCall is one line of metabind's log.
type pluginCall struct {
	Verb        string `json:"verb"`
	ContainerID string `json:"containerID"`
	NetNS       string `json:"netns"`
	Msg         string `json:"msg"`
}

// pluginCalls are the log lines of verb for one container, oldest first.
func pluginCalls(t *testing.T, n *node, verb, containerID string) []pluginCall {
	t.Helper()
	var calls []pluginCall
	sc := bufio.NewScanner(strings.NewReader(n.pluginLog()))
	for sc.Scan() {
		var c pluginCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("plugin log line %q: %v", sc.Text(), err)
		}
		if c.Verb == verb && c.ContainerID == containerID {
			calls = append(calls, c)
		}
	}
	return calls
}

// mountsUnder lists the mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parentID major:minor root mountpoint ...; octal escapes in paths
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if strings.HasPrefix(mp, dir+"/") {
			found = append(found, mp)
		}
	}
	slices.SortFunc(found, func(a, b string) int { return len(b) - len(a) })
	return found
}

func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
