//go:build tools

// Package kube pins the Kubernetes control-plane binaries the integration
// tests run (kube-apiserver, kube-controller-manager): the module requires
// k8s.io/kubernetes and maps every staging module to its release, as
// k8s.io/kubernetes's own go.mod maps them to ./staging.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
