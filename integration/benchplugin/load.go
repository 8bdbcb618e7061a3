package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

const loadConfig = `
project: {id: bench, numericId: "1"}
node: {name: bench-node, zone: bench-zone}
issuer: {url: https://metabind.bench/node}
identities:
  - namespace: bench
    serviceAccount: bench
limits: {requestsPerSecond: 10000, burst: 100000}
`

// writerUnderLoad measures ADD and DEL of a metabind chain idle and while
// the responder, on the chain's node and state, serves a bound pod's token
// requests as fast as 16 keep-alive clients can send them: the plugin must
// never wait on the responder.
func writerUnderLoad(cni *libcni.CNIConfig, mb *chainRun, pods int, binDir, dir string) error {
	node, list := mb.node.ns, mb.list
	cfg := filepath.Join(dir, "responder.yaml")
	if err := os.WriteFile(cfg, []byte(loadConfig), 0o600); err != nil {
		return err
	}
	resp := exec.Command("nsenter", "--net="+node.Path(), "--", filepath.Join(binDir, "metabind-responder"),
		"--state-dir", mb.node.stateDir, "--config", cfg, "--log-level", "error")
	resp.Stderr = os.Stderr
	if err := resp.Start(); err != nil {
		return err
	}
	defer func() { resp.Process.Kill(); resp.Wait() }()

	// The load comes from a bound pod, through the metadata address.
	client, cleanup, err := loadPod(cni, node, list)
	if err != nil {
		return err
	}
	defer cleanup()
	url := "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token"
	deadline := time.Now().Add(10 * time.Second)
	for {
		if status, err := fetch(client, url); err == nil && status == 200 {
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("responder not serving the load pod: %d %v", status, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := firstToken(cni, node, list, pods); err != nil {
		return err
	}

	idle := &chainRun{name: "idle"}
	busy := &chainRun{name: "responder at full load"}
	var served atomic.Int64
	for _, run := range []*chainRun{idle, busy} {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		if run == busy {
			for i := 0; i < 16; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if status, err := fetch(client, url); err == nil && status == 200 {
							served.Add(1)
						}
					}
				}()
			}
		}
		start := time.Now()
		for i := 0; i < pods; i++ {
			a, d, err := addDel(cni, node, list, 1000+i)
			if err != nil {
				close(stop)
				return err
			}
			run.add = append(run.add, a)
			run.del = append(run.del, d)
		}
		close(stop)
		wg.Wait()
		if run == busy {
			fmt.Printf("\n4. Writer under read load: ADD/DEL of the chain %s, %d pods each; load: %.0f token requests/s\n\n",
				mb.name, pods, float64(served.Load())/time.Since(start).Seconds())
		}
	}
	fmt.Printf("%-26s %10s %10s %10s %10s\n", "responder", "ADD p50", "ADD p99", "DEL p50", "DEL p99")
	for _, r := range []*chainRun{idle, busy} {
		fmt.Printf("%-26s %10s %10s %10s %10s\n", r.name, ms(pct(r.add, 50)), ms(pct(r.add, 99)), ms(pct(r.del, 50)), ms(pct(r.del, 99)))
	}
	fmt.Printf("%-26s %10.2fx %9.2fx %10.2fx %9.2fx\n", "loaded / idle",
		ratio(busy.add, idle.add, 50), ratio(busy.add, idle.add, 99), ratio(busy.del, idle.del, 50), ratio(busy.del, idle.del, 99))
	return nil
}

func ratio(a, b []time.Duration, p int) float64 {
	return float64(pct(a, p)) / float64(pct(b, p))
}

// loadPod creates a bound pod and a keep-alive client whose connections
// are made inside its netns.
func loadPod(cni *libcni.CNIConfig, node ns.NetNS, list *libcni.NetworkConfigList) (*http.Client, func(), error) {
	podNS, err := testutils.NewNS()
	if err != nil {
		return nil, nil, err
	}
	rt := &libcni.RuntimeConf{ContainerID: "bench-load", NetNS: podNS.Path(), IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", "load"}, {"K8S_POD_UID", "uid-load"},
	}}
	if err := node.Do(func(ns.NetNS) error {
		_, err := cni.AddNetworkList(context.Background(), list, rt)
		return err
	}); err != nil {
		return nil, nil, err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dialIn(podNS), MaxIdleConnsPerHost: 64}}
	cleanup := func() {
		node.Do(func(ns.NetNS) error { return cni.DelNetworkList(context.Background(), list, rt) })
		podNS.Close() // first: an open handle keeps the mount busy
		unmount(podNS)
	}
	return client, cleanup, nil
}

func fetch(c *http.Client, url string) (int, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// firstToken measures, for new pods, the time from ADD returning to the
// first token obtained from inside the pod, with exactly one request and no
// retry: a first request that fails counts as a failure.
func firstToken(cni *libcni.CNIConfig, node ns.NetNS, list *libcni.NetworkConfigList, pods int) error {
	var took []time.Duration
	failed := 0
	for i := 0; i < pods; i++ {
		podNS, err := testutils.NewNS()
		if err != nil {
			return err
		}
		rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("first-%d", i), NetNS: podNS.Path(), IfName: "eth0", Args: [][2]string{
			{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", fmt.Sprintf("first-%d", i)}, {"K8S_POD_UID", fmt.Sprintf("uid-first-%d", i)},
		}}
		err = node.Do(func(ns.NetNS) error {
			_, err := cni.AddNetworkList(context.Background(), list, rt)
			return err
		})
		if err != nil {
			return err
		}
		added := time.Now()
		client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dialIn(podNS)}}
		if status, err := fetch(client, "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token"); err == nil && status == 200 {
			took = append(took, time.Since(added))
		} else {
			failed++
		}
		node.Do(func(ns.NetNS) error { return cni.DelNetworkList(context.Background(), list, rt) })
		podNS.Close() // first: an open handle keeps the mount busy
		unmount(podNS)
	}
	fmt.Printf("\n3. First token: from ADD returning to the first token from inside the new pod, one request, no retry, %d pods\n\n", pods)
	if len(took) == 0 {
		fmt.Printf("first requests failed: %d of %d\n", failed, pods)
		return nil
	}
	fmt.Printf("%-28s %10s %10s %10s\n", "", "p50", "p99", "failed")
	fmt.Printf("%-28s %10s %10s %10d\n", "ADD returned -> token", ms(pct(took, 50)), ms(pct(took, 99)), failed)
	return nil
}

// dialIn makes connections from inside a pod's netns (the socket is
// created there).
func dialIn(podNS ns.NetNS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = podNS.Do(func(ns.NetNS) error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
