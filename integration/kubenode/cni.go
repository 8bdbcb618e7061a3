package kubenode

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// prepareCNI makes CNIBinDir with copies of the reference plugins and an
// empty CNIConfDir.
func (n *Node) prepareCNI() error {
	for _, d := range []string{n.CNIBinDir, n.CNIConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, p := range cniPlugins {
		if err := copyFile(filepath.Join(n.tools.cniPluginsDir, p), filepath.Join(n.CNIBinDir, p), 0o755); err != nil {
			return fmt.Errorf("CNI plugin %s: %w", p, err)
		}
	}
	return nil
}

// WriteCNIConfig writes a CNI config named file into CNIConfDir, through a
// temporary file renamed into place (containerd watches the directory and
// must not read half a file).
func (n *Node) WriteCNIConfig(t testing.TB, file string, conf []byte) {
	t.Helper()
	tmp := filepath.Join(n.CNIConfDir, "."+file+".tmp")
	if err := os.WriteFile(tmp, conf, 0o644); err != nil {
		t.Fatalf("kubenode: %v", err)
	}
	if err := os.Rename(tmp, filepath.Join(n.CNIConfDir, file)); err != nil {
		t.Fatalf("kubenode: %v", err)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// PodNetworkConflist is a pod network the way Calico ships its conflist
// (CNI 0.3.1, network "k8s-pod-network"), here ptp with host-local
// addresses from subnet, its state under Dir (not the host's
// /var/lib/cni), and a default route; for WriteCNIConfig, under a name like
// Calico's "10-calico.conflist".
func (n *Node) PodNetworkConflist(subnet netip.Prefix) []byte {
	conf := map[string]any{
		"cniVersion": "0.3.1",
		"name":       "k8s-pod-network",
		"plugins": []any{map[string]any{
			"type": "ptp",
			"ipam": map[string]any{
				"type":    "host-local",
				"subnet":  subnet.String(),
				"routes":  []any{map[string]string{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(n.Dir, "ipam"),
			},
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		panic(err) // maps of strings
	}
	return b
}
