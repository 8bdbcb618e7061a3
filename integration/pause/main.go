// Command pause is the one process of a pod sandbox in the containerd
// end-to-end test (integration/containerd_test.go): it holds the pod's
// namespaces until it is told to stop and, as PID 1 must, reaps orphans. The
// test builds it static (CGO_ENABLED=0) into a local OCI image, since no
// registry is reachable to pull the real pause image from.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
