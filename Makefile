# metabind: make build | make test | make demo | make bench
GO      ?= go
BIN     := $(CURDIR)/bin
CNI_BIN := $(CURDIR)/.cache/cni/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# SKEW_FROM: the previous release, whose binaries the skew test runs against these
SKEW_FROM ?= 0bd6b06
SKEW_BIN  := $(CURDIR)/.cache/skew/$(SKEW_FROM)
IMAGE     ?= ghcr.io/metabind/metabind:$(VERSION)
PLATFORMS ?= linux/amd64,linux/arm64

.PHONY: build testhooks deps kube-deps skew-deps test gotest gotest-iptables fuzz demo bench image clean

## build: the three binaries into bin/, static (as in the image: the same compilation serves both)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN)/ ./cmd/...

## testhooks: bin/test/metabind, the plugin with the crash tests' hook (never ship it)
testhooks:
	$(GO) build -tags metabind_testhooks -o $(BIN)/test/metabind ./cmd/metabind

## deps: iptables/iproute2/containerd (apt), the pinned reference CNI plugins, cnitool, crictl
deps:
	scripts/install-deps.sh

## kube-deps: deps, and etcd (apt), kube-apiserver, -controller-manager, -scheduler, kubelet (tools/kube) and CoreDNS into .cache/kube
kube-deps:
	scripts/install-deps.sh --kube

## skew-deps: the three binaries of release SKEW_FROM into .cache/skew/SKEW_FROM (integration/skew_test.go)
skew-deps:
	@if [ -x $(SKEW_BIN)/metabind ] && [ -x $(SKEW_BIN)/metabind-responder ] && [ -x $(SKEW_BIN)/metabindctl ]; then exit 0; fi; \
	if ! git -C $(CURDIR) cat-file -e '$(SKEW_FROM)^{commit}' 2>/dev/null; then \
		echo "skew-deps: commit $(SKEW_FROM) is not in this clone (shallow?): fetch full history (git fetch --unshallow) or set SKEW_FROM" >&2; exit 1; \
	fi; \
	src=$$(mktemp -d) && trap 'rm -rf "$$src"' EXIT && \
	git -C $(CURDIR) archive $(SKEW_FROM) | tar -x -C "$$src" && \
	cd "$$src" && $(GO) build -ldflags "-X main.version=$(SKEW_FROM)" -o $(SKEW_BIN)/ ./cmd/...

## test: unit, integration and attack tests (root), then every fuzz target briefly
test: gotest gotest-iptables fuzz

gotest: kube-deps build testhooks skew-deps image
	METABIND_BIN_DIR=$(BIN) METABIND_TESTHOOK_BIN_DIR=$(BIN)/test CNI_PLUGINS_DIR=$(CNI_BIN) $(GO) test -count=1 -timeout 30m ./...

## gotest-iptables: the suites where the backend matters (attacks, crashes, interleavings, GC, concurrency,
## firewall repair) again with the iptables backend; gotest runs everything with the default, auto (nftables here)
BACKEND_TESTS := TestAttack|TestCrashAtEveryStep|TestIPTakeover|TestGC|TestConcurrentAddDel|TestMetabindctlGC|TestDelRemovesRulesTheStoreLostTrackOf|TestEndToEnd|TestCheckNoticesAMissingRule|TestAddOnBusyStoreSaysTryAgainLater|TestContainerCredentialsAddress|TestFirewallDamageIsRepairedWithoutPodEvents|TestAddRepairsADamagedBase|TestRepairLoopLeavesAWholeNodeAlone|TestDualStack|TestAdminAddress|TestStartupTaintRemovedOnceReady|TestDoctor
gotest-iptables: build testhooks
	METABIND_TEST_BACKEND=iptables METABIND_RACE_CYCLES=300 METABIND_BIN_DIR=$(BIN) METABIND_TESTHOOK_BIN_DIR=$(BIN)/test \
	  CNI_PLUGINS_DIR=$(CNI_BIN) $(GO) test -count=1 -timeout 20m -run '$(BACKEND_TESTS)' ./integration/

## fuzz: every fuzz target for FUZZTIME (default 10s) each
fuzz:
	scripts/fuzz.sh

## demo: two pods on a throwaway node netns get their own identities (root)
demo: deps build
	CNI_PLUGINS_DIR=$(CNI_BIN) scripts/demo.sh

## bench: the tables of docs/PERFORMANCE.md (root)
bench: deps build
	CNI_PLUGINS_DIR=$(CNI_BIN) scripts/bench.sh

## image: bin/image/metabind.oci.tar, the DaemonSet's image $(IMAGE) for $(PLATFORMS), no Docker daemon needed
image:
	@set -e; for platform in $$(echo $(PLATFORMS) | tr , ' '); do \
	  arch=$${platform#linux/}; arch=$${arch%%/*}; \
	  echo "image: binaries for linux/$$arch into $(BIN)/image/$$arch"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" \
	    -o $(BIN)/image/$$arch/ ./cmd/...; \
	  scripts/image-rootfs.sh $$arch $(CURDIR)/.cache/image/rootfs-$$arch; \
	done
	$(GO) run ./tools/mkimage -name $(IMAGE) -platform $(PLATFORMS) -out $(BIN)/image/metabind.oci.tar \
	  -rootfs '$(CURDIR)/.cache/image/rootfs-{arch}' -bin '$(BIN)/image/{arch}'

clean:
	rm -rf $(BIN) .cache
