package kubenode_test

import (
	"bufio"
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/metabind/metabind/integration/kubenode"
)

const corefile = `. {
    errors
    hosts {
        169.254.169.254 metadata.google.internal
    }
}
`

// TestNode: a pod created through the API is scheduled onto the node, gets
// a sandbox and an IP from the conflist, resolves names through CoreDNS
// with its own resolv.conf; a DaemonSet's pod runs on the node; a deleted
// pod's sandbox goes; Stop leaves nothing behind.
func TestNode(t *testing.T) {
	began := time.Now()
	n := kubenode.Start(t, t.TempDir(), kubenode.Corefile(corefile),
		kubenode.Taints(corev1.Taint{Key: "example.com/test", Value: "true", Effect: corev1.TaintEffectNoExecute}))
	if n.DNSAddress.String() != kubenode.DefaultDNSAddress {
		t.Fatalf("DNSAddress %s", n.DNSAddress)
	}
	phase := time.Now()
	subnet := netip.MustParsePrefix("10.251.0.0/24")
	n.WriteCNIConfig(t, "10-calico.conflist", n.PodNetworkConflist(subnet))
	n.WaitReady(t)
	t.Logf("phase: node up (registered) %v, Ready after the conflist %v",
		phase.Sub(began).Round(time.Millisecond), time.Since(phase).Round(time.Millisecond))

	ctx := context.Background()
	node, err := n.Cluster.AdminClient.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasTaint(node, "example.com/test") {
		t.Errorf("node's taints %v: want the registered example.com/test", node.Spec.Taints)
	}

	phase = time.Now()
	pods := n.Cluster.AdminClient.CoreV1().Pods("default")
	tolerate := []corev1.Toleration{{Key: "example.com/test", Operator: corev1.TolerationOpExists}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: corev1.PodSpec{ // no nodeName: the scheduler binds it
			Containers: []corev1.Container{{
				Name: "app", Image: kubenode.PauseImage, ImagePullPolicy: corev1.PullNever,
			}},
			Tolerations:                   tolerate,
			TerminationGracePeriodSeconds: ptr(int64(5)),
		},
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := waitRunning(t, n, "default", "app")
	ip, err := netip.ParseAddr(running.Status.PodIP)
	if err != nil || !subnet.Contains(ip) || running.Spec.NodeName != n.Name {
		t.Fatalf("pod: IP %q (want in 10.251.0.0/24), node %q", running.Status.PodIP, running.Spec.NodeName)
	}
	t.Logf("phase: pod scheduled and Running with %s in %v", ip, time.Since(phase).Round(time.Millisecond))

	// The pod's own resolv.conf names the node's CoreDNS, which answers
	// from inside the pod's netns.
	sb := n.PodSandbox(t, "default", "app")
	if sb.IP != ip.String() {
		t.Errorf("sandbox IP %s, pod IP %s", sb.IP, ip)
	}
	nameserver := nameserverOf(t, sb.ResolvConf)
	if nameserver != n.DNSAddress {
		t.Fatalf("pod's nameserver %s, want %s", nameserver, n.DNSAddress)
	}
	lookupCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	addrs, err := kubenode.Resolver(sb.NetNS, nameserver).LookupHost(lookupCtx, "metadata.google.internal.")
	cancel()
	if err != nil || len(addrs) != 1 || addrs[0] != "169.254.169.254" {
		t.Fatalf("metadata.google.internal from the pod: %v, %v; want 169.254.169.254", addrs, err)
	}

	// A DaemonSet's pod: the DaemonSet controller and the scheduler.
	phase = time.Now()
	labels := map[string]string{"app": "agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork:                   true,
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers:                    []corev1.Container{{Name: "agent", Image: kubenode.PauseImage, ImagePullPolicy: corev1.PullNever}},
					TerminationGracePeriodSeconds: ptr(int64(5)),
				},
			},
		},
	}
	if _, err := n.Cluster.AdminClient.AppsV1().DaemonSets("kube-system").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var dsPod corev1.Pod
	poll(t, "the DaemonSet's pod Running", func() bool {
		list, err := n.Cluster.AdminClient.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
		if err != nil || len(list.Items) != 1 {
			return false
		}
		dsPod = list.Items[0]
		return dsPod.Status.Phase == corev1.PodRunning && dsPod.Spec.NodeName == n.Name
	})
	if dsPod.Status.PodIP != n.IP.String() || n.PodSandbox(t, "kube-system", dsPod.Name).NetNS != "" {
		t.Errorf("the DaemonSet's hostNetwork pod has IP %s, want the node's %s and no netns of its own", dsPod.Status.PodIP, n.IP)
	}
	t.Logf("phase: DaemonSet pod %s Running in %v", dsPod.Name, time.Since(phase).Round(time.Millisecond))

	// Deleting the pod stops its sandbox: the CNI DEL ran, the netns went.
	phase = time.Now()
	if err := pods.Delete(ctx, "app", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "pod default/app gone from the API", func() bool {
		_, err := pods.Get(ctx, "app", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	poll(t, "the pod's sandbox stopped and its netns gone", func() bool {
		ready := strings.TrimSpace(n.Crictl(t, "pods", "-q", "--state", "ready", "--id", sb.ID))
		_, err := os.Stat(sb.NetNS)
		return ready == "" && errors.Is(err, os.ErrNotExist)
	})
	t.Logf("phase: pod deleted, sandbox stopped in %v", time.Since(phase).Round(time.Millisecond))

	phase = time.Now()
	n.Stop()
	t.Logf("phase: teardown %v (test %v)", time.Since(phase).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	if left := n.Leftovers(); len(left) > 0 {
		t.Errorf("left after Stop:\n%s", strings.Join(left, "\n"))
	}
	n.Stop() // idempotent
}

func waitRunning(t *testing.T, n *kubenode.Node, namespace, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	poll(t, "pod "+namespace+"/"+name+" Running", func() bool {
		var err error
		pod, err = n.Cluster.AdminClient.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != ""
	})
	return pod
}

// poll waits up to a minute for cond.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nameserverOf is the first nameserver of a resolv.conf.
func nameserverOf(t *testing.T, file string) netip.Addr {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("the pod's resolv.conf: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "nameserver" {
			a, err := netip.ParseAddr(fields[1])
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			return a
		}
	}
	t.Fatalf("%s names no nameserver", file)
	return netip.Addr{}
}

func hasTaint(node *corev1.Node, key string) bool {
	for _, taint := range node.Spec.Taints {
		if taint.Key == key {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }
