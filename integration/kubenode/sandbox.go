package kubenode

import (
	"encoding/json"
	"testing"
)

// Sandbox is a pod's sandbox as containerd runs it.
type Sandbox struct {
	ID string
	// NetNS is the path of the pod's network namespace, "" for a pod on
	// the host's network (the node's); IP its address ("" on the node's).
	NetNS string
	IP    string
	// ResolvConf is the file the pod's containers see as /etc/resolv.conf
	// (written from what the kubelet asked for: the node's DNSAddress).
	ResolvConf string
}

// PodSandbox is the ready sandbox of pod namespace/name (the test fails
// when there is none).
func (n *Node) PodSandbox(t testing.TB, namespace, name string) Sandbox {
	t.Helper()
	var pods struct {
		Items []struct {
			ID       string `json:"id"`
			State    string `json:"state"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		} `json:"items"`
	}
	out := n.Crictl(t, "pods", "-o", "json")
	if err := json.Unmarshal([]byte(out), &pods); err != nil {
		t.Fatalf("kubenode: crictl pods: %v\n%s", err, out)
	}
	for _, p := range pods.Items {
		if p.Metadata.Namespace == namespace && p.Metadata.Name == name && p.State == "SANDBOX_READY" {
			return n.inspectSandbox(t, p.ID)
		}
	}
	t.Fatalf("kubenode: no ready sandbox for pod %s/%s on node %s", namespace, name, n.Name)
	return Sandbox{}
}

// PodNetNS is the path of pod namespace/name's network namespace, to run
// clients in.
func (n *Node) PodNetNS(t testing.TB, namespace, name string) string {
	t.Helper()
	path := n.PodSandbox(t, namespace, name).NetNS
	if path == "" {
		t.Fatalf("kubenode: pod %s/%s is on the node's network: its netns is NetNSPath", namespace, name)
	}
	return path
}

func (n *Node) inspectSandbox(t testing.TB, id string) Sandbox {
	t.Helper()
	var sb struct {
		Status struct {
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
	out := n.Crictl(t, "inspectp", "-o", "json", id)
	if err := json.Unmarshal([]byte(out), &sb); err != nil {
		t.Fatalf("kubenode: crictl inspectp %s: %v\n%s", id, err, out)
	}
	s := Sandbox{
		ID: id,
		IP: sb.Status.Network.IP,
		// containerd 1.6's CRI plugin keeps it in the sandbox's root dir.
		ResolvConf: n.containerdDir("root", "io.containerd.grpc.v1.cri", "sandboxes", id, "resolv.conf"),
	}
	for _, ns := range sb.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			s.NetNS = ns.Path
		}
	}
	return s
}
