package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/go-jose/go-jose/v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/metabind/metabind/integration/fakeaws"
	"github.com/metabind/metabind/integration/fakegoogle"
	"github.com/metabind/metabind/integration/kubenode"
	"github.com/metabind/metabind/integration/manifests"
	"github.com/metabind/metabind/internal/ociimage"
	"github.com/metabind/metabind/redirect"
	"github.com/metabind/metabind/store"
)

// The workload pods of TestOnARealNode: two ServiceAccounts, each with a
// Google service account and an AWS role of its own.
var realNodeIdentities = map[string]struct{ gsa, role string }{
	"api": {"api@test-project.iam.gserviceaccount.com", "arn:aws:iam::111122223333:role/api"},
	"web": {"web@test-project.iam.gserviceaccount.com", "arn:aws:iam::111122223333:role/web"},
}

const (
	workloadImage = "localhost/metabind/workload:e2e"
	agentLabel    = "app.kubernetes.io/name=metabind"
)

// TestOnARealNode installs metabind the way a platform engineer does, on a
// real node: kube-apiserver, controller-manager and scheduler, a kubelet
// with containerd, and CoreDNS as the cluster DNS, in a throwaway node
// netns. deploy/ is applied (only its image, host paths and configuration
// pointed at the test's); the agent's init step chains metabind into a
// Calico-style conflist and the startup taint goes once the agent is
// ready; workload pods run the real Go clients and a client that calls the
// metadata server by name through the pod's own resolver, and get the
// credentials of their own ServiceAccounts, exchanged at the Google and AWS
// stand-ins. Then: the primary CNI rewrites its conflist (re-chained), the
// agent pod is deleted (fail closed, then served again), a workload pod is
// deleted (kubelet's DEL takes its binding), and uninstall restores the
// conflist.
func TestOnARealNode(t *testing.T) {
	requireEnv(t)
	began := time.Now()
	agentTarball, agentImage := agentImageTarball(t)
	dir := t.TempDir()
	phase := time.Now()
	n := kubenode.Start(t, dir, kubenode.Corefile(metadataCorefile(t)),
		kubenode.Taints(corev1.Taint{Key: startupTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}))
	t.Cleanup(func() {
		if t.Failed() {
			dumpAgentLogs(t, n)
		}
	})
	// The primary CNI's conflist, as Calico ships it (cniVersion 0.3.1).
	primary := n.PodNetworkConflist(netip.MustParsePrefix("10.251.0.0/24"))
	n.WriteCNIConfig(t, "10-calico.conflist", primary)
	n.WaitReady(t)
	n.ImportImage(t, agentTarball)
	n.ImportImage(t, buildWorkloadImage(t, dir))
	startNodeMetadataServerIn(t, n.NetNSPath)
	t.Logf("phase: node Ready, images imported in %v", time.Since(phase).Round(time.Millisecond))

	fg, fa := startCloudStandIns(t, n)
	ctx := context.Background()
	c := n.Cluster
	for ksa, id := range realNodeIdentities {
		c.CreateServiceAccount("payments", ksa, map[string]string{
			"iam.gke.io/gcp-service-account": id.gsa,
			"eks.amazonaws.com/role-arn":     id.role,
		})
		fg.Allow(fg.Principal("system:serviceaccount:payments:"+ksa), id.gsa)
		fa.Trust(id.role, "system:serviceaccount:payments:"+ksa)
	}
	caMap := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cloud-cas", Namespace: "payments"},
		Data:       map[string]string{"google.pem": readString(t, fg.CAFile), "aws.pem": readString(t, fa.CAFile)},
	}
	if _, err := c.AdminClient.CoreV1().ConfigMaps("payments").Create(ctx, caMap, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// 1. Apply deploy/. Workload pods are created at once too: the startup
	// taint keeps them off the node until the agent is ready.
	stateDir := filepath.Join(dir, "metabind-state")
	objs := deployObjects(t, n, agentImage, stateDir, fg, fa)
	phase = time.Now()
	if err := manifests.Create(ctx, c.AdminClient, objs); err != nil {
		t.Fatalf("apply deploy/: %v", err)
	}
	api1 := createWorkloadPod(t, n, "api-1", "api")
	agent := waitAgentReady(t, n, "")
	waitFor(t, "the startup taint removed", time.Minute, func() (bool, string) {
		node, err := c.AdminClient.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return !slices.ContainsFunc(node.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == startupTaint }), fmt.Sprint(node.Spec.Taints)
	})
	t.Logf("phase: deploy/ applied; agent %s Ready and the taint gone in %v", agent.Name, time.Since(phase).Round(time.Millisecond))
	checkChained(t, n, primary)

	// 2. Workload pods get their own identities, exchanged at the clouds,
	// from the real Go clients and by name through CoreDNS.
	phase = time.Now()
	web1 := createWorkloadPod(t, n, "web-1", "web")
	served := map[string]*corev1.Pod{}
	for _, p := range []*corev1.Pod{api1, web1} {
		served[p.Name] = waitPodRunning(t, n, p.Name)
		checkBound(t, stateDir, served[p.Name])
		checkWorkloadIdentity(t, n, served[p.Name], fg, fa)
	}
	// deploy/'s netconf names no backend: auto, which is nftables on a
	// kernel with nf_tables (every kernel this suite runs on).
	if bases, err := store.ReadBases(stateDir, time.Second); err != nil || len(bases) != 1 || bases[0].Backend != redirect.BackendNFTables {
		t.Fatalf("the node's recorded base: %+v, %v; want one, nftables (auto)", bases, err)
	}
	t.Logf("phase: two workload pods served their own identities in %v", time.Since(phase).Round(time.Millisecond))

	// 3. The primary CNI rewrites its conflist without metabind, and with a
	// change of its own (an MTU), as an agent restarting with new settings
	// does.
	phase = time.Now()
	rewrite := bytes.Replace(primary, []byte(`"type": "ptp"`), []byte(`"type": "ptp", "mtu": 1400`), 1)
	if bytes.Equal(rewrite, primary) {
		t.Fatal("the primary's rewrite changed nothing")
	}
	n.WriteCNIConfig(t, "10-calico.conflist", rewrite)
	rewritten := time.Now()
	waitFor(t, "metabind chained again after the primary's rewrite", 2*time.Second, func() (bool, string) {
		return chainedLast(n), "not chained"
	})
	if conf := readString(t, filepath.Join(n.CNIConfDir, "10-calico.conflist")); !strings.Contains(conf, `"mtu": 1400`) {
		t.Fatalf("re-chaining lost the primary's new setting:\n%s", conf)
	}
	t.Logf("phase: re-chained %v after the primary CNI's rewrite", time.Since(rewritten).Round(time.Millisecond))
	api2 := waitPodRunning(t, n, createWorkloadPod(t, n, "api-2", "api").Name)
	checkBound(t, stateDir, api2)
	checkWorkloadIdentity(t, n, api2, fg, fa)
	t.Logf("phase: a pod created after the rewrite bound and served in %v", time.Since(phase).Round(time.Millisecond))

	// 4. The agent pod is deleted: requests fail closed (never another
	// identity, never the node's) until the DaemonSet's new pod serves.
	phase = time.Now()
	before, err := store.ReadAll(stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	gap := watchFailClosed(t, n, served["api-1"], realNodeIdentities["api"].gsa)
	if err := c.AdminClient.CoreV1().Pods("metabind-system").Delete(ctx, agent.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	newAgent := waitAgentReady(t, n, agent.Name)
	res := gap.waitServed(t)
	t.Logf("phase: agent %s deleted, %s Ready %v later; the pod's requests meanwhile: %s",
		agent.Name, newAgent.Name, time.Since(phase).Round(time.Millisecond), res)
	if res.failed == 0 {
		t.Errorf("no request failed while the agent was away: the gap was not observed")
	}
	after, err := store.ReadAll(stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !sameBindings(before, after) {
		t.Errorf("bindings changed across the agent's restart:\nbefore %v\nafter  %v", before, after)
	}
	checkWorkloadIdentity(t, n, served["web-1"], fg, fa)

	// 5. A workload pod is deleted: kubelet's DEL removes binding and rules.
	phase = time.Now()
	if err := c.AdminClient.CoreV1().Pods("payments").Delete(ctx, "api-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ip := api2.Status.PodIP
	waitFor(t, "api-2's binding and rules removed", time.Minute, func() (bool, string) {
		bindings, err := store.ReadAll(stateDir, time.Second)
		if err != nil {
			return false, err.Error()
		}
		for _, b := range bindings {
			if b.IP.String() == ip {
				return false, "still bound: " + b.Pod
			}
		}
		owned := ownedOnNode(t, n.NetNSPath)
		return !slices.ContainsFunc(owned, func(o redirect.Owned) bool { return o.IP.String() == ip }), fmt.Sprintf("rules still name %s: %v", ip, owned)
	})
	t.Logf("phase: api-2 deleted, binding and rules gone in %v", time.Since(phase).Round(time.Millisecond))

	// 6. Uninstall: the DaemonSet goes (its watcher would chain again),
	// then metabindctl uninstall gives back the primary's file.
	phase = time.Now()
	if err := c.AdminClient.AppsV1().DaemonSets("metabind-system").Delete(ctx, "metabind", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent pods gone", time.Minute, func() (bool, string) {
		list, err := c.AdminClient.CoreV1().Pods("metabind-system").List(ctx, metav1.ListOptions{LabelSelector: agentLabel})
		return err == nil && len(list.Items) == 0, fmt.Sprint(err)
	})
	out, err := exec.Command(filepath.Join(binDir, "metabindctl"), "uninstall",
		"--cni-conf-dir", n.CNIConfDir, "--cni-bin-dir", n.CNIBinDir).CombinedOutput()
	if err != nil {
		t.Fatalf("metabindctl uninstall: %v\n%s", err, out)
	}
	// The primary's own file as it last wrote it, byte for byte.
	if got := readString(t, filepath.Join(n.CNIConfDir, "10-calico.conflist")); got != string(rewrite) {
		t.Errorf("after uninstall the conflist is\n%s\nwant the primary's last\n%s", got, rewrite)
	}
	if _, err := os.Stat(filepath.Join(n.CNIBinDir, "metabind")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after uninstall the plugin binary is still in the CNI bin dir (%v)", err)
	}
	entries, _ := os.ReadDir(n.CNIConfDir)
	if len(entries) != 1 {
		t.Errorf("after uninstall the CNI conf dir holds %d files, want the primary's only", len(entries))
	}
	t.Logf("phase: uninstalled in %v: %s", time.Since(phase).Round(time.Millisecond), strings.TrimSpace(string(out)))
	t.Logf("end to end on a real node: %v", time.Since(began).Round(time.Millisecond))
}

// agentImageTarball is `make image`'s tarball (METABIND_IMAGE to use
// another) and the name it gives the image.
func agentImageTarball(t *testing.T) (tarball, name string) {
	t.Helper()
	tarball = os.Getenv("METABIND_IMAGE")
	if tarball == "" {
		root, _ := filepath.Abs("..")
		tarball = filepath.Join(root, "bin", "image", "metabind.oci.tar")
	}
	if _, err := os.Stat(tarball); err != nil {
		cannotRun(t, fmt.Sprintf("needs the agent image %s: run make image (make test does)", tarball))
	}
	names, err := kubenode.ImageNames(tarball)
	if err != nil || len(names) == 0 {
		t.Fatalf("agent image %s: names %v, %v", tarball, names, err)
	}
	return tarball, names[0]
}

// metadataCorefile is the node's Corefile with deploy/coredns-metadata.yaml's
// stanza, as its comments tell an admin to add it.
func metadataCorefile(t *testing.T) string {
	t.Helper()
	objs, err := manifests.Load("../deploy/coredns-metadata.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cm := manifests.Find[*corev1.ConfigMap](objs, "coredns-custom")
	stanza := cm.Data["metadata.override"]
	if cm == nil || stanza == "" {
		t.Fatal("deploy/coredns-metadata.yaml has no metadata.override")
	}
	return ".:53 {\n    errors\n" + indent(stanza, "    ") + "}\n"
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if line != "" {
			b.WriteString(prefix + line)
		}
	}
	return b.String()
}

// buildWorkloadImage is the workload pods' image: the real Go clients
// (podclient, awsclient) and a pause process to keep the container up,
// static, with nothing in the environment that points at a metadata server.
func buildWorkloadImage(t *testing.T, dir string) string {
	t.Helper()
	root, _ := filepath.Abs("..")
	out := filepath.Join(dir, "workload-bin")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out+"/",
		"./integration/podclient", "./integration/awsclient", "./integration/pause")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the workload binaries: %v\n%s", err, b)
	}
	var layer ociimage.Layer
	for _, name := range []string{"podclient", "awsclient", "pause"} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		layer = append(layer, ociimage.File{Path: name, Mode: 0o755, Data: b})
	}
	tarball := filepath.Join(dir, "workload.oci.tar")
	err := ociimage.WriteFile(tarball, ociimage.Image{Name: workloadImage, Manifests: []ociimage.Manifest{{
		Platform: ociimage.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   ociimage.Config{Entrypoint: []string{"/pause"}},
		Layers:   []ociimage.Layer{layer},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return tarball
}

// startNodeMetadataServerIn serves the node's own (simulated) cloud
// metadata server on 169.254.169.254:80 in the node netns: what a pod must
// never reach, whether metabind's agent runs or not.
func startNodeMetadataServerIn(t *testing.T, netnsPath string) {
	t.Helper()
	nodeNS, err := ns.GetNS(netnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer nodeNS.Close()
	n := &node{ns: nodeNS}
	n.startNodeMetadataServer(t)
}

// startCloudStandIns runs the Google and AWS stand-ins in the node netns
// (the responder, on the host network, reaches them on the node's
// loopback; pods reach AWS's S3 at the node's address), checking tokens
// against the cluster's JWKS.
func startCloudStandIns(t *testing.T, n *kubenode.Node) (*fakegoogle.Fake, *fakeaws.Fake) {
	t.Helper()
	jwks := func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return n.Cluster.AdminClient.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	}
	nodeIP := []net.IP{n.IP.AsSlice()}
	fg := fakegoogle.Start(t, t.TempDir(), fakegoogle.Options{
		ProjectNumber: "123456789012", Pool: "metabind", Provider: "cluster", Issuer: n.Cluster.Issuer, JWKS: jwks,
		ListenAddr: "0.0.0.0:0", NetNS: n.NetNSPath, CertIPs: nodeIP,
	})
	fa := fakeaws.Start(t, t.TempDir(), fakeaws.Options{
		Issuer: n.Cluster.Issuer, JWKS: jwks, Region: "eu-west-3",
		ListenAddr: "0.0.0.0:0", NetNS: n.NetNSPath, CertIPs: nodeIP,
	})
	return fg, fa
}

// deployObjects are deploy/'s objects with what a test must change: the
// image (imported, never pulled), the host paths (the node's own dirs),
// the configuration (the stand-ins, the node credential's file) and, for
// the taint removal's in-cluster config, the API server's address (there
// is no kube-proxy to serve the kubernetes Service).
func deployObjects(t *testing.T, n *kubenode.Node, image, stateDir string, fg *fakegoogle.Fake, fa *fakeaws.Fake) []kruntime.Object {
	t.Helper()
	objs, err := manifests.Load(deployFiles(t)...)
	if err != nil {
		t.Fatal(err)
	}
	pkiDir := filepath.Join(n.Dir, "kubelet-pki")
	for _, d := range []string{stateDir, pkiDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// rbac.yaml: the audiences of the two exchanges and the pods', as its
	// comments tell an admin to list them.
	role := manifests.Find[*rbacv1.ClusterRole](objs, "metabind:token-audiences")
	if role == nil {
		t.Fatal("deploy/rbac.yaml has no ClusterRole metabind:token-audiences")
	}
	role.Rules[0].Resources = []string{fg.Audience(), "sts.amazonaws.com", grantedAudience}
	cm := manifests.Find[*corev1.ConfigMap](objs, "metabind")
	if cm == nil {
		t.Fatal("deploy/ has no ConfigMap metabind")
	}
	// The plugin runs on the host: its state dir is the host's path, which
	// the responder's container mounts at /var/lib/metabind.
	entry := map[string]any{}
	if err := json.Unmarshal([]byte(cm.Data["metabind.json"]), &entry); err != nil {
		t.Fatalf("deploy/configmap.yaml metabind.json: %v", err)
	}
	entry["stateDir"] = stateDir
	entry["logFile"] = filepath.Join(n.Dir, "metabind-cni.log")
	cm.Data["metabind.json"] = string(mustJSON(t, entry))
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["responder.yaml"]), &cfg); err != nil {
		t.Fatalf("deploy/configmap.yaml responder.yaml: %v", err)
	}
	cfg["project"] = map[string]any{"id": "test-project", "numericId": "424242424242"}
	cfg["kubernetes"] = map[string]any{"kubeconfig": cfg["kubernetes"].(map[string]any)["kubeconfig"], "audiences": []string{grantedAudience}}
	cfg["gcp"] = map[string]any{
		"workloadIdentityProvider": "projects/123456789012/locations/global/workloadIdentityPools/metabind/providers/cluster",
		"stsURL":                   fg.STSURL, "iamCredentialsURL": fg.IAMURL, "caFile": "/etc/metabind/google-ca.pem",
	}
	cfg["aws"] = map[string]any{"region": "eu-west-3", "stsURL": fa.STSURL, "caFile": "/etc/metabind/aws-ca.pem"}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["responder.yaml"] = string(b)
	cm.Data["google-ca.pem"] = readString(t, fg.CAFile)
	cm.Data["aws-ca.pem"] = readString(t, fa.CAFile)

	ds := manifests.Find[*appsv1.DaemonSet](objs, "metabind")
	spec := &ds.Spec.Template.Spec
	hostPaths := map[string]string{
		"cni-conf": n.CNIConfDir, "cni-bin": n.CNIBinDir, "state": stateDir,
		"node-kubeconfig": n.Cluster.NodeKubeconfig, "kubelet-pki": pkiDir,
	}
	for i := range spec.Volumes {
		if p, ok := hostPaths[spec.Volumes[i].Name]; ok {
			spec.Volumes[i].HostPath.Path = p
		}
	}
	apiHost, apiPort, err := net.SplitHostPort(strings.TrimPrefix(n.Cluster.Server, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			if cs[i].Image != "ghcr.io/metabind/metabind:latest" {
				t.Fatalf("container %s: image %s, want deploy/'s ghcr.io/metabind/metabind:latest", cs[i].Name, cs[i].Image)
			}
			cs[i].Image, cs[i].ImagePullPolicy = image, corev1.PullNever
			if cs[i].Name == "responder" {
				cs[i].Env = append(cs[i].Env,
					corev1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: apiHost},
					corev1.EnvVar{Name: "KUBERNETES_SERVICE_PORT", Value: apiPort})
			}
		}
	}
	return objs
}

// createWorkloadPod creates a pod of ServiceAccount ksa in payments, with
// no node name (the scheduler binds it, once the node has no startup
// taint) and the stand-ins' CAs for the clients' TLS to them.
func createWorkloadPod(t *testing.T, n *kubenode.Node, name, ksa string) *corev1.Pod {
	t.Helper()
	grace := int64(5)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "payments"},
		Spec: corev1.PodSpec{
			ServiceAccountName:            ksa,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "app", Image: workloadImage, ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{
					{Name: "AWS_CA_BUNDLE", Value: "/etc/cloud-cas/aws.pem"},
					{Name: "SSL_CERT_FILE", Value: "/etc/cloud-cas/google.pem"},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "cas", MountPath: "/etc/cloud-cas", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "cas", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cloud-cas"}},
			}}},
		},
	}
	created, err := n.Cluster.AdminClient.CoreV1().Pods("payments").Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return created
}

