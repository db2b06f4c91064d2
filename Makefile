# ALUMIINI — make targets (design.md §5). `make test` is what CI runs: it
# builds or reuses everything it needs (the control plane binaries are cached
# under $(ALUMIINI_CACHE), keyed by version).

SHELL := /usr/bin/env bash
export GOTOOLCHAIN := local

CONTROLLER_TOOLS_VERSION ?= v0.23.0
KIND_VERSION ?= v0.33.0
CONTROLLER_GEN := go run sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
KIND := go run sigs.k8s.io/kind@$(KIND_VERSION)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin/alumiini
IMAGE ?= alumiini:$(VERSION)

# GEN_OUT, when set, sends generated files there instead of into the tree
# (the staleness test compares the two).
GEN_OUT ?=
FUZZTIME ?= 30s
TEST_FLAGS ?= -count=1 -timeout=30m

PREFIX ?= $(shell go env GOPATH)

.PHONY: all build install-cli test race race-short soak unit controlplane fuzz bench bench-summary generate lint run devcluster deploy kind-up clean

all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/alumiini

# install-cli: the kubectl plugin into $(PREFIX)/bin (on PATH, kubectl
# finds it: `kubectl alumiini ...`).
install-cli:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(PREFIX)/bin/kubectl-alumiini ./cmd/kubectl-alumiini

controlplane:
	@test/controlplane/build.sh >/dev/null

# test: vet, every package's tests against the real control plane and git
# servers, then a short run of each fuzz target.
test: controlplane
	go vet ./...
	KUBEBUILDER_ASSETS="$$(test/controlplane/build.sh)" go test $(TEST_FLAGS) ./...
	$(MAKE) --no-print-directory race-short
	$(MAKE) --no-print-directory fuzz FUZZTIME=3s

# RACE_PKGS: the packages whose code runs concurrently (actors, their
# pipeline, the shared git sources, the cache, the webhook server, the
# applier). actors/cluster is left out: the race detector reports races
# inside protoactor's remote and gossip code there (docs/cluster.md).
# RACE_E2E: the end-to-end tests run against a controller built
# with -race (lifecycle, webhooks, leader election, shutdown).
RACE_PKGS := ./actors/ ./actors/pipeline/ ./actors/cdevents/ ./cache/... ./webhook/... ./gitsrc/... ./k8s/ ./cmd/...
RACE_E2E := TestSyncLifecycle|TestWebhookSyncsWithoutWaitingForThePoll|TestLeaderElection|TestLeaderReleasesTheLeaseOnSIGTERM|TestBinaryServesAndStopsCleanly|TestBlackholedGitHostHoldsNoSlot

# race-short: the race detector on RACE_PKGS and on RACE_E2E (part of make test).
race-short: controlplane
	go build -race -o bin/alumiini-race ./cmd/alumiini
	KUBEBUILDER_ASSETS="$$(test/controlplane/build.sh)" go test -race $(TEST_FLAGS) $(RACE_PKGS)
	KUBEBUILDER_ASSETS="$$(test/controlplane/build.sh)" ALUMIINI_TEST_BINARY=$(CURDIR)/bin/alumiini-race \
		go test $(TEST_FLAGS) -run '^($(RACE_E2E))$$' ./test/

# race: every test with the race detector, the end-to-end ones against a
# controller binary built with -race too (slow: not part of make test).
race: controlplane
	go build -race -o bin/alumiini-race ./cmd/alumiini
	KUBEBUILDER_ASSETS="$$(test/controlplane/build.sh)" ALUMIINI_TEST_BINARY=$(CURDIR)/bin/alumiini-race \
		go test -race $(TEST_FLAGS) ./...

# soak: the fault scenarios of docs/reliability.md in their long variants
# (ALUMIINI_SOAK=1), three times each. Not part of make test.
SOAK_TESTS := TestWebhookFlood|TestAPIFaultsLoseNothing|TestSIGKILLMidApplyLosesNothing|TestBlackholedGitHostHoldsNoSlot|TestRecoveryAfterAnAPIServerOutageTakesSeconds
soak: controlplane
	KUBEBUILDER_ASSETS="$$(test/controlplane/build.sh)" ALUMIINI_SOAK=1 \
		go test -count=3 -timeout=60m -run '^($(SOAK_TESTS))$$' ./test/

# unit: the tests that need no control plane.
unit:
	go test -count=1 -short ./crd/... ./webhook/...

# fuzz: each target for FUZZTIME. Go's fuzzer sometimes ends a clean run
# with "context deadline exceeded" on a loaded machine; a target that fails
# runs once more, which a real crash fails again (its input is then in
# testdata/fuzz and runs first).
fuzz:
	@set -e; for pkg in $$(go list ./...); do \
		for f in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || \
				{ echo "fuzz $$f: once more"; go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; }; \
		done; \
	done

# bench: the targets of design.md §6. Latency benchmarks run five times
# (compare medians); the scale harness (test/scale_test.go) once, up to
# BENCH_SCALE repositories, writing results.json and charts to BENCH_OUT;
# cluster mode's first sync of 3,000 × 20 with one and three members
# (test/clusterbench_test.go) once.
BENCH_SCALE ?= 1000
BENCH_OUT ?= $(CURDIR)/docs/bench
bench: controlplane
	KUBEBUILDER_ASSETS="$$(test/controlplane/build.sh)" go test -p 1 -run '^$$' -bench 'GitHubPush|WebhookToApplied|QuietPoll|PushedCommit|DriftCheck|LoadManifests' -benchmem -count=5 ./webhook/ ./gitsrc/ ./k8s/ ./k8s/clustertest/ ./test/
	KUBEBUILDER_ASSETS="$$(test/controlplane/build.sh)" BENCH_SCALE=$(BENCH_SCALE) ALUMIINI_BENCH_OUT=$(BENCH_OUT) \
		go test -run '^$$' -bench 'Scale|ClusterFirstSync' -benchtime 1x -timeout 3h ./test/

# bench-summary: medians over the recorded runs of the scale harness
# (BENCH_RUNS: those since session 21, whose test git server is today's),
# as a table and charts in docs/bench/summary/ for docs/benchmarks.md.
BENCH_RUNS ?= $(sort $(wildcard docs/bench/results-*-s2[1-9]*.json))
bench-summary:
	go run ./test/benchchart/summarize -out docs/bench/summary $(BENCH_RUNS)

generate:
	$(CONTROLLER_GEN) object:headerFile=crd/boilerplate.go.txt \
		$(if $(GEN_OUT),output:object:dir=$(GEN_OUT)) \
		crd:crdVersions=v1 output:crd:dir=$(or $(GEN_OUT),deploy/crd) paths=./crd/...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	go vet ./...

# run: the controller against the current cluster, or against a local control
# plane it starts (with an example GitRepository) when none answers.
# run: built, not `go run`, because go run exits 1 after a Ctrl-C even when
# the program stopped cleanly.
run: build devcluster
	bin/devcluster --bin $(BIN) $(RUN_ARGS)

devcluster:
	go build -o bin/devcluster ./test/devcluster

deploy:
	kubectl apply -k deploy/

kind-up: 
	$(KIND) create cluster --name alumiini
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .
	$(KIND) load docker-image $(IMAGE) --name alumiini
	cd deploy && kubectl kustomize . | sed 's|image: alumiini:latest|image: $(IMAGE)|' | kubectl apply -f -

clean:
	rm -rf bin
