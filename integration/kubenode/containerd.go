package kubenode

import (
	"archive/tar"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"github.com/metabind/metabind/integration/testproc"
)

//go:embed containerd.toml
var containerdConfig string

// containerdDir is containerd's part of Dir: root, state, socket, config.
func (n *Node) containerdDir(elem ...string) string {
	return filepath.Join(append([]string{n.Dir, "containerd"}, elem...)...)
}

// startContainerd writes containerd's config, starts it in the node's
// netns and waits until its CRI plugin reports the runtime ready.
func (n *Node) startContainerd() {
	t := n.t
	t.Helper()
	if err := os.MkdirAll(n.containerdDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	n.Containerd = n.containerdDir("containerd.sock")
	tmpl, err := template.New("containerd.toml").Funcs(template.FuncMap{
		"quote": func(s string) (string, error) {
			b, err := json.Marshal(s)
			return string(b), err
		},
	}).Option("missingkey=error").Parse(containerdConfig)
	if err != nil {
		t.Fatal(err)
	}
	var config bytes.Buffer
	err = tmpl.Execute(&config, map[string]string{
		"Root": n.containerdDir("root"), "State": n.containerdDir("state"), "Socket": n.Containerd,
		"Opt": n.containerdDir("opt"), "SandboxImage": PauseImage, "Runc": n.tools.runc,
		"RuncRoot": n.containerdDir("runc"), "CNIBinDir": n.CNIBinDir, "CNIConfDir": n.CNIConfDir,
	})
	if err != nil {
		t.Fatalf("kubenode: containerd config: %v", err)
	}
	configFile := n.containerdDir("config.toml")
	crictlConfig := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n", n.Containerd, n.Containerd)
	for file, b := range map[string][]byte{configFile: config.Bytes(), n.containerdDir("crictl.yaml"): []byte(crictlConfig)} {
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// nsenter execs containerd in place (ip netns exec would lose the
	// cgroup mounts containerd needs).
	n.containerd = testproc.New("containerd", n.containerdDir("containerd.log"),
		n.tools.nsenter, "--net="+n.NetNSPath, "--", n.tools.containerd, "--config", configFile)
	if err := n.containerd.Start(n.spawn); err != nil {
		t.Fatalf("kubenode: %v", err)
	}
	err = poll(startTimeout, func() (bool, string, error) {
		if !n.containerd.Running() {
			return false, "", fmt.Errorf("containerd exited (%v); log:\n%s", n.containerd.Err(), n.containerd.Tail(40))
		}
		conds, err := n.runtimeConditions()
		if err != nil {
			return false, err.Error(), nil
		}
		return conds["RuntimeReady"] == "", fmt.Sprint(conds), nil
	})
	if err != nil {
		t.Fatalf("kubenode: containerd ready: %v", err)
	}
}

// runtimeConditions are the CRI status conditions by type: "" for one
// that holds, the reason and message for one that does not.
func (n *Node) runtimeConditions() (map[string]string, error) {
	out, err := n.crictl("info")
	if err != nil {
		return nil, err
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
		return nil, fmt.Errorf("crictl info: %w", err)
	}
	conds := map[string]string{}
	for _, c := range info.Status.Conditions {
		conds[c.Type] = ""
		if !c.Status {
			conds[c.Type] = strings.TrimSpace(c.Reason + " " + c.Message)
		}
	}
	return conds, nil
}

// Crictl runs crictl against the node's containerd and returns its stdout.
func (n *Node) Crictl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.crictl(args...)
	if err != nil {
		t.Fatalf("kubenode: %v", err)
	}
	return out
}

func (n *Node) crictl(args ...string) (string, error) {
	ctx, cancel := ctx()
	defer cancel()
	cmd := exec.CommandContext(ctx, n.tools.crictl, append([]string{"--config", n.containerdDir("crictl.yaml")}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("crictl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// ImportImage imports an OCI layout tarball (as internal/ociimage writes)
// into containerd's k8s.io namespace, where the CRI plugin looks, and waits
// until the CRI plugin sees the images it names.
func (n *Node) ImportImage(t testing.TB, tarball string) {
	t.Helper()
	names, err := ImageNames(tarball)
	if err != nil {
		t.Fatalf("kubenode: import %s: %v", tarball, err)
	}
	ctx, cancel := ctx()
	defer cancel()
	out, err := exec.CommandContext(ctx, n.tools.ctr, "--address", n.Containerd, "--namespace", "k8s.io",
		"images", "import", tarball).CombinedOutput()
	if err != nil {
		t.Fatalf("kubenode: ctr images import %s: %v\n%s", tarball, err, out)
	}
	for _, name := range names {
		err := poll(10*time.Second, func() (bool, string, error) {
			_, err := n.crictl("inspecti", name)
			return err == nil, fmt.Sprint(err), nil
		})
		if err != nil {
			t.Fatalf("kubenode: the CRI plugin does not see %s after its import: %v\nctr said: %s", name, err, out)
		}
	}
}

// ImageNames are the names an OCI layout tarball gives its images (the
// annotation containerd names an imported image by).
func ImageNames(tarball string) ([]string, error) {
	f, err := os.Open(tarball)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no index.json")
		}
		if err != nil {
			return nil, err
		}
		if h.Name != "index.json" {
			continue
		}
		var index struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(tr).Decode(&index); err != nil {
			return nil, fmt.Errorf("index.json: %w", err)
		}
		var names []string
		for _, m := range index.Manifests {
			if name := m.Annotations["io.containerd.image.name"]; name != "" {
				names = append(names, name)
			}
		}
		if len(names) == 0 {
			return nil, errors.New("index.json names no image (io.containerd.image.name)")
		}
		return slices.Compact(names), nil
	}
}

// stopContainerd removes every pod sandbox through CRI (stopp runs the CNI
// DEL, rmp the second), stops containerd and kills whatever of it
// outlived it: shims of its socket, pause processes of its tasks.
func (n *Node) stopContainerd() {
	t := n.t
	if n.containerd.Running() {
		out, err := n.crictl("pods", "-q")
		if err != nil {
			t.Errorf("kubenode: list sandboxes: %v", err)
		}
		for _, id := range strings.Fields(out) {
			for _, verb := range []string{"stopp", "rmp"} {
				if _, err := n.crictl(verb, id); err != nil {
					t.Errorf("kubenode: %v", err)
				}
			}
		}
		if !n.containerd.Stop(10 * time.Second) {
			t.Errorf("kubenode: containerd did not stop within 10s of SIGTERM: killed")
		}
	}
	n.containerd.Kill()
	for _, msg := range ReapStrays(n.containerdDir("state"), n.Containerd) {
		t.Errorf("kubenode: %s", msg)
	}
}

// ReapStrays kills what a containerd (its state dir and socket) left behind
// when it stopped: a shim and its pause process outlive containerd only
// when a pod could not be removed. Shims are known by the socket they
// name; a sandbox's pause by the task's init.pid. It removes the sockets of
// the killed shims (under /run/containerd/s) and says what it killed.
func ReapStrays(stateDir, socket string) []string {
	var killed []string
	tasks := filepath.Join(stateDir, "io.containerd.runtime.v2.task")
	pauses, _ := filepath.Glob(filepath.Join(tasks, "*", "*", "init.pid"))
	for _, file := range pauses {
		if pid := pidFrom(file); pid > 0 && processComm(pid) == "pause" {
			killed = append(killed, fmt.Sprintf("pause (pid %d) outlived containerd: killed", pid))
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, pid := range shims(socket) {
		killed = append(killed, fmt.Sprintf("containerd-shim-runc-v2 (pid %d) outlived containerd: killed", pid))
		syscall.Kill(pid, syscall.SIGKILL)
	}
	addresses, _ := filepath.Glob(filepath.Join(tasks, "*", "*", "address"))
	for _, file := range addresses {
		if b, err := os.ReadFile(file); err == nil {
			os.Remove(strings.TrimPrefix(strings.TrimSpace(string(b)), "unix://"))
		}
	}
	return killed
}

// shims are the PIDs of the shims the containerd of socket started: they
// name its socket as their -address.
func shims(socket string) []int {
	var pids []int
	for pid, args := range processes() {
		i := slices.Index(args, "-address")
		if filepath.Base(args[0]) == "containerd-shim-runc-v2" && i > 0 && i+1 < len(args) && args[i+1] == socket {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processes are the command lines of every process by PID.
func processes() map[int][]string {
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	procs := map[int][]string{}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil || len(b) == 0 {
			continue // gone, or a kernel thread
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(file))); err == nil {
			procs[pid] = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		}
	}
	return procs
}

func pidFrom(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// processComm is the process's command name (at most 15 bytes), or "".
func processComm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Exec runs argv in the container (crictl exec, as kubectl exec does
// through the kubelet) and returns its stdout and stderr. crictl runs in
// the node's netns: containerd's streaming server listens on the node's
// loopback.
func (n *Node) Exec(containerID string, argv ...string) (stdout, stderr string, err error) {
	ctx, cancel := ctx()
	defer cancel()
	args := append([]string{"--net=" + n.NetNSPath, "--", n.tools.crictl, "--config", n.containerdDir("crictl.yaml"),
		"exec", containerID}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// ContainerLogs is the tail of a container's log, both streams (crictl
// logs writes the container's stderr to its own).
func (n *Node) ContainerLogs(containerID string, lines int) string {
	ctx, cancel := ctx()
	defer cancel()
	out, err := exec.CommandContext(ctx, n.tools.crictl, "--config", n.containerdDir("crictl.yaml"),
		"logs", "--tail", fmt.Sprint(lines), containerID).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(crictl logs: %v)", out, err)
	}
	return string(out)
}
