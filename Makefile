# metabind: make build | make test | make demo | make bench
GO      ?= go
BIN     := $(CURDIR)/bin
CNI_BIN := $(CURDIR)/.cache/cni/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: build testhooks deps kube-deps test gotest fuzz demo bench clean

## build: the three binaries into bin/
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/ ./cmd/...

## testhooks: bin/test/metabind, the plugin with the crash tests' hook (never ship it)
testhooks:
	$(GO) build -tags metabind_testhooks -o $(BIN)/test/metabind ./cmd/metabind

## deps: iptables/iproute2/containerd (apt), the pinned reference CNI plugins, cnitool, crictl
deps:
	scripts/install-deps.sh

## kube-deps: deps, and etcd (apt), kube-apiserver, -controller-manager, -scheduler, kubelet (tools/kube) and CoreDNS into .cache/kube
kube-deps:
	scripts/install-deps.sh --kube

## test: unit, integration and attack tests (root), then every fuzz target briefly
test: gotest fuzz

gotest: kube-deps build testhooks
	METABIND_BIN_DIR=$(BIN) METABIND_TESTHOOK_BIN_DIR=$(BIN)/test CNI_PLUGINS_DIR=$(CNI_BIN) $(GO) test -count=1 -timeout 30m ./...

## fuzz: every fuzz target for FUZZTIME (default 10s) each
fuzz:
	scripts/fuzz.sh

## demo: two pods on a throwaway node netns get their own identities (root)
demo: deps build
	CNI_PLUGINS_DIR=$(CNI_BIN) scripts/demo.sh

## bench: the tables of docs/PERFORMANCE.md (root)
bench: deps build
	CNI_PLUGINS_DIR=$(CNI_BIN) scripts/bench.sh

clean:
	rm -rf $(BIN) .cache
