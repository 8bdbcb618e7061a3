package kubenode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/metabind/metabind/integration/testproc"
)

// kubeletConfig is the kubelet's KubeletConfiguration: a node without
// systemd on cgroup v1, with no QoS cgroups, no eviction, no swap check,
// containerd as its runtime, DNSAddress as every pod's nameserver. Only
// clients with a certificate of the cluster's CA may use its API (the
// apiserver, for logs and exec).
func (n *Node) kubeletConfig(healthzPort int, taints []corev1.Taint) map[string]any {
	if taints == nil {
		taints = []corev1.Taint{}
	}
	return map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"failCgroupV1":             false,
		"cgroupDriver":             "cgroupfs",
		"cgroupsPerQOS":            false,
		"enforceNodeAllocatable":   []string{},
		"failSwapOn":               false,
		"evictionHard":             map[string]string{},
		"containerRuntimeEndpoint": "unix://" + n.Containerd,
		"clusterDNS":               []string{n.DNSAddress.String()},
		"clusterDomain":            "cluster.local",
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": false},
			"x509":      map[string]any{"clientCAFile": n.Cluster.CAFile},
		},
		"authorization":      map[string]any{"mode": "AlwaysAllow"},
		"readOnlyPort":       0,
		"healthzBindAddress": "127.0.0.1",
		"healthzPort":        healthzPort,
		"registerWithTaints": taints,
		// Not the host's /usr/libexec/kubernetes and /var/log/pods.
		"volumePluginDir": filepath.Join(n.Dir, "kubelet-plugins"),
		"podLogsDir":      filepath.Join(n.Dir, "pod-logs"),
	}
}

// startKubelet starts the kubelet in the node's netns with the node's
// credential; it registers the node.
func (n *Node) startKubelet(taints []corev1.Taint) {
	t := n.t
	t.Helper()
	ports, err := n.Cluster.FreePorts(1)
	if err != nil {
		t.Fatalf("kubenode: free port: %v", err)
	}
	config, err := yaml.Marshal(n.kubeletConfig(ports[0], taints))
	if err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(configFile, config, 0o644); err != nil {
		t.Fatal(err)
	}
	n.kubelet = testproc.New("kubelet", filepath.Join(n.Dir, "kubelet.log"),
		n.tools.nsenter, "--net="+n.NetNSPath, "--", n.tools.kubelet,
		"--config="+configFile,
		"--kubeconfig="+n.Cluster.NodeKubeconfig,
		"--root-dir="+n.kubeletDir,
		"--cert-dir="+filepath.Join(n.kubeletDir, "pki"), // not under /var/lib/kubelet
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP.String(),
		"--v=1",
	)
	if err := n.kubelet.Start(n.spawn); err != nil {
		t.Fatalf("kubenode: %v", err)
	}
}

// waitRegistered waits until the kubelet has registered the node.
func (n *Node) waitRegistered() {
	n.t.Helper()
	n.waitNode(n.t, "registered", func(*corev1.Node) (bool, string) { return true, "" })
}

// WaitReady waits until the node is Ready and the controller-manager has
// lifted its node.kubernetes.io/not-ready taint. The network is ready once
// CNIConfDir holds a config.
func (n *Node) WaitReady(t testing.TB) {
	t.Helper()
	n.waitNode(t, "Ready", func(node *corev1.Node) (bool, string) {
		var why []string
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
				why = append(why, fmt.Sprintf("Ready=%s: %s", c.Status, c.Message))
			}
		}
		for _, taint := range node.Spec.Taints {
			if taint.Key == corev1.TaintNodeNotReady {
				why = append(why, "taint "+taint.ToString())
			}
		}
		if len(why) == 0 && !hasCondition(node, corev1.NodeReady) {
			why = append(why, "no Ready condition")
		}
		return len(why) == 0, strings.Join(why, "; ")
	})
}

func hasCondition(node *corev1.Node, typ corev1.NodeConditionType) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == typ {
			return true
		}
	}
	return false
}

// waitNode polls the Node object until ok, failing the test when the
// kubelet exits or startTimeout passes.
func (n *Node) waitNode(t testing.TB, state string, ok func(*corev1.Node) (bool, string)) {
	t.Helper()
	began := time.Now()
	err := poll(startTimeout, func() (bool, string, error) {
		if !n.kubelet.Running() {
			return false, "", fmt.Errorf("kubelet exited (%v); log:\n%s", n.kubelet.Err(), n.kubelet.Tail(60))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		node, err := n.Cluster.AdminClient.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "not registered", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		done, why := ok(node)
		return done, why, nil
	})
	if err != nil {
		n.Logs(t)
		t.Fatalf("kubenode: node %s %s: %v", n.Name, state, err)
	}
	t.Logf("kubenode: node %s %s after %v", n.Name, state, time.Since(began).Round(time.Millisecond))
}
