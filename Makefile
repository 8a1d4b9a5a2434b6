# ledge: `make run` and `make test` set up everything they need through
# `make deps` (idempotent; see deploy/deps.sh).
SHELL   := /bin/bash
GO      ?= go
BIN     := bin/ledge
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Arguments for `make run`, e.g. make run ARGS="--dev --config deploy/examples/ledge.yaml"
ARGS    ?=
# Packages `make test` runs; the whole module by default.
PKGS    ?= ./...
# Benchmark time per benchmark for `make bench`.
BENCHTIME ?= 3s

# staticcheck at a pinned version (go run fetches it once through the
# module proxy and caches it).
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all deps build run test test-unit bench fuzz vet clean example-module

all: build

deps:
	@bash deploy/deps.sh

# The first build compiles the cgo bindings of OpenCV (gocv) and SQLite,
# minutes of C++; it says so, and how long it took.
COLD_PKGS := gocv.io/x/gocv github.com/mattn/go-sqlite3
build: deps
	@cold=$$($(GO) list -f '{{.Stale}}' $(COLD_PKGS) 2>/dev/null | grep -c true || true); \
	if [ "$$cold" != 0 ]; then \
	  echo "build: first build of $(BIN): compiling the Go bindings of OpenCV and SQLite (C++ and C) takes about 4-8 minutes on a 2-core machine; later builds take seconds" >&2; \
	fi; \
	start=$$(date +%s); \
	echo '$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/ledge'; \
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/ledge || exit 1; \
	if [ "$$cold" != 0 ]; then echo "build: $(BIN) built in $$(( $$(date +%s) - start )) s" >&2; fi

run: build
	./$(BIN) run $(ARGS)

vet:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Every package under the race detector (about 9 minutes on a 2-core machine).
test: deps vet
	$(GO) test -race -count=1 -timeout 25m $(PKGS)
ifeq ($(PKGS),./...)
	@# the patched mochi-mqtt copy is its own module (hub/third_party/mochi/LEDGE.md);
	@# its upstream tests time by sleeping, so they run without -race (the hub's
	@# tests above run its code under the race detector)
	cd hub/third_party/mochi && $(GO) test -count=1 ./...
endif

# The tests that need none of Docker, mosquitto, Chromium or ONNX Runtime
# (under -short, internal/testenv skips the others), in under a minute;
# appliance and cmd/ledge, which start whole ledges, are left to make test.
test-unit:
	$(GO) test -short -count=1 -timeout 5m $$($(GO) list ./... | grep -v -e '/appliance$$' -e '/cmd/ledge$$')

# Benchmarks print ratios against baselines measured in the same run.
# BENCH narrows them, e.g. make bench BENCH=Detect PKGS=./inference/
BENCH ?= .
bench: deps
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -count 1 -timeout 90m $(PKGS)

# Run every fuzz target for FUZZTIME each.
FUZZTIME ?= 15s
fuzz: deps
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# The example container module (FROM scratch) that
# deploy/examples/deployment-local.yaml runs.
example-module: deps
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o deploy/examples/module/module ./deploy/examples/module
	docker build -q -t ledge-example/module:1 deploy/examples/module
	rm -f deploy/examples/module/module

clean:
	rm -rf bin
