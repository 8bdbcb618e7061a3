//go:build tools

// Package kube pins the Kubernetes binaries the integration tests run
// (kube-apiserver, kube-controller-manager, kube-scheduler and kubelet): the
// module requires k8s.io/kubernetes and maps every staging module to its
// release, as k8s.io/kubernetes's own go.mod maps them to ./staging.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