func waitPodRunning(t *testing.T, n *kubenode.Node, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(t, "pod payments/"+name+" Running", 2*time.Minute, func() (bool, string) {
		var err error
		pod, err = n.Cluster.AdminClient.CoreV1().Pods("payments").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "" && len(pod.Status.ContainerStatuses) == 1 &&
			pod.Status.ContainerStatuses[0].ContainerID != "", fmt.Sprintf("phase %s, conditions %v", pod.Status.Phase, pod.Status.Conditions)
	})
	return pod
}

// waitAgentReady waits for a Ready agent pod other than the one named old.
func waitAgentReady(t *testing.T, n *kubenode.Node, old string) *corev1.Pod {
	t.Helper()
	var agent *corev1.Pod
	waitFor(t, "the agent pod Ready", 2*time.Minute, func() (bool, string) {
		list, err := n.Cluster.AdminClient.CoreV1().Pods("metabind-system").List(context.Background(), metav1.ListOptions{LabelSelector: agentLabel})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for i, p := range list.Items {
			if p.Name == old || p.DeletionTimestamp != nil {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					agent = &list.Items[i]
					return true, ""
				}
			}
			states = append(states, fmt.Sprintf("%s %s %v %v", p.Name, p.Status.Phase, p.Status.InitContainerStatuses, p.Status.ContainerStatuses))
		}
		return false, strings.Join(states, "; ")
	})
	return agent
}

