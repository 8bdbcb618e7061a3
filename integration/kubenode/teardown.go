package kubenode

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// containerLogs is where the kubelet links every container's log, whatever
// its configuration.
const containerLogs = "/var/log/containers"

// hostDirs are the directories outside Dir the node's processes make
// whatever their configuration, parents first: containerd's shim sockets go
// under /run/containerd/s, the kubelet's device-plugin socket is
// /var/lib/kubelet/device-plugins/kubelet.sock. Stop removes those that were
// not there at Start, when it finds nothing else in them. (Two nodes at once
// share the kubelet's: the device-plugin socket of the later one wins.)
var hostDirs = []string{"/run/containerd", "/run/containerd/s", "/var/lib/kubelet", "/var/lib/kubelet/device-plugins"}

// missing are the dirs that do not exist.
func missing(dirs []string) []string {
	var m []string
	for _, d := range dirs {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			m = append(m, d)
		}
	}
	return m
}

// removeHostDirs removes the host directories the node made, children
// first, with the kubelet's device-plugin socket.
func (n *Node) removeHostDirs() {
	for _, d := range slices.Backward(n.hostDirs) {
		if d == "/var/lib/kubelet/device-plugins" {
			os.Remove(filepath.Join(d, "kubelet.sock"))
		}
		os.Remove(d) // only when empty
	}
}

func (n *Node) stop() {
	t := n.t
	began := time.Now()
	if t.Failed() { // the control plane's are kubeapi's to log
		t.Logf("kubenode %s: logs (end):\n%s", n.Name, n.nodeLogs())
	}
	if n.kubelet != nil && !n.kubelet.Stop(10*time.Second) {
		t.Errorf("kubenode: kubelet did not stop within 10s of SIGTERM: killed")
	}
	if n.containerd != nil {
		n.stopContainerd()
	}
	if n.coredns != nil {
		n.coredns.Kill()
	}
	if n.Cluster != nil {
		n.Cluster.Stop()
	}
	n.spawn.Close()
	// The kubelet's root dir is a mount of itself, pods' volumes mounts
	// below it.
	for _, m := range mountsUnder(n.Dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Errorf("kubenode: unmount %s: %v", m, err)
		}
	}
	n.removeContainerLogLinks()
	n.removeHostDirs()
	if err := n.deleteNetNS(); err != nil {
		t.Errorf("kubenode: delete netns %s: %v", n.NetNSName, err)
	}
	if left := mountsUnder(n.Dir); len(left) > 0 {
		t.Errorf("kubenode: mounts left under %s, not removing it: %s", n.Dir, strings.Join(left, ", "))
	} else {
		os.RemoveAll(n.Dir)
	}
	t.Logf("kubenode: node %s stopped in %v", n.Name, time.Since(began).Round(time.Millisecond))
}

// removeContainerLogLinks removes the kubelet's links to this node's
// container logs.
func (n *Node) removeContainerLogLinks() {
	for _, l := range n.containerLogLinks() {
		os.Remove(l)
	}
}

// containerLogLinks are the kubelet's links to this node's container logs.
func (n *Node) containerLogLinks() []string {
	var mine []string
	links, _ := filepath.Glob(filepath.Join(containerLogs, "*.log"))
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, n.Dir+"/") {
			mine = append(mine, l)
		}
	}
	return mine
}

// Leftovers describes what of the node outlives Stop: processes in its
// network namespace, naming Dir on their command line or running from a
// root under it (a container's); mounts under Dir; the namespace itself;
// links to its container logs. Empty after a clean Stop. (Not the host
// directories of hostDirs: another containerd or kubelet on the machine may
// have made them since.)
func (n *Node) Leftovers() []string {
	var left []string
	for pid, args := range processes() {
		if pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		inNetNS := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && st.Ino == n.netnsIno
		root, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", pid))
		if inNetNS || strings.Contains(strings.Join(args, " "), n.Dir) || strings.HasPrefix(root, n.Dir+"/") {
			left = append(left, fmt.Sprintf("process %d: %s", pid, strings.Join(args, " ")))
		}
	}
	for _, m := range mountsUnder(n.Dir) {
		left = append(left, "mount "+m)
	}
	if _, err := os.Stat(n.NetNSPath); err == nil {
		left = append(left, "netns "+n.NetNSPath)
	}
	for _, l := range n.containerLogLinks() {
		left = append(left, "link "+l)
	}
	slices.Sort(left)
	return left
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil
	}
	var found []string
	for _, m := range mounts {
		found = append(found, m.Mountpoint)
	}
	slices.SortFunc(found, func(a, b string) int { return len(b) - len(a) })
	return found
}
