# meshid — run `make help` for the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

GO ?= go
# The Go release meshid is built and tested with is go.mod's toolchain line
# (go1.26.11: it has the fixes for the standard library vulnerabilities
# govulncheck reports in go1.26.8). The go command fetches it from the
# module proxy once (76 MB); the machine's own Go only starts it.
export GOTOOLCHAIN ?= $(shell sed -n 's/^toolchain //p' go.mod)
BIN := bin
CLUSTER_DIR ?= $(CURDIR)/.cluster
PROTO := api/identity/v1/identity.proto
CMDS := meshid meshid-ca meshid-init meshid-proxy meshid-webhook
# VERSION is what --version prints and the tag meshid install gives the
# images; go build adds the commit itself (-buildvcs, overriding a GOFLAGS
# that turns it off).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/meshid/meshid/cmd/internal/cli.version=$(VERSION)

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build the binaries into bin/
	@mkdir -p $(BIN)
	$(GO) build -buildvcs=auto -ldflags "$(LDFLAGS)" -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

.PHONY: test
test: controlplane ## run every test (unit and e2e on a real API server and step-ca), with -race
	MESHID_CONTROLPLANE_BIN="$$(test/controlplane/install.sh | tail -n1)" \
	MESHID_STEPCA_BIN="$$(test/stepca/install.sh | tail -n1)" \
	$(GO) test -race -count=1 ./...

.PHONY: unit
unit: ## run the unit tests only (no control plane)
	$(GO) test -race -count=1 -short ./...

.PHONY: controlplane
controlplane: ## build etcd, kube-apiserver, kube-controller-manager, kubectl once (cached by version)
	@test/controlplane/install.sh >/dev/null

.PHONY: cluster
cluster: controlplane ## start a local control plane in the background; prints the kubeconfig path last
	@$(GO) run ./test/cmd/cluster up --dir "$(CLUSTER_DIR)" --bin "$$(test/controlplane/install.sh 2>/dev/null | tail -n1)"

.PHONY: cluster-down
cluster-down: ## stop the control plane that `make cluster` started
	@$(GO) run ./test/cmd/cluster down --dir "$(CLUSTER_DIR)"

.PHONY: demo
demo: controlplane build ## the Quick start demo: control plane and CA, certify, mesh traffic, check, verify, anchor rotation
	@test/demo.sh

.PHONY: lint
lint: ## gofmt, go vet, staticcheck, govulncheck (offline database, test/vuln)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	test/vuln/run.sh

.PHONY: fmt
fmt: ## format the Go code
	gofmt -w $$(git ls-files '*.go')

.PHONY: generate
generate: ## regenerate the gRPC code from api/identity/v1/identity.proto, and the AuthorizationPolicy, ExternalWorkload and FederatedTrustDomain deep copies and CRDs
	$(GO) tool controller-gen object paths=./api/policy/... crd:crdVersions=v1 paths=./api/policy/... output:crd:dir=api/policy/crd
	$(GO) tool controller-gen object paths=./api/workload/... crd:crdVersions=v1 paths=./api/workload/... output:crd:dir=api/workload/crd
	$(GO) tool controller-gen object paths=./api/federation/... crd:crdVersions=v1 paths=./api/federation/... output:crd:dir=api/federation/crd
	protoc --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
	  --plugin=protoc-gen-go-grpc="$$($(GO) tool -n protoc-gen-go-grpc)" \
	  --go_out=. --go_opt=module=github.com/meshid/meshid \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/meshid/meshid \
	  $(PROTO)

.PHONY: generate-check
generate-check: generate ## fail if the generated code differs from what is committed
	@if [[ -n "$$(git status --porcelain -- api)" ]]; then git status --short -- api; echo "generated code differs from the commit: run 'make generate' and commit it"; exit 1; fi

BENCH_FLAGS ?=
.PHONY: bench
bench: controlplane build ## measure issuance and the data plane against the raw limit, SPIRE and nginx; writes docs/benchmarks.md
	@command -v nginx >/dev/null || { echo "make bench needs nginx with its stream module: apt-get install nginx-core libnginx-mod-stream"; exit 1; }
	@command -v taskset >/dev/null || { echo "make bench needs taskset: apt-get install util-linux"; exit 1; }
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) build -o $(BIN)/meshid-bench ./test/cmd/bench
	$(BIN)/meshid-bench --bin $(BIN) --spire "$$(test/bench/spire-install.sh | tail -n1)" --nginx "$$(command -v nginx)" $(BENCH_FLAGS)

SCALE_FLAGS ?=
.PHONY: scale
scale: controlplane build ## simulate a fleet of proxies (default 1,000; SCALE_FLAGS="--proxies 10000") against 4 meshid-ca replicas; prints Markdown
	$(GO) build -o $(BIN)/meshid-scale ./test/cmd/scale
	$(BIN)/meshid-scale --bin $(BIN) $(SCALE_FLAGS)

SOAK ?= 30m
.PHONY: soak
soak: controlplane ## run the soak test for SOAK (default 30m): renewal storm and traffic, no growth, no failure
	MESHID_CONTROLPLANE_BIN="$$(test/controlplane/install.sh | tail -n1)" MESHID_SOAK_DURATION=$(SOAK) \
	  $(GO) test -tags soak -count=1 -run '^TestSoak$$' -timeout 24h -v ./test/e2e/

FUZZTIME ?= 30s
.PHONY: fuzz
fuzz: ## run every fuzzer for FUZZTIME each (default 30s); crashers land in testdata/fuzz
	@for target in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for fn in $$(grep -h '^func Fuzz' $$target/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$target $$fn"; $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$target || exit 1; \
	  done; \
	done

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN)