// checkChained: the conflist the runtime uses runs the primary's plugins,
// then metabind, with the annotations capability.
func checkChained(t *testing.T, n *kubenode.Node, primary []byte) {
	t.Helper()
	if !chainedLast(n) {
		t.Fatalf("metabind is not chained last:\n%s", readString(t, filepath.Join(n.CNIConfDir, "10-calico.conflist")))
	}
	list, err := libcni.ConfListFromFile(filepath.Join(n.CNIConfDir, "10-calico.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	orig, err := libcni.ConfListFromBytes(primary)
	if err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "0.3.1" || list.Name != orig.Name || len(list.Plugins) != len(orig.Plugins)+1 {
		t.Errorf("chained conflist: version %s, name %s, %d plugins; want the primary's (0.3.1, %s, %d) plus metabind",
			list.CNIVersion, list.Name, len(list.Plugins), orig.Name, len(orig.Plugins))
	}
	if !bytes.Contains(list.Plugins[len(list.Plugins)-1].Bytes, []byte(`"io.kubernetes.cri.pod-annotations":true`)) {
		t.Errorf("metabind's entry has no pod-annotations capability: %s", list.Plugins[len(list.Plugins)-1].Bytes)
	}
}

func chainedLast(n *kubenode.Node) bool {
	list, err := libcni.ConfListFromFile(filepath.Join(n.CNIConfDir, "10-calico.conflist"))
	return err == nil && len(list.Plugins) > 0 && list.Plugins[len(list.Plugins)-1].Network.Type == "metabind"
}

// checkBound: the store binds the pod's IP to the pod as the API knows it.
func checkBound(t *testing.T, stateDir string, pod *corev1.Pod) {
	t.Helper()
	bindings, err := store.ReadAll(stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bindings {
		if b.IP.String() == pod.Status.PodIP {
			if b.Namespace != pod.Namespace || b.Pod != pod.Name || b.PodUID != string(pod.UID) {
				t.Fatalf("binding of %s: %s/%s uid %s; want %s/%s uid %s", b.IP, b.Namespace, b.Pod, b.PodUID, pod.Namespace, pod.Name, pod.UID)
			}
			return
		}
	}
	t.Fatalf("no binding for %s/%s's IP %s: %v", pod.Namespace, pod.Name, pod.Status.PodIP, bindings)
}

// execClient runs a client binary of the workload image in the pod's
// container and decodes its JSON answer.
func execClient(t *testing.T, n *kubenode.Node, pod *corev1.Pod, answer any, argv ...string) {
	t.Helper()
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	stdout, stderr, err := n.Exec(id, argv...)
	if err != nil {
		t.Fatalf("%s in %s: %v\nstdout: %s\nstderr: %s", argv[0], pod.Name, err, stdout, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), answer); err != nil {
		t.Fatalf("%s in %s printed %q: %v", argv[0], pod.Name, stdout, err)
	}
}

// checkWorkloadIdentity runs every client in the pod and checks each got
// the credentials of the pod's own ServiceAccount, as the stand-ins issued
// them.
func checkWorkloadIdentity(t *testing.T, n *kubenode.Node, pod *corev1.Pod, fg *fakegoogle.Fake, fa *fakeaws.Fake) {
	t.Helper()
	want := realNodeIdentities[pod.Spec.ServiceAccountName]

	var g sdkAnswer
	execClient(t, n, pod, &g, "/podclient", "-audience", grantedAudience)
	info, ok := fg.TokenInfo(g.AccessToken)
	if g.Email != want.gsa || !ok || info.ServiceAccount != want.gsa {
		t.Errorf("%s, Go clients: email %q, access token of %q (issued by Google's stand-in: %t); want %s", pod.Name, g.Email, info.ServiceAccount, ok, want.gsa)
	}
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal(fg.IDTokenKeys(), &keys); err != nil {
		t.Fatal(err)
	}
	if claims, err := verifyFrom(g.IDToken, keys, "https://accounts.google.com", grantedAudience); err != nil || claims.Email != want.gsa {
		t.Errorf("%s, ID token: %v (email %v); want Google-signed for %s", pod.Name, err, claims, want.gsa)
	}

	var b struct {
		Resolved []string `json:"resolved"`
		OnGCE    bool     `json:"onGCE"`
		Email    string   `json:"email"`
		IDToken  string   `json:"idToken"`
		Env      []string `json:"env"`
	}
	execClient(t, n, pod, &b, "/podclient", "-by-name", "-audience", grantedAudience)
	if !slices.Equal(b.Resolved, []string{metadataIP}) || !b.OnGCE || b.Email != want.gsa || len(b.Env) != 0 {
		t.Errorf("%s, by name: resolved %v, OnGCE %t, email %q, metadata overrides in env %v; want [%s], true, %s, none",
			pod.Name, b.Resolved, b.OnGCE, b.Email, b.Env, metadataIP, want.gsa)
	}
	if claims, err := verifyFrom(b.IDToken, keys, "https://accounts.google.com", grantedAudience); err != nil || claims.Email != want.gsa {
		t.Errorf("%s, ID token by name: %v; want Google-signed for %s", pod.Name, err, want.gsa)
	}

	var a awsAnswer
	execClient(t, n, pod, &a, "/awsclient", "-s3", "https://"+net.JoinHostPort(n.IP.String(), strconv.Itoa(fa.Port)))
	role, ok := fa.KeyInfo(a.AccessKeyID)
	if !ok || role != want.role || !a.Listed {
		t.Errorf("%s, aws-sdk-go-v2: key of role %q (issued by STS's stand-in: %t), S3 accepted %t; want %s", pod.Name, role, ok, a.Listed, want.role)
	}
}

// failClosedWatch asks for a pod's email over and over from its netns
// while the agent is away.
type failClosedWatch struct {
	mu   sync.Mutex
	r    gapResult
	stop chan struct{}
	done chan struct{}
}

type gapResult struct {
	served, failed int
	// servedAgain counts answers after the first failure.
	servedAgain int
	wrong       []string
	firstFail   time.Duration
	lastFail    time.Duration
}

func (r gapResult) String() string {
	return fmt.Sprintf("%d answered with its own identity, %d failed (from %v to %v after the watch began), none as anyone else",
		r.served, r.failed, r.firstFail.Round(time.Millisecond), r.lastFail.Round(time.Millisecond))
}

// watchFailClosed starts asking; every answer must be want (the pod's own)
// or a failure: never another email, never the node's metadata server.
func watchFailClosed(t *testing.T, n *kubenode.Node, pod *corev1.Pod, want string) *failClosedWatch {
	t.Helper()
	podNS, err := ns.GetNS(n.PodNetNS(t, pod.Namespace, pod.Name))
	if err != nil {
		t.Fatal(err)
	}
	w := &failClosedWatch{stop: make(chan struct{}), done: make(chan struct{})}
	client := nsHTTPClient(podNS, nil)
	client.Timeout = time.Second
	start := time.Now()
	go func() {
		defer close(w.done)
		defer podNS.Close()
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			req, _ := newMetadataRequest("http://" + metadataIP + "/computeMetadata/v1/instance/service-accounts/default/email")
			resp, err := client.Do(req)
			body, code := "", 0
			if err == nil {
				body, code = readAll(resp), resp.StatusCode
			}
			w.mu.Lock()
			switch {
			case code == 200 && body == want:
				w.r.served++
				if w.r.failed > 0 {
					w.r.servedAgain++
				}
			default:
				if code == 200 {
					w.r.wrong = append(w.r.wrong, body)
				}
				if w.r.failed == 0 {
					w.r.firstFail = time.Since(start)
				}
				w.r.failed++
				w.r.lastFail = time.Since(start)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// waitServed waits until the pod has been answered again after failures
// (the new agent serves), then stops the watch and checks that no answer
// named anyone else.
func (w *failClosedWatch) waitServed(t *testing.T) gapResult {
	t.Helper()
	defer func() { close(w.stop); <-w.done }()
	var r gapResult
	waitFor(t, "the pod answered again after the agent's restart", time.Minute, func() (bool, string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		r = w.r
		return r.servedAgain >= 5, r.String()
	})
	if len(r.wrong) > 0 {
		t.Fatalf("while the agent was away the pod was answered as someone else: %q", r.wrong)
	}
	return r
}

func newMetadataRequest(url string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err == nil {
		req.Header.Set("Metadata-Flavor", "Google")
	}
	return req, err
}

func sameBindings(a, b []store.Binding) bool {
	key := func(bs []store.Binding) []string {
		var out []string
		for _, x := range bs {
			out = append(out, x.IP.String()+"="+x.PodUID)
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}

// ownedOnNode lists the per-pod redirect pieces in the node's netns, of
// either backend (the default, auto, is nftables where the kernel has it).
func ownedOnNode(t *testing.T, netnsPath string) []redirect.Owned {
	t.Helper()
	var out []redirect.Owned
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		for _, b := range []string{redirect.BackendIPTables, redirect.BackendNFTables} {
			mk, _ := redirect.MakerFor(b)
			rd, err := mk(metadataAddrPort, responderAddrPort)
			if err != nil {
				return err
			}
			owned, err := rd.ListOwned()
			if err != nil {
				return fmt.Errorf("%s: %w", b, err)
			}
			out = append(out, owned...)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list the redirect in the node netns: %v", err)
	}
	return out
}

func readString(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds or within runs out.
func waitFor(t *testing.T, what string, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (%s)", what, within, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dumpAgentLogs prints the tails of the agent containers' logs.
func dumpAgentLogs(t *testing.T, n *kubenode.Node) {
	ids := strings.Fields(n.Crictl(t, "ps", "-a", "-q", "--label", "io.kubernetes.pod.namespace=metabind-system"))
	for _, id := range ids {
		t.Logf("agent container %s:\n%s", id, n.ContainerLogs(id, 60))
	}
}
